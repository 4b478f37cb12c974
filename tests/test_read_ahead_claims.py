"""A cold sequential read is fetched in whole read-ahead GETs, and a reader never waits for a
block's disk-tier copy (issue 16, W2).

Before, a read-ahead run was claimed in the block cache only when its task first ran: the reader
got to the run's first block before that, sent a short GET of its own (`RA_MISS` blocks), and the
run's task then found its first block in flight and fetched nothing, so the next miss came four
blocks later — a chain of 4-block GETs, each one awaited by the reader until its O_DIRECT
disk-tier write had finished (bench/read_path.py showed 15 of 41 GETs sent by the reader, and
the reader waiting while no GET was in flight). Now the window claims each run as it schedules
it, and the reader's own fetch leaves the disk write behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from inprocess import plain_or_client_core, run_core, uploaded_random_file

from s3encfs.cache.blocks import BlockCache
from s3encfs.fs import reader
from s3encfs.fs.core import FsCore

MiB = 1024 * 1024
READ = 128 * 1024


def _record_gets(core: FsCore) -> list[tuple[int, int]]:
    gets: list[tuple[int, int]] = []
    real = core.store.aget_range

    async def aget_range(key: str, start: int, end: int, **kw: Any) -> bytes:
        gets.append((start, end))
        return await real(key, start, end, **kw)

    core.store.aget_range = aget_range  # type: ignore[method-assign]
    return gets


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_cold_sequential_read_is_whole_read_ahead_gets(mode: str, s3server: Any, bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch,
                                40 * MiB + 12345)
    core = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    gets = _record_gets(core)

    async def read_all(c: FsCore) -> bytes:
        node = await c.lookup(c.root, "f")
        return b"".join([bytes(await c.read(node, off, READ))
                         for off in range(0, len(data), READ)])

    assert run_core(core, read_all) == data
    per_block = core.block_bytes
    obj_size = max(end for _s, end in gets)
    blocks = [((end - start) + per_block - 1) // per_block for start, end in sorted(gets)]
    # the first read's own block, then read-ahead runs of exactly RA_GET blocks (the last one
    # shorter at the end of the object); no byte fetched twice
    assert blocks[0] == 1, blocks
    assert all(n == reader.RA_GET for n in blocks[1:-1]), blocks
    assert sum(end - start for start, end in gets) == obj_size, sorted(gets)


class _HeldWrites(BlockCache):
    """A block cache whose disk-tier writes wait until `release` is set."""

    def __init__(self, directory: str, store: Any) -> None:
        super().__init__(directory, store, 1000, 1 << 30)
        self.release = threading.Event()

    def write_disk(self, key: str, etag: str, chunks: Any) -> None:
        self.release.wait(10)
        super().write_disk(key, etag, chunks)


class _Store:
    awaitable_reads = True
    body = os.urandom(8000)

    async def aget_range(self, key: str, start: int, end: int, **kw: Any) -> bytes:
        return self.body[start:end]


def test_a_reader_does_not_wait_for_the_disk_tier_write(tmp_path: Path) -> None:
    blocks = _HeldWrites(str(tmp_path), _Store())

    async def main() -> None:
        with trio.fail_after(5):  # before: held until the disk write was released
            got = await blocks.aget_block("k", "e", 8000, 2, run=3, wait_disk=False)
        assert got == _Store.body[2000:3000]
        assert blocks.where("k", "e", 3) == "mem" and blocks.where("k", "e", 5) is None
        blocks.release.set()
        while blocks.where("k", "e", 4) != "disk" or blocks._behind:  # written behind
            blocks._mem.clear()
            await trio.sleep(0.01)

    trio.run(main)
    fresh = BlockCache(str(tmp_path), _Store(), 1000, 1 << 30)  # type: ignore[arg-type]
    for b in (2, 3, 4):
        assert fresh.get_block("k", "e", 8000, b, local_only=True) == \
            _Store.body[b * 1000:(b + 1) * 1000]


def test_an_awaiting_caller_still_gets_its_blocks_on_disk_first(tmp_path: Path) -> None:
    blocks = _HeldWrites(str(tmp_path), _Store())
    blocks.release.set()
    trio.run(lambda: blocks.aget_block("k", "e", 8000, 0, run=2))
    assert blocks.where("k", "e", 1) == "mem"
    blocks._mem.clear()
    assert blocks.where("k", "e", 0) == blocks.where("k", "e", 1) == "disk"


def test_claims_of_read_ahead_stopped_before_its_gets_are_failed_not_left_pending(
        s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A reader waiting on a claimed run must not hang when the run's task never sends its GET
    (cancelled while waiting for a download slot, e.g. at unmount): its waiters get an error."""
    uploaded_random_file(s3server, bucket, "none", tmp_path, monkeypatch, 20 * MiB)
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")
    claimed: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.lookup(core.root, "f")
            for _ in range(int(core.prefetch_limiter.total_tokens)):  # every slot busy
                await core.prefetch_limiter.acquire_on_behalf_of(object())
            core._prefetch(node.obj, 0, 16)
            claimed.extend(core.blocks._inflight.values())
            await trio.sleep(0.05)
            assert claimed and not any(f.done() for f in claimed)  # waiting for a slot
            nursery.cancel_scope.cancel()

    trio.run(main)
    core.close()
    assert len(claimed) == 16
    assert all(f.done() and isinstance(f.exception(), OSError) for f in claimed)
    assert not core.blocks._inflight
