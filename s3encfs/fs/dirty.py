"""Dirty-byte accounting: how many bytes of staged (not yet uploaded) segments the mount holds.

`max_dirty` throttles writers on this total, and `status` shows it, so it must never drift.  The
rule (docs/INTERNALS.md, "Faults: full disk, outages, bounded waits"): every `Content` remembers
how many segments it has been counted for (`Content.counted`); after anything changes its dirty
set (write, truncate, materializing base segments, an upload landing) the owner calls `sync`,
and whoever drops a content calls `drop`.  The total is then the sum over live contents of their
dirty segments, whatever happened before — an earlier version added on write and subtracted "what
is dirty now" elsewhere, so `write 1 GiB; ftruncate(0); close` stayed counted for ever.
"""

from __future__ import annotations

import os
from typing import Protocol

from s3encfs.cache.staging import DirtySet

# Files (and markers, metadata rewrites) waiting for or in upload before writers wait, whatever
# their bytes: each costs ~10 KB of memory (node, content, cipher, journal row).  `dirty_limit`
# alone (2 GiB, counted in 64 KiB segments) let 32,768 small files wait: on a loaded machine an
# rsync of 50,000 files ran 15,000 ahead of its uploads, at 290 MiB RSS.
MAX_PENDING_FILES = 2048


def pending_files_limit() -> int:
    """`MAX_PENDING_FILES`, or `S3ENCFS_MAX_PENDING_FILES` (at least 16; tests use a small one)."""
    raw = os.environ.get("S3ENCFS_MAX_PENDING_FILES", "")
    return max(16, int(raw)) if raw.isdigit() else MAX_PENDING_FILES


class _Counted(Protocol):
    dirty: DirtySet
    counted: int


class DirtyAccount:
    def __init__(self, segment_size: int) -> None:
        self.segment_size = segment_size
        self.total = 0

    def sync(self, c: _Counted) -> None:
        """`c.dirty` may have changed: count it as it is now."""
        n = c.dirty.count()
        self.total += (n - c.counted) * self.segment_size
        c.counted = n

    def drop(self, c: _Counted) -> None:
        """`c` is no longer the node's content: none of it counts any more."""
        self.total -= c.counted * self.segment_size
        c.counted = 0
