"""Optional profile of the FUSE thread: ``S3ENCFS_PROFILE=FILE`` runs the mount's trio loop (the
thread that answers every FUSE request) under cProfile and writes pstats data to FILE when the
mount ends. For measuring per-request Python time (`python -m pstats FILE`); off by default."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_profiled(fn: Callable[[], T]) -> T:
    """``fn()``, under cProfile when S3ENCFS_PROFILE names an output file."""
    out = os.environ.get("S3ENCFS_PROFILE")
    if not out:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(out)
