"""What the mount's memory is made of, for `status` (docs/INTERNALS.md, "Memory").

`report(core)` counts the per-file bookkeeping a mount keeps (nodes, caches, queues) and reads
the process's RSS from /proc; a regression test asserts the counts go back down after the kernel
forgets.  With `S3ENCFS_TRACEMALLOC=N` in the environment, `start_tracing()` turns on
tracemalloc with N frames and the report lists the top allocation sites (slow: debugging only).
"""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

from s3encfs.fs.nodes import kept_reason

TOP_SITES = 15


def start_tracing() -> None:
    frames = os.environ.get("S3ENCFS_TRACEMALLOC", "")
    if frames and not tracemalloc.is_tracing():
        tracemalloc.start(max(1, int(frames) if frames.isdigit() else 1))


def proc_memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in bytes (empty off Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out["rss_bytes" if k == "VmRSS" else "rss_peak_bytes"] = \
                        int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _len(obj: Any, *names: str) -> int:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return 0
    try:
        return len(obj)
    except TypeError:
        return 0


def report(core: Any, trimmer: Any = None) -> dict[str, Any]:
    """Sizes of the structures that grow with files seen; all bounded or freed (see INTERNALS)."""
    d: dict[str, Any] = proc_memory()
    d.update({
        "nodes": _len(core, "inodes"),
        "ciphers": _len(core, "_ciphers"),
        "advised": _len(core, "_advised"),
        "failures": _len(core, "_failures"),
        "prelisted_dirs": _len(core, "prelisted"),
        "prelisted_keys": getattr(core, "_prelisted_keys", 0),
        "upload_queue": _len(core, "queue") + _len(core, "running"),
        "heap": _len(core, "_heap"),
        "index_queue": _len(core, "index_queue"),
        "mem_blocks": _len(core, "blocks", "_mem"),
        "mem_block_bytes": getattr(getattr(core.blocks, "_mem", None), "total", 0),
        "disk_blocks_indexed": _len(core, "blocks", "_disk"),
    })
    d["kept"] = kept(core)
    if trimmer is not None:
        d["node_cap"] = trimmer.cap
        d["nodes_handed_back"] = trimmer.invalidated
        d["nodes_dropped_unseen"] = trimmer.dropped
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        d["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        d["top_sites"] = [f"{s.size // 1024} KiB {s.count} x "
                          f"{s.traceback[0].filename}:{s.traceback[0].lineno}"
                          for s in snap.statistics("lineno")[:TOP_SITES]]
        if _last:  # what grew since the previous report: where a leak shows
            d["top_growth"] = [f"{s.size_diff // 1024:+} KiB {s.count_diff:+} x "
                               f"{s.traceback[0].filename}:{s.traceback[0].lineno}"
                               for s in snap.compare_to(_last[0], "lineno")[:TOP_SITES]]
        _last[:] = [snap]
    return d


def kept(core: Any) -> dict[str, int]:
    """Why the nodes in the table are there: per reason, how many (a node counts under its
    first reason, `nodes.kept_reason`); then "unlinked" and "dir" for nodes the trimmer skips,
    "known" for a clean node the kernel still looks up, "unseen" for one it never did (both the
    trimmer's to hand back)."""
    inodes = getattr(core, "inodes", None) or {}
    pending = tuple(getattr(core, n, ()) for n in ("queue", "running", "index_queue"))
    out: dict[str, int] = {}
    for node in list(inodes.values()):
        why = (kept_reason(node, pending) or ("unlinked" if node.unlinked else None)
               or ("dir" if node.is_dir else None)
               or ("known" if node.lookups > 0 else "unseen"))
        out[why] = out.get(why, 0) + 1
    return out


_last: list[tracemalloc.Snapshot] = []  # the previous report's snapshot (tracing only)
