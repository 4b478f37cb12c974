"""A partial rewrite whose base object another writer deleted or replaced (issue 15 item 5).

The upload of a partial rewrite takes its unchanged segments from the old object (GET or
UploadPartCopy with If-Match on its ETag).  Once another writer deleted (404) or replaced (412)
that object, those reads can never succeed again: retrying them kept `flush` waiting for ever,
and treating each 412 as a fresh conflict renamed the node `p.conflict-X.conflict-X…` until
ENAMETOOLONG.  Here the upload stops depending on the base:

* every base segment still local (block cache; dirty segments are in staging) is copied into
  staging, so the file goes up whole, from what we have;
* if every byte was local, it goes up under its own name (deleted: as a new object; replaced:
  the If-Match PUT fails and the usual conflict copy is made, once, from complete bytes);
* otherwise the bytes we lack are zeros in staging and the file goes up as a conflict copy; an
  error names the file and the missing ranges, and `status` counts it (`rebase_incomplete`).

A conflict copy's name derives from the original name once (`conflict_name`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import trio

from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.fs.uploader import SegmentSource
from s3encfs.store import errors as store_errors

if TYPE_CHECKING:
    from s3encfs.fs.conflicts import Conflicts
    from s3encfs.fs.nodes import Node, ObjectRef
    from s3encfs.fs.uploader import UploadJob

log = logging.getLogger("s3encfs.rebase")

_SUFFIX = re.compile(r"(\.conflict-[^/]*?-\d{8}-\d{6}(?:-\d+)?)+$")


def conflict_name(name: str, host: str, stamp: str, taken: object = ()) -> str:
    """`NAME.conflict-HOST-STAMP` for the original NAME (an existing conflict suffix is replaced,
    never stacked); `-2`, `-3`… when that name is `taken` (a container of names)."""
    orig = _SUFFIX.sub("", name) or name
    new = f"{orig}.conflict-{host}-{stamp}"
    n = 2
    while new in taken and new != name:  # type: ignore[operator]
        new = f"{orig}.conflict-{host}-{stamp}-{n}"
        n += 1
    return new


def missing_ranges(segs: list[int], seg_size: int, size: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covered by the (sorted) missing segments, merged."""
    out: list[tuple[int, int]] = []
    for i in segs:
        lo, hi = i * seg_size, min(size, (i + 1) * seg_size)
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


async def base_state(fs: Conflicts, node: Node) -> str:
    """'ok' (the base is still there, unchanged, or we cannot tell), 'deleted' or 'replaced'."""
    c = node.content
    if c is None or c.base is None:
        return "ok"
    base = c.base
    try:
        info = await fs.run(fs.store.head, base.key)
    except store_errors.NotFound:
        return "deleted"
    except Exception:  # an outage: nothing is known, the usual retry goes on
        return "ok"
    return "ok" if info.etag == base.etag else "replaced"


async def settle(fs: Conflicts, node: Node) -> bool:
    """After a failed upload: if the node's base object is gone or changed, detach the content
    from it (see the module docstring) and return True (the caller queues the upload again)."""
    state = await base_state(fs, node)
    if state == "ok":
        return False
    async with node.lock:
        c = node.content
        if c is None or c.base is None:
            return True
        base = c.base
        src = fs._source(node)
        src.local_only = True  # never again from S3: the object is gone or another one
        seg = fs.seg
        size = node.attrs.size
        lacking: list[int] = []
        try:
            await fs.run(_rebuild_locally, src, c.base_segs, c.dirty, c.staging,
                         seg.segment_size, lacking)
        finally:
            fs.dirty.sync(c)
        c.base, c.base_segs = None, 0
        if node.obj is not None and node.obj.key == base.key and state == "deleted":
            node.obj = None  # nothing is at the key now: the upload expects nothing there
        if not lacking:
            fs.persist(node)
    if lacking:
        ranges = missing_ranges(lacking, seg.segment_size, size)
        fs.stats["rebase_incomplete"] = fs.stats.get("rebase_incomplete", 0) + 1
        fs.stats["last_rebase_incomplete"] = f"{node.path}: {ranges}"
        log.error("%r: its base object was %s by another writer and %d byte range(s) of it were "
                  "not local: %s; our data is kept as a conflict copy with zeros there",
                  node.path, state, len(ranges), ", ".join(f"{a}-{b}" for a, b in ranges))
        await fs._keep_conflict_copy(node)
    else:
        log.warning("%r: its base object was %s by another writer; every byte was local, "
                    "the file goes up whole", node.path, state)
    await trio.lowlevel.checkpoint()
    return True


