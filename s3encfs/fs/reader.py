"""Reads and read-ahead: a file's bytes from staging, the block cache or S3.

docs/INTERNALS.md, "Filesystem services: who owns what" (reader).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from functools import partial

import trio

from s3encfs.cache.blocks import Claim
from s3encfs.cache.memtier import Block
from s3encfs.codec import IntegrityError
from s3encfs.fs.dirprefetch import DirPrefetch
from s3encfs.fs.nodes import Node, ObjectRef
from s3encfs.fs.state import fuse_error
from s3encfs.fs.tasks import background
from s3encfs.fs.uploader import SegmentSource
from s3encfs.store import errors as store_errors

log = logging.getLogger("s3encfs.fs")

# Sequential read-ahead (docs/SEMANTICS.md, "Reads"): blocks (1 MiB of object bytes by default)
# kept in flight or cached ahead of a sequential reader, and blocks per read-ahead GET (exactly
# that many unless at EOF). What bounds a cold sequential read is GETs in flight times each
# GET's own rate (one SeaweedFS GET streams at a fraction of what parallel GETs reach): the
# window holds RA_WINDOW / RA_GET = 6 GETs in flight (bench/read_path.py --timeline; with 32
# and the half-size rule it held ~2 and reads stalled 95% of the time, docs/BENCHMARKS.md).
# The window stays under the 64 MiB memory tier, which must still hold a block when the
# reader gets to it (its LRU keeps the unread blocks ahead while they are < 64).
RA_WINDOW = 48
RA_GET = 8
RA_MISS = 4  # blocks a sequential reader's miss fetches in one GET


class Reader(DirPrefetch):
    async def read(self, node: Node, off: int, size: int) -> bytes | memoryview:
        """Plaintext [off, off + size) (a read-only view of a cached block when the read is
        within one block of a clean plain file: no copy before the FUSE reply)."""
        if node.corrupt:
            log.error("read of %r (%s) refused: %s", node.path,
                      node.obj.key if node.obj else "?", node.corrupt)
            raise fuse_error(errno.EIO)
        end = min(off + size, node.attrs.size)
        if end <= off:
            return b""
        self.stats["reads"] += 1
        self.stats["read_bytes"] += end - off
        src = self._source(node)
        S = self.seg.segment_size
        first, last = off // S, (end - 1) // S
        run = self._read_pattern(node, src.base, off, end)
        clean = src.base is not None and node.content is None

        def work() -> bytes | memoryview:
            if clean:
                return src.base_range(off, end, run=run)
            out = [src.plain(i, run=run) for i in range(first, last + 1)]
            data = b"".join(out)
            return data[off - first * S:end - first * S]

        data = self._local_read(src, work) if clean else None
        try:
            if data is None and clean and src.base is not None and self.store.awaitable_reads:
                # the blocks this read needs, awaited on the CRT (no worker thread), then the
                # read from memory as above; a block gone again meanwhile: the threaded path
                await self._fetch_blocks(src.base, off, end, run)
                data = self._local_read(src, work)
            if data is None:
                data = await self.run(work)
        except (IntegrityError, store_errors.StoreError, OSError) as exc:
            key = src.base.key if src.base else node.path
            log.error("read of %r (object %s) failed: %s", node.path, key, exc)
            raise fuse_error(errno.EIO) from None
        if node.ra_window and src.base is not None:
            self._prefetch(src.base, (last + 1) // self.cfg.segs_per_block, node.ra_window)
        return data

    def _read_pattern(self, node: Node, base: ObjectRef | None, off: int, end: int) -> int:
        """Follow the reader: a sequential one grows its read-ahead window (`ra_window`
        blocks, up to `RA_WINDOW`); the third random read of a clean file prefetches all of it.
        Returns the run of blocks a miss of this read fetches in one GET."""
        run = 1
        if node.seq_next == off and off > 0:
            node.ra_window = min(max(node.ra_window * 2, RA_MISS), RA_WINDOW)
            run = RA_MISS
        else:
            node.ra_window = 0
            if off > 0 and base is not None:
                node.random_reads += 1
                if node.random_reads == 3:
                    self._prefetch_whole(node, base)
        node.seq_next = end
        return run

    @staticmethod
    def _local_read(src: SegmentSource,
                    work: Callable[[], bytes | memoryview]) -> bytes | memoryview | None:
        """`work()` from blocks in memory or in the local disk cache, on this thread (a
        worker-thread hop costs more than a local pread); None when a block is not local (or
        a local one does not decrypt: the threaded path drops it and fetches it again)."""
        src.local_only = True
        try:
            return work()
        except (LookupError, OSError):
            return None
        finally:
            src.local_only = False

    async def _fetch_blocks(self, obj: ObjectRef, off: int, end: int, run: int) -> None:
        """Bring the blocks holding plaintext [off, end) of a clean file into the block cache,
        awaited on the CRT: one GET from the first missing block (with `run` - 1 more read
        ahead), to the read's last block at least."""
        per_block = self.seg.segment_size * self.cfg.segs_per_block
        first, last = off // per_block, (end - 1) // per_block
        for b in range(first, last + 1):  # a block in flight is waited for, not fetched again
            # the reader waits for its bytes, not for their disk-tier copy
            await self.blocks.aget_block(obj.key, obj.etag, obj.obj_size, b,
                                         run=max(run, last - b + 1), wait_disk=False)

    def _prefetch_whole(self, node: Node, obj: ObjectRef) -> None:
        """A file read at random offsets: fetch all of it in parallel (what makes random reads
        local-disk fast), if it fits comfortably in the cache; on a FUSE mount its pages also
        go into the kernel's page cache as they land (fs/pagepush.py)."""
        if obj.obj_size > min(self.cfg.cache_size // 2, 4 * 1024**3):
            return
        nblocks = -(-obj.obj_size // self.block_bytes)
        pushing = self.pages.start(node, obj)
        self._prefetch(obj, 0, nblocks, claim=False)
        if pushing and self.nursery is not None:  # the blocks already local: push them now
            local = [b for b in range(nblocks) if (obj.key, obj.etag, b) not in self._prefetching]
            self.nursery.start_soon(background, self._push_blocks, obj, local)

    def _plain_ranges(self, obj: ObjectRef, blocks: list[int]) -> list[tuple[int, int]]:
        per = self.cfg.segs_per_block * self.seg.segment_size  # plaintext bytes per block
        return [(b * per, min(obj.plain_size, (b + 1) * per)) for b in blocks]

    async def _push_blocks(self, obj: ObjectRef, blocks: list[int], *,
                           fetch: bool = True) -> None:
        """Plaintext of these blocks (local ones only) into the kernel's page cache. `fetch`
        False: a block not local when its turn comes is skipped (left to FUSE reads), not
        brought in (a read-ahead run's push: another GET of a block it just fetched)."""
        st = self.pages.get(obj)
        if st is None:
            return
        node = st.node

        def read_local(lo: int, hi: int) -> bytes | memoryview | None:
            src = self._source(node)
            if src.base is None or node.content is not None:
                return None
            return self._local_read(src, partial(src.base_range, lo, hi))

        async def ensure(lo: int, hi: int) -> None:
            if not fetch:
                return
            if self.store.awaitable_reads:
                await self._fetch_blocks(obj, lo, hi, 1)
            else:
                await self.run(partial(self._local_or_fetched, node, lo, hi))

        await self.pages.push(st, self._plain_ranges(obj, blocks), ensure, read_local)

    def _local_or_fetched(self, node: Node, lo: int, hi: int) -> None:
        src = self._source(node)
        if src.base is not None:
            src.base_range(lo, hi)

    def _prefetch(self, obj: ObjectRef, first_block: int, window: int, *,
                  claim: bool = True) -> None:
        """Fetch the missing blocks of [first_block, first_block + window) in runs of RA_GET.
        `claim` (a sequential reader's window, on the CRT): each run is claimed in the block
        cache here, so the reader that gets to one of its blocks first waits for that GET
        instead of sending one of its own. Unclaimed (the whole-file fetch: a random reader
        must not wait behind a whole file's queue of GETs), a run is claimed only when its
        GET can start, and then only its blocks that are still missing."""
        if self.nursery is None:
            return
        claim = claim and self.store.awaitable_reads
        last_block = (obj.obj_size - 1) // self.block_bytes if obj.obj_size else -1
        end = min(first_block + window, last_block + 1)
        ident = (obj.key, obj.etag)
        prev = self._ra_scanned.get(ident)
        if prev == (first_block, end):
            return  # the same window as the last read's (reads smaller than a block)
        advised = self._advised.get(ident, -1)
        b = first_block
        if prev is not None and prev[0] <= first_block <= prev[1]:
            b = prev[1]  # a reader moving on: the blocks up to the last scan's stop were seen
        while b < end:
            tier = self._ra_tier(obj, b)
            if tier is not None:
                if tier == "disk" and b > advised and self.blocks.advise(obj.key, obj.etag, b):
                    advised = b  # on disk only: let the kernel read it ahead of the reader
                b += 1
                continue
            run = 1  # one GET for RA_GET consecutive missing blocks (fewer only at EOF)
            while run < RA_GET and b + run < end and self._ra_tier(obj, b + run) is None:
                run += 1
            if run < RA_GET and b + run == end and end <= last_block:
                break  # a short run cut by the window's end: wait and fetch it in one full GET
            claimed = self.blocks.claim_run(obj.key, obj.etag, obj.obj_size, b, run) \
                if claim else None
            for i in range(b, b + run):
                self._prefetching.add((obj.key, obj.etag, i))
            self.nursery.start_soon(background, self._prefetch_one, obj, b, run, claimed)
            b += run
        if len(self._advised) > 1000:
            self._advised.clear()
            self._ra_scanned.clear()
        self._advised[ident] = advised
        self._ra_scanned[ident] = (first_block, min(b, end))  # where this scan stopped

    def _ra_tier(self, obj: ObjectRef, b: int) -> str | None:
        """Where block b is for read-ahead: "mem" (also: being prefetched), "disk" or None."""
        if (obj.key, obj.etag, b) in self._prefetching:
            return "mem"
        return self.blocks.where(obj.key, obj.etag, b)

    async def _prefetch_one(self, obj: ObjectRef, block: int, run: int,
                            claimed: Claim | None = None) -> None:
        awaited = self.store.awaitable_reads
        try:
            if awaited:  # on the CRT: no worker thread parked on the GET
                await self._fetch_run(obj, block, run, claimed)  # pushes the run's pages too
            else:
                await trio.to_thread.run_sync(
                    partial(self.blocks.get_block, obj.key, obj.etag, obj.obj_size, block,
                            run=run), limiter=self.prefetch_limiter)
        except Exception as exc:
            log.debug("prefetch of %s block %d failed: %s", obj.key, block, exc)
            return
        finally:
            for i in range(block, block + run):
                self._prefetching.discard((obj.key, obj.etag, i))
        if not awaited:
            await self._push_blocks(obj, list(range(block, block + run)))

    async def _fetch_run(self, obj: ObjectRef, block: int, run: int,
                         claimed: Claim | None) -> None:
        """GETs of the blocks of [block, block + run) not yet local: those `claimed` already,
        else those still missing once a `prefetch_limiter` slot is free (a block a reader
        fetched meanwhile is skipped, not the rest of the run with it). The slot is held until
        the disk-tier write of what it fetched is done: it bounds the fetched runs held in
        memory (with it released first, a slow disk let them pile up: W2 peak RSS 352 MiB).
        A file being pushed into the page cache (fs/pagepush.py) gets the run's pages stored
        by a task of its own started as the GET is done, from memory: pushed after the disk
        write, other runs had often evicted the blocks from the memory tier by then, and the
        trio thread read them back from disk (W3). The push does not hold the slot."""
        key, etag, size = obj.key, obj.etag, obj.obj_size
        pending: Claim = []
        fetched: list[tuple[int, Block]] = []
        try:
            async with self.prefetch_limiter:
                if claimed is not None:
                    pending = claimed
                    if claimed:
                        fetched = await self.blocks.afetch_claimed(key, etag, size, claimed)
                else:
                    b = block
                    while b < block + run:
                        pending = self.blocks.claim_run(key, etag, size, b, block + run - b)
                        if pending:
                            fetched += await self.blocks.afetch_claimed(key, etag, size, pending)
                            b = pending[-1][0]
                        b += 1
                if self.nursery is not None and self.pages.get(obj) is not None:
                    self.nursery.start_soon(background, partial(self._push_blocks, fetch=False),
                                            obj, list(range(block, block + run)))
                if fetched:  # in the slot: it bounds the runs held in memory (RSS)
                    await self.blocks.write_behind(key, etag, fetched)
        except BaseException as exc:  # cancelled before its GET: its waiters must not hang
            why = exc if isinstance(exc, Exception) else \
                OSError(errno.ECANCELED, "read-ahead stopped before its GET")
            for owned in (claimed, pending):
                if owned:
                    self.blocks.fail_claim(key, etag, owned, why)
            raise

    async def readlink(self, node: Node) -> str:
        if node.link_target is None:
            if node.obj is None:
                raise fuse_error(errno.EIO)
            data = await self.read(node, 0, node.attrs.size)
            node.link_target = os.fsdecode(bytes(data))
        return node.link_target
