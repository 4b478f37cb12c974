"""The block cache's disk tier: one file per block under ``CACHE/blocks``, LRU by size.

`BlockCache` (cache/blocks.py) keeps the memory tier and the fetches; this is where its blocks
rest: the index of block files (path -> size, oldest first), reads of whole blocks and of parts
of them, the kernel read-ahead hint, writes (O_DIRECT where the filesystem allows it,
cache/direct.py) and eviction. Its index is shared with the fetch side under the cache's one
`_lock`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict

from s3encfs.cache.direct import DirectWriter
from s3encfs.cache.memtier import Block

log = logging.getLogger("s3encfs.cache")


class DiskTier:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.dir = os.path.join(directory, "blocks")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._disk_total = 0
        self._stems: dict[tuple[str, str], str] = {}
        self._writer = DirectWriter()  # block files bypass the page cache (cache/direct.py)
        self._scan()

    def _scan(self) -> None:
        entries = []
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                path = os.path.join(root, name)
                if name.endswith(".tmp"):
                    os.unlink(path)
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                entries.append((st.st_atime, path, st.st_size))
        for _t, path, size in sorted(entries):
            self._disk[path] = size
            self._disk_total += size

    def _path(self, key: str, etag: str, block: int) -> str:
        # asked for every block of a read-ahead window on every read: the hash is memoized
        stem = self._stems.get((key, etag))
        if stem is None:
            digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:32]
            stem = os.path.join(self.dir, digest[:2], digest)
            if len(self._stems) >= 1024:
                self._stems.clear()
            self._stems[(key, etag)] = stem
        return f"{stem}.{block}"

    def _disk_get(self, path: str, expected: int) -> bytes | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if len(data) != expected:
            self._drop(path)
            return None
        with self._lock:
            if path in self._disk:
                self._disk.move_to_end(path)
        return data

    def _pread(self, path: str, size: int, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of a block file on disk that holds `size` bytes, or None."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size == size:
                part = os.pread(fd, end - start, start)
                if len(part) == end - start:
                    return part
        finally:
            os.close(fd)
        return None

    def advise(self, key: str, etag: str, block: int) -> bool:
        """Ask the kernel to start reading a block that is on disk (sequential read-ahead over
        the disk tier); False if it is not there."""
        path = self._path(key, etag, block)
        with self._lock:
            if path not in self._disk:
                return False
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        return True

    def _disk_put(self, path: str, data: Block) -> None:
        if self.max_bytes <= 0:
            return
        tmp = f"{path}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._writer.write(tmp, data)
            os.replace(tmp, path)
        except OSError as exc:  # a full cache disk must not fail reads
            log.warning("block cache write failed (%s); serving without caching", exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self.evict(len(data) * 4)
            return
        with self._lock:
            old = self._disk.pop(path, 0)
            self._disk[path] = len(data)
            self._disk_total += len(data) - old
        if self._disk_total > self.max_bytes:
            self.evict(0)

    def write_disk(self, key: str, etag: str, chunks: list[tuple[int, Block]]) -> None:
        """Disk tier copies of blocks (a fetch kept them in memory only until now)."""
        for b, chunk in chunks:
            self._disk_put(self._path(key, etag, b), chunk)

    def _drop(self, path: str) -> None:
        with self._lock:
            size = self._disk.pop(path, None)
            if size is not None:
                self._disk_total -= size
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def evict(self, extra: int) -> None:
        while True:
            with self._lock:
                if self._disk_total + extra <= self.max_bytes or not self._disk:
                    return
                path, size = self._disk.popitem(last=False)
                self._disk_total -= size
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
