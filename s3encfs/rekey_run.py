"""The driver of `s3encfs rekey` (split out of rekey.py, issue 11): the resume state file, the
refusal while a local mount is active, LIST pages, the concurrent loop with progress, and the
refusal to add or remove the client-side layer.

Resumable: objects already at the target settings are skipped (the `one` of a Rekeyer decides),
and the last key of every fully finished LIST page is kept in a state file, so a killed run
restarts close to where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger("s3encfs.rekey")

CONTROL = ".s3encfs/"


@dataclass
class Outcome:
    changed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s3encfs"


def state_path(state_dir: Path, endpoint: str | None, bucket: str, prefix: str,
               target: str) -> Path:
    digest = hashlib.sha256(f"{endpoint or 'aws'}|{bucket}|{prefix}|{target}".encode())
    return state_dir / f"rekey-{bucket}-{digest.hexdigest()[:12]}.json"


# -- concurrent mounts --------------------------------------------------------------------------


def _overlaps(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def active_mounts(bucket: str, prefix: str) -> list[str]:
    """Mountpoints of running mounts on this machine whose source overlaps bucket/prefix."""
    from s3encfs.config import parse_source
    from s3encfs.control import ControlError, query, socket_dir

    out: list[str] = []
    try:
        names = sorted(os.listdir(socket_dir()))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".sock"):
            continue
        try:
            st = query(os.path.join(socket_dir(), name), "status", timeout=3)
            b, p = parse_source(str(st.get("source", "")))
        except (ControlError, OSError, ValueError):
            continue  # stale socket of a dead mount
        if b == bucket and _overlaps(p, prefix):
            out.append(str(st.get("mountpoint", name)))
    return out


def list_pages(store: Any, prefix: str, start_after: str | None,
               page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
    params: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix,
                              "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        params["StartAfter"] = start_after
    for page in store.client.get_paginator("list_objects_v2").paginate(**params):
        yield [(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", []) or []]


def _load_state(state_file: Path | None) -> dict[str, Any]:
    if state_file is not None and state_file.exists():
        try:
            state: dict[str, Any] = json.loads(state_file.read_text())
            return state
        except (OSError, ValueError):
            pass
    return {}


def _save_state(state_file: Path, state: dict[str, Any], last_key: str) -> None:
    """The last key of a finished page, written atomically (temporary file, rename)."""
    state.update(last_key=last_key, updated=time.time())
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_file)


def _work(rk: Any, item: tuple[str, int]) -> tuple[str, bool | None, str]:
    """One object: (key, changed — None when it failed, the error)."""
    from s3encfs.store.errors import StoreError

    try:
        return item[0], rk.one(*item), ""
    except (StoreError, ValueError) as exc:
        return item[0], None, str(exc)
    except Exception as exc:  # IntegrityError, MissingMasterKey, ...
        return item[0], None, f"{type(exc).__name__}: {exc}"


def run(rk: Any, state_file: Path | None, *, jobs: int = 8, stream: Any = None,
        limit: int | None = None, page_size: int = 1000) -> Outcome:
    """Process everything after the saved position; `limit` stops after that many objects
    (tests use it to simulate an interruption)."""
    from s3encfs.progress import progress

    state = _load_state(state_file)
    start_after = state.get("last_key")
    total = sum(len(p) for p in list_pages(rk.store, rk.prefix, start_after))
    out = Outcome()
    done = 0

    with progress(total, "rekey", stream=stream) as bar, ThreadPoolExecutor(jobs) as pool:
        for page in list_pages(rk.store, rk.prefix, start_after, page_size):
            if limit is not None:
                page = page[: max(0, limit - done)]
            for key, changed, err in pool.map(partial(_work, rk), page):
                if changed is None:
                    out.failed.append((key, err))
                    log.error("%s: %s", key, err)
                elif changed:
                    out.changed += 1
                else:
                    out.skipped += 1
                bar.advance()
            done += len(page)
            if page and not out.failed and state_file is not None and not rk.dry_run:
                _save_state(state_file, state, page[-1][0])
            if limit is not None and done >= limit:
                return out
    if state_file is not None and not out.failed and not rk.dry_run:
        state_file.unlink(missing_ok=True)  # finished: the next rekey starts from the top
    return out


def refuse_client_switch(store: Any, prefix: str, client: bool) -> None:
    """Rekey copies objects server-side; it can neither encrypt plain contents on the client
    nor decrypt client-encrypted ones. Say so before anything is written (a keycheck written
    into a plain prefix would make the next plain mount look encrypted)."""
    from s3encfs.mount import MountError
    from s3encfs.store.errors import NotFound

    try:
        store.head(f"{prefix}{CONTROL}keycheck")
        encrypted = True
    except NotFound:
        encrypted = False
    if client and not encrypted:
        page = next(list_pages(store, prefix, None, page_size=5), [])
        if [k for k, _ in page if not k[len(prefix):].startswith(CONTROL)]:
            raise MountError(
                f"s3://{store.bucket}/{prefix} holds plain (not client-encrypted) objects; "
                "rekey cannot encrypt contents on the client: mount a new prefix with "
                "--encryption client and copy the files in (rsync)")
    if not client and encrypted:
        raise MountError(
            f"s3://{store.bucket}/{prefix} is client-encrypted; rekey cannot decrypt it: to "
            "change only the server-side mode use --encryption client+<sse mode>, to decrypt "
            "copy the files out through a client-mode mount; to convert to S3 Encryption "
            "Client objects use --from client --encryption s3ec")
