"""`s3encfs check`'s findings about long names (name scheme 2, store/longnames.py): every hashed
``gl-X`` component needs its side object ``gl-X.name`` holding the sealed name whose HMAC is X,
and every side object needs its name (an object ``gl-X``, a marker ``gl-X/`` or anything below
``gl-X/``). `check` lists the raw store (the mount's wrapper would hide side objects and stop the
walk at the first damaged one), learns every side object that authenticates — so the names that
need it decode — and reports:

- an orphaned side object (a crash between a side object's PUT and its name's, or a leftover);
- a side object that does not authenticate (tampered, or another name's record);
- a hashed name without a side object (its plaintext name is lost: a mount lists EIO).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from s3encfs.crypto.names import SIDE_SUFFIX, is_long

CONTROL = ".s3encfs/"


def is_side(prefix: str, key: str) -> bool:
    from s3encfs.store.longnames import is_side_key

    return key.startswith(prefix) and is_side_key(key[len(prefix):])


def _names(prefix: str, keys: list[str]) -> set[str]:
    """Every name (prefix-relative, no trailing slash) the keys use as an object, a marker or
    a directory on their path."""
    out: set[str] = set()
    for key in keys:
        rel = key[len(prefix):]
        if rel.startswith(CONTROL):
            continue
        parts = [p for p in rel.split("/") if p]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _learn(store: Any, codec: Any, side: str) -> str | None:
    """Fetch one side object and teach the codec its name; the problem, if any."""
    from s3encfs.store.errors import NotFound, StoreError

    hashed = side.rsplit("/", 1)[-1][: -len(SIDE_SUFFIX)]
    try:
        body, _info = store.get(side)
    except NotFound:
        return None  # deleted since the LIST
    except StoreError as exc:
        return f"side object unreadable: {exc}"
    if not codec.learn_long(hashed, body):
        return "long-name side object does not authenticate (tampered, or another name's)"
    return None


def long_name_problems(store: Any, codec: Any, prefix: str, keys: list[str], *,
                       jobs: int = 8) -> list[tuple[str, str]]:
    """Learn the side objects among `keys` (the whole listing) and report what is wrong."""
    if getattr(codec, "name", "") != "client" or not getattr(codec, "encrypts_names", False):
        return []
    sides = [k for k in keys if is_side(prefix, k)]
    names = _names(prefix, [k for k in keys if not is_side(prefix, k)])
    out: list[tuple[str, str]] = []
    with ThreadPoolExecutor(jobs) as pool:
        for side, problem in zip(sides, pool.map(lambda s: _learn(store, codec, s), sides),
                                 strict=True):
            if problem:
                out.append((side, problem))
    side_names = {s[len(prefix): -len(SIDE_SUFFIX)] for s in sides}
    for side in sides:
        if side[len(prefix): -len(SIDE_SUFFIX)] not in names:
            out.append((side, "orphaned long-name side object: no object or directory "
                              "of that name"))
    for name in sorted(names - side_names):
        if is_long(name.rsplit("/", 1)[-1]):
            out.append((prefix + name, "long name has no side object (its plaintext name is "
                                       "lost; a mount lists this directory as EIO)"))
    return out
