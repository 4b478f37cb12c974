"""Optional profile of the mount: ``S3ENCFS_PROFILE=FILE`` runs the mount's trio loop (the
thread that answers every FUSE request) under cProfile and writes pstats data to FILE when the
mount ends. For measuring per-request Python time (`python -m pstats FILE`); off by default.
``S3ENCFS_PROFILE_CLOCK=cpu`` times it by the thread's CPU clock instead of the wall clock: on a
loaded machine wall time counts the moments the thread was preempted or blocked (epoll_wait).

``S3ENCFS_PROFILE_THREADS=1`` profiles every Python thread started after the mount began (the
S3 worker threads: uploads, sealing, journal writes) too, merged into the same FILE. A ``{pid}``
in FILE is replaced by the daemon's pid (several mounts, one setting)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def run_profiled(fn: Callable[[], T]) -> T:
    """``fn()``, under cProfile when S3ENCFS_PROFILE names an output file."""
    out = os.environ.get("S3ENCFS_PROFILE")
    if not out:
        return fn()
    import cProfile
    import pstats
    import time

    cpu = os.environ.get("S3ENCFS_PROFILE_CLOCK") == "cpu"
    prof = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    others: list[cProfile.Profile] = []

    def start_thread(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        others.append(p)
        p.enable()

    if os.environ.get("S3ENCFS_PROFILE_THREADS") == "1":
        threading.setprofile(start_thread)
    try:
        return prof.runcall(fn)
    finally:
        threading.setprofile(None)
        stats = pstats.Stats(prof)
        for p in list(others):
            stats.add(p)
        stats.dump_stats(out.replace("{pid}", str(os.getpid())))
