"""Optional profile of the FUSE thread: ``S3ENCFS_PROFILE=FILE`` runs the mount's trio loop (the
thread that answers every FUSE request) under cProfile and writes pstats data to FILE when the
mount ends. For measuring per-request Python time (`python -m pstats FILE`); off by default.
``S3ENCFS_PROFILE_CLOCK=cpu`` times it by the thread's CPU clock instead of the wall clock: on a
loaded machine wall time counts the moments the thread was preempted or blocked (epoll_wait)."""

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
    import time

    cpu = os.environ.get("S3ENCFS_PROFILE_CLOCK") == "cpu"
    prof = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(out)
