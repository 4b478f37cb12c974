"""Derived status fields a running mount reports (`enrich`) and how durations read.

Shared by the control server (in the mount), `s3encfs status` and `s3encfs mounts`; it imports
nothing of s3encfs but the version, so any tier may use it.
"""

from __future__ import annotations

import time
from typing import Any


def enrich(status: dict[str, Any], *, encryption: str, started: float) -> dict[str, Any]:
    """The mount's status plus what an operator asks first (called by the control server)."""
    from s3encfs import __version__

    out = {"version": __version__, "mode": encryption,
           "uptime_seconds": round(time.time() - started, 1), **status}
    hits, misses = status.get("cache_hits"), status.get("cache_misses")
    if isinstance(hits, int) and isinstance(misses, int):
        out["cache_hit_rate"] = hits / (hits + misses) if hits + misses else None
    return out


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
