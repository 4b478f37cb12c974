"""A cap on the node table: the mount asks the kernel to forget its oldest clean entries.

A node leaves memory when the kernel forgets its inode (`FsCore.forget`, `nodes.forgettable`).
But the kernel keeps unused dentries, and with them our inodes, until *it* is short of memory:
on a machine with free RAM, an rsync of a million files kept a million nodes (~6 GB). So once
the table holds more than `cap` nodes, `trim_loop` tells the kernel to drop the entries of the
oldest nodes that hold nothing S3 lacks (`invalidate_entry`); the kernel then sends FORGET for
them and they leave through the same path as after `drop_caches`.  A name that is used again is
looked up again (its directory is listed again from S3): the cost of the cap is a LIST, never
data.  docs/INTERNALS.md, "Memory", has the numbers.

`S3ENCFS_NODE_CAP` overrides the default cap (tests use a small one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

from s3encfs.fs.nodes import Node, drop_forgotten, forgettable

log = logging.getLogger("s3encfs.fs")

NODE_CAP = 10_000  # nodes kept before the oldest clean ones are handed back to the kernel
TRIM_EVERY = 1.0  # seconds between checks
RESEND_AFTER = 30.0  # an entry the kernel has not forgotten by then is asked for again


def node_cap() -> int:
    raw = os.environ.get("S3ENCFS_NODE_CAP", "")
    return max(100, int(raw)) if raw.isdigit() else NODE_CAP


def evictable(core: Any) -> Iterator[Node]:
    """Files that hold nothing S3 lacks, oldest first (inode numbers grow, and `core.inodes`
    keeps insertion order).  Directories are left to the kernel: one made again starts with no
    children and may take its first listing from a subtree LIST taken before its newest files
    landed (`FsCore.prelisted`), which lacked names in a test; they are one in ~1,000 nodes."""
    pending = (core.queue, core.running, core.index_queue)
    for node in list(core.inodes.values()):
        if node.parent is not None and not node.unlinked and not node.is_dir and \
                forgettable(node, pending):
            yield node


class NodeTrimmer:
    def __init__(self, core: Any, cap: int,
                 invalidate: Callable[[int, bytes], None] | None = None):
        self.core = core
        self.cap = cap
        self.low = cap - cap // 10  # trim to 90 %: not one invalidation per new node
        self._invalidate = invalidate or _kernel_invalidate
        self._sent: dict[int, float] = {}  # inode -> when its entry was handed back
        self.invalidated = 0
        self.dropped = 0  # listed, never looked up: dropped without asking the kernel

    def trim(self, now: float) -> int:
        """Hand back the oldest clean entries beyond the cap (those the kernel never looked up
        are dropped here and now); the number the kernel was asked to forget."""
        inodes = self.core.inodes
        self._sent = {i: t for i, t in self._sent.items()
                      if i in inodes and now - t < RESEND_AFTER}
        excess = len(inodes) - len(self._sent) - self.low
        if len(inodes) <= self.cap or excess <= 0:
            return 0
        asked = 0
        for node in evictable(self.core):
            if asked >= excess:
                break
            if node.inode in self._sent:
                continue
            assert node.parent is not None
            if node.lookups == 0:  # a listing's entry the kernel never saw: ours to drop
                # (not a provisional one: a lookup may be resolving it right now, and takes
                # its reference only after that HEAD)
                if node.inode in inodes and not node.provisional:
                    drop_forgotten(inodes, node)
                    self.dropped += 1
                    excess -= 1
                continue
            self._sent[node.inode] = now
            self._invalidate(node.parent.inode, os.fsencode(node.name))
            asked += 1
        self.invalidated += asked
        return asked

    def expire_prelisted(self, now: float) -> int:
        """Subtree listings not used within `dir_ttl` are never used (`ensure_listed` refuses
        them); they were only dropped at the next subtree listing, so the last ones of a walk
        stayed for good (8,755 keys, ~13 MiB, in a client-mode rsync).  `now`: time.monotonic."""
        prelisted = getattr(self.core, "prelisted", None)
        if not prelisted:
            return 0
        ttl = self.core.cfg.dir_ttl
        stale = [p for p, x in prelisted.items() if now - x.at >= ttl]
        for p in stale:
            self.core._take_prelisted(p)
        return len(stale)

    async def run(self) -> None:
        rounds = 0
        while True:
            await trio.sleep(TRIM_EVERY)
            try:
                self.expire_prelisted(time.monotonic())
                self.trim(trio.current_time())
                rounds += 1
                if _malloc_trim is not None and rounds % MALLOC_TRIM_EVERY == 0:
                    _malloc_trim(0)  # free heap pages inside glibc's arenas go back to the OS
            except Exception:  # never take the mount down for a memory optimisation
                log.exception("node table trim failed")


def _libc_malloc_trim() -> Any:
    if os.environ.get("S3ENCFS_MALLOC_TRIM", "1") == "0":
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM_EVERY = 10  # trimmer rounds (seconds) between malloc_trim calls
_malloc_trim = _libc_malloc_trim()


def _kernel_invalidate(parent_inode: int, name: bytes) -> None:
    import pyfuse3

    pyfuse3.invalidate_entry_async(parent_inode, name, ignore_enoent=True)
