"""Read cache: fixed-size blocks of *object bytes* on local disk, LRU by size.

Blocks are keyed by (key, ETag, block number), so a changed object can never be served from stale
blocks.  A block is a whole number of codec segments; in client mode its bytes are ciphertext, so
nothing readable is at rest.  Fetches of the same block are de-duplicated across threads, and a
run of consecutive blocks is fetched with one ranged GET (read-ahead).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

import trio

from s3encfs.cache.disktier import DiskTier
from s3encfs.cache.memtier import Block, MemTier
from s3encfs.store.s3 import ObjectStore

log = logging.getLogger("s3encfs.cache")

Claim = list[tuple[int, Future[Block]]]  # consecutive blocks one fetch owns, with their futures
DISK_WRITES = 4  # disk-tier writes (runs of blocks) on worker threads at once
WRITE_BEHIND = 4  # disk-tier writes started for callers that did not wait for them


class BlockCache(DiskTier):
    def __init__(self, directory: str, store: ObjectStore, block_bytes: int, max_bytes: int,
                 mem_bytes: int = 64 * 1024 * 1024):
        super().__init__(directory, max_bytes, block_bytes)
        self.store = store
        self.mem_bytes = mem_bytes
        self._mem = MemTier(mem_bytes)
        self._inflight: dict[tuple[str, str, int], Future[Block]] = {}
        self.hits = 0
        self.misses = 0
        self._disk_limiter: trio.CapacityLimiter | None = None  # disk-tier writes at once
        self._behind = 0  # disk-tier writes nobody waits for (write_behind)

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
            b0, b1 = self.block_range(obj_size, block)
            part = self._pread(self._path(key, etag, block), b1 - b0, start, end)
            if part is not None:
                self.hits += 1
                return part
        data = self.get_block(key, etag, obj_size, block, run=run, local_only=local_only)
        return memoryview(data)[start:end]

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
               run: int) -> tuple[Future[Block], Claim | None]:
        """Under the lock: the fetch of `block` in flight (extras None: wait for it), or a new
        one that this caller owns, with the following blocks (up to `run`) it fetches too."""
        with self._lock:
            fut = self._inflight.get((key, etag, block))
            if fut is not None:
                return fut, None
            claim = self._claim_locked(key, etag, obj_size, block, run)
        return claim[0][1], claim[1:]

    def claim_run(self, key: str, etag: str, obj_size: int, block: int, run: int) -> Claim:
        """Claims of `block` and the blocks after it (up to `run` in all), stopping at the first
        one in memory, on disk or in flight; [] when `block` itself is. The caller owns them:
        it must `fetch_claimed`/`afetch_claimed` them (or fail them, `fail_claim`), readers of
        those blocks wait for that fetch meanwhile instead of sending one of their own."""
        with self._lock:
            if self._present(key, etag, block):
                return []
            return self._claim_locked(key, etag, obj_size, block, run)

    def _present(self, key: str, etag: str, block: int) -> bool:
        ident = (key, etag, block)
        return ident in self._inflight or ident in self._mem or \
            self._path(key, etag, block) in self._disk

    def _claim_locked(self, key: str, etag: str, obj_size: int, block: int,
                      run: int) -> Claim:
        claim: Claim = [(block, Future())]
        self._inflight[(key, etag, block)] = claim[0][1]
        last_block = (obj_size - 1) // self.block_bytes if obj_size else 0
        for b in range(block + 1, min(block + run, last_block + 1)):
            if self._present(key, etag, b):
                break
            f: Future[Block] = Future()
            self._inflight[(key, etag, b)] = f
            claim.append((b, f))
        return claim

    def _publish(self, key: str, etag: str, obj_size: int, start: int, raw: bytes,
                 blocks: Claim, *, disk: bool = True) -> list[tuple[int, Block]]:
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
            for b, f, _c in results:
                if self._inflight.get((key, etag, b)) is f:
                    del self._inflight[(key, etag, b)]
        for _b, f, chunk in results:
            f.set_result(chunk)
        return [(b, chunk) for b, _f, chunk in results]

    def fail_claim(self, key: str, etag: str, blocks: Claim, exc: BaseException) -> None:
        """The claimed blocks' fetch failed (or never ran): their waiters get `exc`; claims
        already answered are left alone."""
        with self._lock:
            for b, f in blocks:
                if self._inflight.get((key, etag, b)) is f:
                    del self._inflight[(key, etag, b)]
        for _b, f in blocks:
            if not f.done():
                f.set_exception(exc)

    _fetch_failed = fail_claim

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
        return self.fetch_claimed(key, etag, obj_size, [(block, fut), *extra])

    def fetch_claimed(self, key: str, etag: str, obj_size: int, blocks: Claim) -> Block:
        """One GET of the claimed blocks (blocking), into both tiers; the first one's bytes."""
        self.misses += 1
        start = self.block_range(obj_size, blocks[0][0])[0]
        try:
            fetch_end = self.block_range(obj_size, blocks[-1][0])[1]
            raw = self.store.get_range(key, start, fetch_end, if_match=etag)
            return self._publish(key, etag, obj_size, start, raw, blocks)[0][1]
        except BaseException as exc:
            self.fail_claim(key, etag, blocks, exc)
            raise

    async def aget_block(self, key: str, etag: str, obj_size: int, block: int, *,
                         run: int = 1, wait_disk: bool = True) -> Block:
        """`get_block` awaited on the trio thread: the GET through `store.aget_range` (only
        when `store.awaitable_reads`), no worker thread for the request; a fetch of the same
        block by a worker thread is waited for, not repeated. The disk tier is written by a
        worker thread after the blocks are in memory and the waiters have them; `wait_disk`
        False returns before that write (`write_behind`)."""
        ident = (key, etag, block)
        data = self._local(ident, obj_size)
        if data is not None:
            return data
        fut, extra = self._claim(key, etag, obj_size, block, run)
        if extra is None:
            return await _wait(fut) or await self.aget_block(key, etag, obj_size, block, run=run,
                                                             wait_disk=wait_disk)
        chunks = await self.afetch_claimed(key, etag, obj_size, [(block, fut), *extra])
        await self.write_behind(key, etag, chunks, wait=wait_disk)
        return chunks[0][1]

    async def afetch_claimed(self, key: str, etag: str, obj_size: int,
                             blocks: Claim) -> list[tuple[int, Block]]:
        """`fetch_claimed` awaited on the CRT (`store.aget_range`), into the memory tier only:
        the caller writes the disk tier (`write_behind`). The blocks, in order."""
        self.misses += 1
        start = self.block_range(obj_size, blocks[0][0])[0]
        try:
            fetch_end = self.block_range(obj_size, blocks[-1][0])[1]
            raw = await self.store.aget_range(key, start, fetch_end, if_match=etag)
            return self._publish(key, etag, obj_size, start, raw, blocks, disk=False)
        except BaseException as exc:
            self.fail_claim(key, etag, blocks, exc)
            raise

    async def write_behind(self, key: str, etag: str, chunks: list[tuple[int, Block]], *,
                           wait: bool = True) -> None:
        """The disk-tier copies of fetched blocks, on a worker thread (an O_DIRECT write
        waits for the device: never on the trio thread), `DISK_WRITES` at once. `wait`
        False: return at once and let a background task write them (a reader waits for
        its bytes, not for the disk); past `WRITE_BEHIND` such writes pending, wait anyway
        (each holds its run's buffer)."""
        if self._disk_limiter is None:
            self._disk_limiter = trio.CapacityLimiter(DISK_WRITES)
        if wait or self._behind >= WRITE_BEHIND:
            await trio.to_thread.run_sync(self.write_disk, key, etag, chunks,
                                          limiter=self._disk_limiter)
            return
        self._behind += 1
        trio.lowlevel.spawn_system_task(self._write_detached, key, etag, chunks)

    async def _write_detached(self, key: str, etag: str, chunks: list[tuple[int, Block]]
                              ) -> None:
        try:
            await trio.to_thread.run_sync(self.write_disk, key, etag, chunks,
                                          limiter=self._disk_limiter)
        except Exception as exc:  # a system task must not raise: the cache just lacks them
            log.warning("block cache write of %s failed: %s", key, exc)
        finally:
            self._behind -= 1

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