# -- replay (after a crash): the same rule for a journal row, which has no live node ----------
def _rebuild_locally(src: SegmentSource, base_segs: int, dirty: DirtySet, staging: StagingFile,
                     segment_size: int, lacking: list[int]) -> None:
    """Copy every base segment not yet dirty into staging from local bytes only (`src` is
    `local_only`); a segment that is not local is written as zeros and its number appended to
    `lacking`.  Worker thread.  Shared by the live rebase (`settle`) and replay's."""
    for i in range(base_segs):
        if i in dirty:
            continue
        try:
            data = src.plain(i)
        except (LookupError, store_errors.StoreError):
            lacking.append(i)
            data = bytes(segment_size)
        staging.write_segment(i, data)
        dirty.add(i)


async def _state_of(fs: Conflicts, base: ObjectRef) -> str:
    try:
        info = await fs.run(fs.store.head, base.key)
    except store_errors.NotFound:
        return "deleted"
    except Exception:  # an outage: nothing is known; the row stays for the next try
        return "ok"
    return "ok" if info.etag == base.etag else "replaced"


async def replay_upload(fs: Any, job: UploadJob, token: str, tokens: tuple[str, ...],
                        path: str) -> ObjectRef:
    """Replay's upload of a journal row.  When it fails and the row's base object was deleted
    or replaced meanwhile (the GET/copy of its unchanged segments can never succeed again; the
    row stayed for ever and every flush said a row was left), the job is detached from the
    base exactly as `settle` does for a live node: base segments from local bytes only (the
    block cache survives a restart), then deleted -> the file goes up whole under its name
    (expecting nothing there), replaced -> PreconditionFailed, and the caller's conflict copy
    is made from complete bytes.  Base bytes not local: zeros there, an error naming the
    ranges, `rebase_incomplete`, and a conflict copy."""
    try:
        obj: ObjectRef = await fs.run_upload(job, token, tokens)
        return obj
    except Exception:
        base = job.base
        if base is None:
            raise
        state = await _state_of(fs, base)
        if state == "ok":
            raise
    await _detach_from_base(fs, job, path, state)
    log.warning("replay: %r: its base object was %s; every byte was local, the file goes up "
                "whole", path, state)
    if state == "deleted" and base.key == job.key:
        job.expect_etag = None  # nothing is at the key now: If-None-Match
    obj = await fs.run_upload(job, token, tokens)  # replaced: 412 -> the caller's conflict copy
    return obj


async def _detach_from_base(fs: Any, job: UploadJob, path: str, state: str) -> None:
    """Base segments rebuilt from local bytes only, the job no longer over a base; bytes not
    local: zeros there, `rebase_incomplete`, and PreconditionFailed (a conflict copy)."""
    assert job.staging is not None
    src = SegmentSource(fs.seg, fs.blocks, fs.cfg.segs_per_block, job.base, job.base_cipher,
                        job.base_segs, job.dirty, job.staging)
    src.local_only = True  # never again from S3: the object is gone or another one
    seg = fs.seg
    lacking: list[int] = []
    await fs.run(_rebuild_locally, src, job.base_segs, job.dirty, job.staging,
                 seg.segment_size, lacking)
    job.base, job.base_cipher, job.base_segs = None, None, 0
    if lacking:
        ranges = missing_ranges(lacking, seg.segment_size, job.size)
        fs.stats["rebase_incomplete"] = fs.stats.get("rebase_incomplete", 0) + 1
        fs.stats["last_rebase_incomplete"] = f"{path}: {ranges}"
        log.error("replay: %r: its base object was %s and %d byte range(s) of it were not "
                  "local: %s; our data is kept as a conflict copy with zeros there", path,
                  state, len(ranges), ", ".join(f"{a}-{b}" for a, b in ranges))
        raise store_errors.PreconditionFailed(f"{path}: base {state}, bytes missing")
