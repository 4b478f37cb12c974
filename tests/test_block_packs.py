"""Block packs (cache/disktier.py): the consecutive blocks one GET fetched are one disk-tier file.

A cold read created one file per block; on this machine's ext4 a create cost ~0.3 ms of kernel
CPU, a fifth of a mounted cold read's daemon CPU (docs/BENCHMARKS.md, session 13). Now a run of
blocks is one file ``STEM.F+NxSIZE``. What must not change: every block reads back exactly
(whole, in part, after a restart), a pack that does not match the cache's block size or is
too short is never served, and eviction and drops keep the index and the files in step.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from s3encfs.cache.blocks import BlockCache

BLOCK = 4096 + 100  # not a multiple of the O_DIRECT alignment (client mode's blocks are not)
BODY = os.urandom(10 * BLOCK + 123)


class Store:
    awaitable_reads = True

    def __init__(self) -> None:
        self.gets: list[tuple[int, int]] = []

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        self.gets.append((start, end))
        return BODY[start:end]

    async def aget_range(self, key: str, start: int, end: int, *,
                         if_match: str | None = None) -> bytes:
        return self.get_range(key, start, end)


def _cache(tmp_path: Path, store: Store | None = None, limit: int = 1 << 30) -> BlockCache:
    return BlockCache(str(tmp_path), store or Store(), BLOCK, limit)  # type: ignore[arg-type]


def _files(tmp_path: Path) -> list[str]:
    return sorted(p.name.split(".", 1)[1] for p in (tmp_path / "blocks").rglob("*.*"))


def _fetch(blocks: BlockCache, block: int, run: int) -> None:
    trio.run(lambda: blocks.aget_block("k", "e", len(BODY), block, run=run))


def _block(b: int) -> bytes:
    return BODY[b * BLOCK:(b + 1) * BLOCK]


def test_a_run_is_one_file_and_every_block_reads_back_exactly(tmp_path: Path) -> None:
    blocks = _cache(tmp_path)
    _fetch(blocks, 3, 8)  # blocks 3..10, the short last block of the object included
    assert _files(tmp_path) == [f"3+8x{BLOCK}"]
    for b in range(3, 11):
        assert blocks.where("k", "e", b) == "mem"
    blocks._mem.clear()
    for b in range(3, 11):
        assert blocks.where("k", "e", b) == "disk"
        # a part of a block from disk (a random read), then the whole block
        assert blocks.read_part("k", "e", len(BODY), b, 7, 99) == _block(b)[7:99]
        assert blocks.get_block("k", "e", len(BODY), b, local_only=True) == _block(b)
    again = _cache(tmp_path)  # a new mount finds the pack's blocks, sizes and offsets
    assert again._disk_total == len(BODY) - 3 * BLOCK
    for b in range(3, 11):
        assert again.get_block("k", "e", len(BODY), b, local_only=True) == _block(b)
    assert blocks.store.gets == [(3 * BLOCK, len(BODY))]  # type: ignore[attr-defined]


def test_a_lone_block_is_a_file_of_its_own(tmp_path: Path) -> None:
    blocks = _cache(tmp_path)
    _fetch(blocks, 0, 1)
    _fetch(blocks, 1, 2)
    assert _files(tmp_path) == ["0", f"1+2x{BLOCK}"]


def test_a_pack_of_another_block_size_or_too_short_is_never_served(tmp_path: Path) -> None:
    blocks = _cache(tmp_path)
    _fetch(blocks, 0, 3)
    pack = next((tmp_path / "blocks").rglob(f"*.0+3x{BLOCK}"))
    other = pack.with_name(pack.name.replace(f"x{BLOCK}", f"x{BLOCK + 1}"))
    os.rename(pack, other)  # the same bytes, named for another block size
    fresh = _cache(tmp_path)
    assert fresh.where("k", "e", 0) is None and not other.exists() and fresh._disk_total == 0
    _fetch(blocks, 4, 3)
    pack = next((tmp_path / "blocks").rglob(f"*.4+3x{BLOCK}"))
    os.truncate(pack, 2 * BLOCK)  # the last block gone: not a pack of three blocks
    fresh = _cache(tmp_path)
    assert fresh.where("k", "e", 4) is None and not pack.exists()


def test_eviction_and_drops_take_a_pack_whole(tmp_path: Path) -> None:
    blocks = _cache(tmp_path, limit=7 * BLOCK)
    _fetch(blocks, 0, 4)
    _fetch(blocks, 4, 4)  # over the limit: the oldest pack goes, all four of its blocks
    assert _files(tmp_path) == [f"4+4x{BLOCK}"]
    assert blocks._disk_total == 4 * BLOCK and sorted(blocks._packs) == sorted(
        blocks._path("k", "e", b) for b in range(4, 8))
    blocks._mem.clear()
    assert blocks.where("k", "e", 0) is None and blocks.where("k", "e", 5) == "disk"
    blocks.invalidate("k", "e", 6)  # one block dropped: its pack with it, index and file
    assert _files(tmp_path) == [] and blocks._disk_total == 0 and not blocks._members
    assert blocks.get_block("k", "e", len(BODY), 6) == _block(6)  # fetched again


def test_a_block_written_again_replaces_its_pack_and_the_index_stays_exact(
        tmp_path: Path) -> None:
    blocks = _cache(tmp_path)
    _fetch(blocks, 0, 3)
    chunk = memoryview(_block(1)).toreadonly()
    blocks.write_disk("k", "e", [(1, chunk), (2, memoryview(_block(2)))])
    # blocks 1-2 are a new pack; block 0's old pack went with its other blocks
    assert _files(tmp_path) == [f"1+2x{BLOCK}"]
    assert blocks._disk_total == 2 * BLOCK
    blocks._mem.clear()
    assert blocks.where("k", "e", 0) is None
    assert blocks.get_block("k", "e", len(BODY), 2, local_only=True) == _block(2)
