"""Key ids as an operator reads them: `name (id …)` wherever the local keyring names the key.

Objects, blobs and SSE-C metadata name keys by id (16 hex digits); an operator knows them by
name. `annotate` rewrites every id the local keyring knows into ``name (id abc…)`` in a message
(ids it does not know stay as they are: nothing is guessed). Only key *records* are read (names,
ids, kinds), never a secret, so no passphrase is asked for.

(keypick.py chooses the master key a bucket records, for `check` and `rekey` without --key.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_ID = re.compile(r"(?:\bid )?'?(?<![0-9A-Za-z])([0-9a-f]{16})(?![0-9A-Za-z])'?")
_dirs: list[str] = []  # keyring directories opened by this process (load_keys), besides the default


def remember(directory: str | Path) -> None:
    """Note a keyring directory in use (``--keyring``), so error lines name its keys too."""
    d = str(directory)
    if d not in _dirs:
        _dirs.append(d)


def known(directories: Iterable[str | Path | None] = ()) -> dict[str, str]:
    """{key id: name} over the given keyring directories, those remembered and the default one;
    {} where a keyring cannot be read (an error message must not fail for want of names)."""
    from s3encfs.keys.keyring import Keyring

    out: dict[str, str] = {}
    for d in [*directories, *_dirs, None]:
        try:
            infos = Keyring(d).list()
        except Exception:  # names are a courtesy; the message is what matters
            continue
        for info in infos:
            if info.key_id and info.name and info.name != info.key_id:
                out.setdefault(info.key_id, info.name)
    return out


def label(key_id: str, names: Mapping[str, str]) -> str:
    name = names.get(key_id)
    return f"{name} (id {key_id})" if name else f"id {key_id}"


def annotate(text: str, names: Mapping[str, str] | None = None) -> str:
    """`text` with each key id the keyring names shown as ``name (id …)``."""
    if not _ID.search(text):
        return text
    table = known() if names is None else names

    def sub(m: re.Match[str]) -> str:
        name = table.get(m.group(1))
        if m.start() and text[m.start() - 1] == "(" and m.group(0).startswith("id "):
            return m.group(0)  # already `name (id …)`
        return f"{name} (id {m.group(1)})" if name else m.group(0)

    return _ID.sub(sub, text)
