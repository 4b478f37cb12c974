"""The block cache of a store whose objects authenticate only as a whole (S3EC mode:
`ObjectStore.verifies_whole_objects`, one AES-GCM tag per object).

A miss does not fetch a run of blocks: it fills every missing block of the object from one
`store.read_verified` pass (the whole object streamed through the GCM decryptor, in order) into
block files no reader can see yet (``*.fill.tmp``: not in the cache's tables, never opened by a
read), and publishes them all -- renamed into place and entered in the disk tier -- only after
the tag checked. A failed check removes them and is the read's error (EIO): no unauthenticated
byte reaches a reader, and none is left in the cache. The reads after the verify are local hits
on the trio thread; before, every block went through the store's view spool (the plaintext
written there, read back in a worker thread, then written again into the block cache).

Blocks of the object in flight meanwhile are the fill's (`_inflight`): readers and read-ahead
wait for it and then find their block on disk (a fill sets b"" as their future's result: "look
again"). A crash mid-fill leaves ``.tmp`` files, which the next BlockCache removes (`_scan`).
Objects over half the cache are read through the store's view spool as before.
"""

from __future__ import annotations

import os
from concurrent.futures import Future

from .blocks import Block, BlockCache

_WAKE = b""  # a waiter's result after a fill: its block is on disk now, look again


class VerifiedBlockCache(BlockCache):
    def _fills(self, obj_size: int) -> bool:
        return 0 < obj_size <= self.max_bytes // 2

    def get_block(self, key: str, etag: str, obj_size: int, block: int, *,
                  run: int = 1, local_only: bool = False) -> Block:
        if not self._fills(obj_size):
            return super().get_block(key, etag, obj_size, block, run=run, local_only=local_only)
        ident = (key, etag, block)
        while True:
            data = self._local(ident, obj_size)
            if data is not None:
                return data
            if local_only:
                raise LookupError(ident)
            fut, claimed = self._claim_all(key, etag, obj_size, block)
            if claimed is not None:
                self.misses += 1
                return self._fill(key, etag, obj_size, block, claimed)
            if fut is not None and (got := fut.result()):
                return got
            # published on disk meanwhile (or evicted again at once): look again

    def _claim_all(self, key: str, etag: str, obj_size: int, block: int
                   ) -> tuple[Future[Block] | None, dict[int, Future[Block]] | None]:
        """Under the lock: the fetch of `block` in flight (wait for it), nothing (it is local
        now), or the claims of every block of the object that is not local or in flight."""
        nblocks = -(-obj_size // self.block_bytes)
        with self._lock:
            ident = (key, etag, block)
            if ident in self._inflight:
                return self._inflight[ident], None
            if ident in self._mem or self._path(key, etag, block) in self._disk:
                return None, None
            claimed: dict[int, Future[Block]] = {}
            for b in range(nblocks):
                other = (key, etag, b)
                if other in self._inflight or other in self._mem or \
                        self._path(key, etag, b) in self._disk:
                    continue
                claimed[b] = self._inflight[other] = Future()
        return None, claimed

    def _fill(self, key: str, etag: str, obj_size: int, block: int,
              claimed: dict[int, Future[Block]]) -> Block:
        self.evict(obj_size)  # room first: the object's blocks all arrive at once
        files = _FillFiles(self, key, etag, claimed)
        try:
            n = self.store.read_verified(key, etag, files.write)
            files.close()
            if n != obj_size:
                raise OSError(f"short read of {key}: {n} of {obj_size} bytes")
            return self._publish_fill(key, etag, obj_size, block, claimed, files.tmps)
        except BaseException as exc:
            files.discard()
            self._fetch_failed(key, etag, list(claimed.items()), exc)
            raise

    def _publish_fill(self, key: str, etag: str, obj_size: int, block: int,
                      claimed: dict[int, Future[Block]], tmps: dict[int, str]) -> Block:
        """The verified blocks into the disk tier, the caller's into memory too, then the
        waiters woken (they look again and find theirs)."""
        for b, tmp in tmps.items():
            path = self._path(key, etag, b)
            os.replace(tmp, path)
            start, end = self.block_range(obj_size, b)
            self._register(path, end - start)
        tmps.clear()
        start, end = self.block_range(obj_size, block)
        data = self._disk_get(self._path(key, etag, block), end - start)
        if data is None:
            raise OSError(f"{key}: block {block} vanished from the cache as it was filled")
        self._mem_put((key, etag, block), data)
        with self._lock:
            for b in claimed:
                self._inflight.pop((key, etag, b), None)
        for b, f in claimed.items():
            f.set_result(data if b == block else _WAKE)
        if self._disk_total > self.max_bytes:
            self.evict(0)
        return data


class _FillFiles:
    """A fill's plaintext, as it streams, into the temporary files of the blocks it claimed."""

    def __init__(self, cache: BlockCache, key: str, etag: str,
                 claimed: dict[int, Future[Block]]) -> None:
        self._cache = cache
        self._key, self._etag = key, etag
        self._claimed = claimed
        self._pos = 0
        self._fd = -1
        self.tmps: dict[int, str] = {}

    def write(self, data: memoryview) -> None:
        bb = self._cache.block_bytes
        while len(data):
            b = self._pos // bb
            part, data = data[:(b + 1) * bb - self._pos], data[(b + 1) * bb - self._pos:]
            if b in self._claimed:
                if b not in self.tmps:
                    self._open(b)
                _write_all(self._fd, part)
            self._pos += len(part)
            if self._pos % bb == 0:
                self.close()

    def _open(self, b: int) -> None:
        self.close()
        path = self._cache._path(self._key, self._etag, b)
        tmp = f"{path}.fill.tmp"
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.tmps[b] = tmp

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def discard(self) -> None:
        self.close()
        for tmp in self.tmps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.tmps.clear()


def _write_all(fd: int, data: memoryview) -> None:
    """A short write (a disk filling midway) loops until it raises (ENOSPC)."""
    while len(data):
        data = data[os.write(fd, data):]
