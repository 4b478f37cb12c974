"""The block cache's disk tier: block files under ``CACHE/blocks``, LRU by size.

`BlockCache` (cache/blocks.py) keeps the memory tier and the fetches; this is where its blocks
rest: the index of blocks on disk (block path -> size, oldest first), reads of whole blocks and
of parts of them, the kernel read-ahead hint, writes (O_DIRECT where the filesystem allows it,
cache/direct.py) and eviction. Its index is shared with the fetch side under the cache's one
`_lock`.

A block is a file of its own (``STEM.B``), or lives in a *pack*: the consecutive blocks one GET
fetched, written as one file ``STEM.F+NxSIZE`` (blocks F..F+N-1 end to end, every one but the
last a whole block of SIZE bytes; docs/INTERNALS.md "Block packs"). A cold read of 1 GiB
creates 128 files instead of 1,024: on this machine's ext4 one file create cost ~0.3 ms of
kernel CPU, a fifth of a cold read's daemon CPU (docs/BENCHMARKS.md, session 13). A pack is
evicted, and dropped, whole.
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
    def __init__(self, directory: str, max_bytes: int, block_bytes: int = 0) -> None:
        self.dir = os.path.join(directory, "blocks")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.max_bytes = max_bytes
        self.block_bytes = block_bytes  # 0: no packs (their offsets need it)
        self._lock = threading.Lock()
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._disk_total = 0
        self._packs: dict[str, tuple[str, int]] = {}  # block path -> (its pack file, offset)
        self._members: dict[str, list[str]] = {}  # pack file -> its block paths, in order
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
            stem, _, tail = path.rpartition(".")
            if "+" not in tail:
                self._disk[path] = size
                self._disk_total += size
            elif not self._scan_pack(path, stem, tail, size):
                os.unlink(path)  # not a pack this cache can read (another block size)

    def _scan_pack(self, path: str, stem: str, tail: str, size: int) -> bool:
        first, _, rest = tail.partition("+")
        count, _, bb_text = rest.partition("x")
        bb = self.block_bytes
        if not (first.isdigit() and count.isdigit()) or bb <= 0 or bb_text != str(bb):
            return False
        n = int(count)
        last = size - (n - 1) * bb
        if n < 2 or not 0 < last <= bb:
            return False
        self._add_pack(path, [f"{stem}.{int(first) + i}" for i in range(n)],
                       [bb] * (n - 1) + [last])
        return True

    def _add_pack(self, file: str, paths: list[str], sizes: list[int]) -> None:
        """Under the lock (or before any thread runs): index a pack file's blocks."""
        off = 0
        for p, n in zip(paths, sizes, strict=True):
            self._disk[p] = n
            self._disk_total += n
            self._packs[p] = (file, off)
            off += n
        self._members[file] = paths

    def _forget_locked(self, path: str, keep: str | None = None) -> list[str]:
        """Under the lock: take block `path` out of the index, with every other block of its
        pack (a pack goes whole). The files to unlink (outside the lock): its own or its pack's,
        unless that is `keep` (the file being registered)."""
        size = self._disk.pop(path, None)
        if size is None:
            return []
        self._disk_total -= size
        loc = self._packs.pop(path, None)
        if loc is None:
            return [] if path == keep else [path]
        for other in self._members.pop(loc[0], []):
            self._packs.pop(other, None)
            n = self._disk.pop(other, None)
            if n is not None:
                self._disk_total -= n
        return [] if loc[0] == keep else [loc[0]]

    def _touch_locked(self, path: str) -> None:
        loc = self._packs.get(path)
        for p in self._members.get(loc[0], ()) if loc else (path,):
            if p in self._disk:
                self._disk.move_to_end(p)

    def _register(self, path: str, size: int) -> None:
        """A block written as a file of its own (``STEM.B``) into the index."""
        with self._lock:
            stale = self._forget_locked(path, keep=path)
            self._disk[path] = size
            self._disk_total += size
        _unlink(stale)

    def _loc(self, path: str) -> tuple[str, int]:
        """(file, offset) of a block on disk: its pack's, or its own file at 0."""
        return self._packs.get(path) or (path, 0)

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

    def _open_block(self, path: str, size: int) -> tuple[int, int] | None:
        """(fd, offset) of a block on disk that holds `size` bytes (its own file must be
        exactly that long, a pack long enough), or None; the caller closes fd."""
        file, off = self._loc(path)
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        length = os.fstat(fd).st_size
        own_file = file == path
        if (length == size) if own_file else (length >= off + size):
            return fd, off
        os.close(fd)
        return None

    def _disk_get(self, path: str, expected: int) -> bytes | None:
        opened = self._open_block(path, expected)
        if opened is None:
            if self._loc(path)[0] != path or os.path.exists(path):
                self._drop(path)  # the wrong length: never served
            return None
        fd, off = opened
        try:
            data = os.pread(fd, expected, off)
        finally:
            os.close(fd)
        if len(data) != expected:
            self._drop(path)
            return None
        with self._lock:
            self._touch_locked(path)
        return data

    def _pread(self, path: str, size: int, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of a block on disk that holds `size` bytes, or None."""
        opened = self._open_block(path, size)
        if opened is None:
            return None
        fd, off = opened
        try:
            part = os.pread(fd, end - start, off + start)
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
            size = self._disk[path]
        file, off = self._loc(path)
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            os.posix_fadvise(fd, off, size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        return True

    def _write_file(self, path: str, data: list[Block]) -> bool:
        """`data` end to end into `path` (through a .tmp and a rename); False if it failed."""
        if self.max_bytes <= 0:
            return False
        tmp = f"{path}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._writer.write(tmp, data)
            os.replace(tmp, path)
        except OSError as exc:  # a full cache disk must not fail reads
            log.warning("block cache write failed (%s); serving without caching", exc)
            _unlink([tmp])
            self.evict(sum(len(d) for d in data) * 4)
            return False
        return True

    def _disk_put(self, path: str, data: Block) -> None:
        if self._write_file(path, [data]):
            self._register(path, len(data))
            if self._disk_total > self.max_bytes:
                self.evict(0)

    def write_disk(self, key: str, etag: str, chunks: list[tuple[int, Block]]) -> None:
        """Disk tier copies of blocks (a fetch kept them in memory only until now): each run of
        consecutive blocks one pack file, a lone block a file of its own."""
        i = 0
        while i < len(chunks):
            j = i + 1
            while j < len(chunks) and chunks[j][0] == chunks[j - 1][0] + 1:
                j += 1
            run = chunks[i:j]
            if len(run) == 1 or self.block_bytes <= 0 or \
                    any(len(c) != self.block_bytes for _b, c in run[:-1]):
                for b, chunk in run:
                    self._disk_put(self._path(key, etag, b), chunk)
            else:
                self._pack_put(key, etag, run)
            i = j

    def _pack_put(self, key: str, etag: str, run: list[tuple[int, Block]]) -> None:
        paths = [self._path(key, etag, b) for b, _c in run]
        file = f"{paths[0]}+{len(run)}x{self.block_bytes}"  # the offsets hold for this size only
        if not self._write_file(file, [c for _b, c in run]):
            return
        with self._lock:
            stale = [f for p in paths for f in self._forget_locked(p, keep=file)]
            self._add_pack(file, paths, [len(c) for _b, c in run])
        _unlink(stale)
        if self._disk_total > self.max_bytes:
            self.evict(0)

    def _drop(self, path: str) -> None:
        with self._lock:
            stale = self._forget_locked(path)
        _unlink(stale or [path])

    def evict(self, extra: int) -> None:
        while True:
            with self._lock:
                if self._disk_total + extra <= self.max_bytes or not self._disk:
                    return
                stale = self._forget_locked(next(iter(self._disk)))
            _unlink(stale)


def _unlink(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
