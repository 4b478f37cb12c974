"""Block files written around the kernel's page cache (O_DIRECT).

A cold sequential read writes every block it fetches into the disk tier (cache/blocks.py).
Through the page cache that write is a second copy of each byte in the kernel plus the
page-cache bookkeeping: measured on a mounted 512 MiB cold read, the thread writing the disk
tier took half of the daemon's CPU (copy_folio_from_iter_atomic alone 41 % of its samples,
docs/BENCHMARKS.md), on a 2-core machine that the S3 server and the reader share. With
O_DIRECT the device reads the bytes from our buffer: one user-space copy into a page-aligned
buffer (reused) and no page-cache pages, which also leaves the page cache to the reader's own
file. The cache's meaning is unchanged: the same files, the same bytes, the same LRU.

A filesystem that refuses O_DIRECT (tmpfs, some FUSE or network filesystems: EINVAL) gets the
buffered write, from then on, for this cache.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

ALIGN = 4096  # O_DIRECT's alignment of buffer, offset and length (a page: fits every device)
_KEEP = 8  # aligned buffers kept for reuse (one per write in flight)
STAGE = 1024 * 1024 + ALIGN  # the most one aligned buffer holds (a block, client mode's too)


class DirectWriter:
    """Writes whole small files (cache blocks) with O_DIRECT, buffered where it is refused."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and hasattr(os, "O_DIRECT")
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def write(self, path: str, data: list[bytes | memoryview]) -> None:
        """Create (or replace the contents of) `path` with exactly the buffers of `data`,
        end to end."""
        if self.enabled:
            try:
                self._write_direct(path, data)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.enabled = False  # this filesystem cannot: buffered from now on
        with open(path, "wb") as f:
            for piece in data:
                f.write(piece)

    def _write_direct(self, path: str, data: list[bytes | memoryview]) -> None:
        """Through one aligned buffer of at most STAGE bytes: each full one written at the
        next aligned offset, the tail padded and the file truncated to the exact length."""
        n = sum(len(piece) for piece in data)
        buf = self._take(min(-(-n // ALIGN) * ALIGN, STAGE))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC |
                         os.O_DIRECT, 0o600)
            try:
                fill = 0
                for piece in data:
                    pos = 0
                    while pos < len(piece):
                        take = min(len(piece) - pos, len(buf) - fill)
                        buf[fill:fill + take] = piece[pos:pos + take]
                        fill, pos = fill + take, pos + take
                        if fill == len(buf):
                            _write_all(fd, buf, fill)
                            fill = 0
                if fill:
                    padded = -(-fill // ALIGN) * ALIGN
                    buf[fill:padded] = bytes(padded - fill)
                    _write_all(fd, buf, padded)
                    if padded > fill:
                        os.ftruncate(fd, n)
            finally:
                os.close(fd)
        finally:
            self._give(buf)

    def _take(self, size: int) -> mmap.mmap:
        with self._lock:
            for i, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(i)
        return mmap.mmap(-1, max(size, ALIGN))  # anonymous: page aligned

    def _give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < _KEEP:
                self._free.append(buf)
                return
        buf.close()


def _write_all(fd: int, buf: mmap.mmap, n: int) -> None:
    """buf[:n] (n aligned) at the file's offset; O_DIRECT writes may be short (then aligned)."""
    view = memoryview(buf)
    try:
        done = 0
        while done < n:
            done += os.write(fd, view[done:n])
    finally:
        view.release()
