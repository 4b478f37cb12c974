"""Read cache: fixed-size blocks of *object bytes* on local disk, LRU by size.

Blocks are keyed by (key, ETag, block number), so a changed object can never be served from stale
blocks.  A block is a whole number of codec segments; in client mode its bytes are ciphertext, so
nothing readable is at rest.  Fetches of the same block are de-duplicated across threads, and a
run of consecutive blocks is fetched with one ranged GET (read-ahead).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future

import trio

from s3encfs.cache.direct import DirectWriter
from s3encfs.cache.memtier import Block, MemTier
from s3encfs.store.s3 import ObjectStore

log = logging.getLogger("s3encfs.cache")


class BlockCache:
    def __init__(self, directory: str, store: ObjectStore, block_bytes: int, max_bytes: int,
                 mem_bytes: int = 64 * 1024 * 1024):
        self.dir = os.path.join(directory, "blocks")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.store = store
        self.block_bytes = block_bytes
        self.max_bytes = max_bytes
        self.mem_bytes = mem_bytes
        self._lock = threading.Lock()
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._disk_total = 0
        self._mem = MemTier(mem_bytes)
        self._inflight: dict[tuple[str, str, int], Future[Block]] = {}
        self._stems: dict[tuple[str, str], str] = {}
        self.hits = 0
        self.misses = 0
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

    def block_range(self, obj_size: int, block: int) -> tuple[int, int]:
        start = block * self.block_bytes
        return start, min(obj_size, start + self.block_bytes)

    # -- memory tier ---------------------------------------------------------------------------
    def _mem_get(self, ident: tuple[str, str, int]) -> Block | None:
        with self._lock:
            return self._mem.get(ident)

    def _mem_put(self, ident: tuple[str, str, int], data: Block) -> None:
        with self._lock:
            self._mem.put(ident, data)

    # -- disk tier -----------------------------------------------------------------------------
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

    def read_part(self, key: str, etag: str, obj_size: int, block: int, start: int, end: int,
                  *, run: int = 1, local_only: bool = False) -> bytes:
        """Bytes [start, end) of one block.  A block that is only on disk is not read whole for a
        random read (a 4 KiB read costs one small pread, not a 1 MiB file read); a sequential
        reader (`run` > 1) loads it whole into the memory tier for the reads that follow.
        `local_only`: never wait for S3 — raise LookupError on a miss."""
        part = self.view_part(key, etag, obj_size, block, start, end, run=run,
                              local_only=local_only)
        return part if isinstance(part, bytes) else bytes(part)

    def view_part(self, key: str, etag: str, obj_size: int, block: int, start: int, end: int,
                  *, run: int = 1, local_only: bool = False) -> bytes | memoryview:
        """`read_part`, but a block in memory is not copied: a memoryview of it (for a caller
        that only decrypts from it, such as a client-mode read)."""
        ident = (key, etag, block)
        data = self._mem_get(ident)
        if data is not None:
            self.hits += 1
            return memoryview(data)[start:end]
        if run == 1:
            part = self._pread(self._path(key, etag, block), obj_size, block, start, end)
            if part is not None:
                self.hits += 1
                return part
        data = self.get_block(key, etag, obj_size, block, run=run, local_only=local_only)
        return memoryview(data)[start:end]

    def _pread(self, path: str, obj_size: int, block: int, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of a whole block file on disk, or None."""
        b0, b1 = self.block_range(obj_size, block)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size == b1 - b0:
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

    def invalidate(self, key: str, etag: str, block: int) -> None:
        ident = (key, etag, block)
        with self._lock:
            self._mem.pop(ident)
        self._drop(self._path(key, etag, block))

    # -- public --------------------------------------------------------------------------------
    def cached(self, key: str, etag: str, block: int) -> bool:
        return self.where(key, etag, block) is not None

    def where(self, key: str, etag: str, block: int) -> str | None:
        """"mem" (in memory or being fetched), "disk" (on disk only) or None."""
        ident = (key, etag, block)
        path = self._path(key, etag, block)
        with self._lock:
            if ident in self._mem or ident in self._inflight:
                return "mem"
            return "disk" if path in self._disk else None

    def _local(self, ident: tuple[str, str, int], obj_size: int) -> Block | None:
        """A block from the memory tier, or from disk (then kept in memory); None if neither.
        The disk index says whether a file is there (a cold miss opens no file)."""
        data = self._mem_get(ident)
        if data is None:
            path = self._path(*ident)
            with self._lock:
                if path not in self._disk:
                    return None
            start, end = self.block_range(obj_size, ident[2])
            data = self._disk_get(path, end - start)
            if data is not None:
                self._mem_put(ident, data)
        if data is not None:
            self.hits += 1
        return data

    def _claim(self, key: str, etag: str, obj_size: int, block: int,
               run: int) -> tuple[Future[Block], list[tuple[int, Future[Block]]] | None]:
        """Under the lock: the fetch of `block` in flight (extras None: wait for it), or a new
        one that this caller owns, with the following blocks (up to `run`) it fetches too."""
        ident = (key, etag, block)
        with self._lock:
            fut = self._inflight.get(ident)
            if fut is not None:
                return fut, None
            fut = Future()
            self._inflight[ident] = fut
            extra: list[tuple[int, Future[Block]]] = []
            last_block = (obj_size - 1) // self.block_bytes if obj_size else 0
            for b in range(block + 1, min(block + run, last_block + 1)):
                other = (key, etag, b)
                if other in self._inflight or other in self._mem:
                    break
                if self._path(key, etag, b) in self._disk:
                    break
                f2: Future[Block] = Future()
                self._inflight[other] = f2
                extra.append((b, f2))
        return fut, extra

    def _publish(self, key: str, etag: str, obj_size: int, start: int, raw: bytes,
                 blocks: list[tuple[int, Future[Block]]], *, disk: bool = True
                 ) -> list[tuple[int, Block]]:
        """Split a fetched run into its blocks: memory tier (and disk unless `disk` False:
        the caller writes them, `write_disk`), then the waiters' results."""
        fetch_end = self.block_range(obj_size, blocks[-1][0])[1]
        if len(raw) != fetch_end - start:
            raise OSError(f"short read of {key}: {len(raw)} of {fetch_end - start} bytes")
        results = []
        view = memoryview(raw).toreadonly()  # each block a slice of the run: no copy
        for b, f in blocks:
            s, e = self.block_range(obj_size, b)
            chunk = view[s - start:e - start]
            self._mem_put((key, etag, b), chunk)
            if disk:
                self._disk_put(self._path(key, etag, b), chunk)
            results.append((b, f, chunk))
        with self._lock:
            for b, _f, _c in results:
                self._inflight.pop((key, etag, b), None)
        for _b, f, chunk in results:
            f.set_result(chunk)
        return [(b, chunk) for b, _f, chunk in results]

    def write_disk(self, key: str, etag: str, chunks: list[tuple[int, Block]]) -> None:
        """Disk tier copies of blocks `_publish(disk=False)` kept in memory only."""
        for b, chunk in chunks:
            self._disk_put(self._path(key, etag, b), chunk)

    def _fetch_failed(self, key: str, etag: str, blocks: list[tuple[int, Future[Block]]],
                      exc: BaseException) -> None:
        with self._lock:
            for b, _f in blocks:
                self._inflight.pop((key, etag, b), None)
        for _b, f in blocks:
            if not f.done():
                f.set_exception(exc)

    def get_block(self, key: str, etag: str, obj_size: int, block: int, *,
                  run: int = 1, local_only: bool = False) -> Block:
        """Object bytes of one block (blocking).  On a miss, fetch `run` consecutive blocks in
        one GET so sequential readers pay one request per read-ahead window."""
        ident = (key, etag, block)
        data = self._local(ident, obj_size)
        if data is not None:
            return data
        if local_only:
            raise LookupError(ident)
        fut, extra = self._claim(key, etag, obj_size, block, run)
        if extra is None:  # b"": a whole-object fill put it on disk (cache/verified.py)
            return fut.result() or self.get_block(key, etag, obj_size, block, run=run)
        self.misses += 1
        blocks = [(block, fut), *extra]
        start = self.block_range(obj_size, block)[0]
        try:
            fetch_end = self.block_range(obj_size, blocks[-1][0])[1]
            raw = self.store.get_range(key, start, fetch_end, if_match=etag)
            return self._publish(key, etag, obj_size, start, raw, blocks)[0][1]
        except BaseException as exc:
            self._fetch_failed(key, etag, blocks, exc)
            raise

    async def aget_block(self, key: str, etag: str, obj_size: int, block: int, *,
                         run: int = 1) -> Block:
        """`get_block` awaited on the trio thread: the GET through `store.aget_range` (only
        when `store.awaitable_reads`), no worker thread for the request; the disk tier is
        written by one worker thread per run of several blocks (a 1-block run inline), after
        the blocks are in memory and the waiters have them. A fetch of the same block by a
        worker thread is waited for, not repeated."""
        ident = (key, etag, block)
        data = self._local(ident, obj_size)
        if data is not None:
            return data
        fut, extra = self._claim(key, etag, obj_size, block, run)
        if extra is None:
            return await _wait(fut) or await self.aget_block(key, etag, obj_size, block, run=run)
        self.misses += 1
        blocks = [(block, fut), *extra]
        start = self.block_range(obj_size, block)[0]
        try:
            fetch_end = self.block_range(obj_size, blocks[-1][0])[1]
            raw = await self.store.aget_range(key, start, fetch_end, if_match=etag)
            chunks = self._publish(key, etag, obj_size, start, raw, blocks, disk=False)
        except BaseException as exc:
            self._fetch_failed(key, etag, blocks, exc)
            raise
        if len(chunks) == 1:
            self.write_disk(key, etag, chunks)
        else:
            await trio.to_thread.run_sync(self.write_disk, key, etag, chunks)
        return chunks[0][1]

    def usage(self) -> dict[str, int]:
        return {"cache_bytes": self._disk_total, "cache_limit": self.max_bytes,
                "cache_hits": self.hits, "cache_misses": self.misses}


async def _wait(fut: Future[Block]) -> Block:
    """The result of a fetch another thread (or task) owns, awaited without a thread: its
    done-callback wakes this task through the trio loop."""
    if not fut.done():
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_f: object) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        fut.add_done_callback(wake)
        with trio.CancelScope(shield=True):  # the owner sees its fetch through
            await done.wait()
    return fut.result()
