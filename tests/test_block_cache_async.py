"""`BlockCache.aget_block`: block fetches awaited on the trio thread (the CRT read path), sharing
the cache's in-flight table with the worker threads' `get_block` (docs/INTERNALS.md, "The CRT
data plane"). A stand-in store with a blocking and an awaitable ranged GET over one object."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from s3encfs.cache.blocks import BlockCache

BLOCK = 1000
BODY = os.urandom(10 * BLOCK + 123)


class TwoWayStore:
    """get_range (blocking, may be held) and aget_range (awaited); counts both."""

    awaitable_reads = True

    def __init__(self) -> None:
        self.sync_gets: list[tuple[int, int]] = []
        self.async_gets: list[tuple[int, int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail: Exception | None = None

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        self.sync_gets.append((start, end))
        self.hold.wait(10)
        return BODY[start:end]

    async def aget_range(self, key: str, start: int, end: int, *,
                         if_match: str | None = None) -> bytes:
        self.async_gets.append((start, end))
        await trio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return BODY[start:end]


def _cache(tmp_path: Path, store: TwoWayStore) -> BlockCache:
    return BlockCache(str(tmp_path), store, BLOCK, 1 << 30)  # type: ignore[arg-type]


def test_a_run_is_one_awaited_get_and_lands_in_both_tiers(tmp_path: Path) -> None:
    store = TwoWayStore()
    blocks = _cache(tmp_path, store)
    got = trio.run(lambda: blocks.aget_block("k", "e", len(BODY), 2, run=4))
    assert got == BODY[2 * BLOCK:3 * BLOCK]
    assert store.async_gets == [(2 * BLOCK, 6 * BLOCK)] and store.sync_gets == []
    for b in range(2, 6):
        assert blocks.cached("k", "e", b)
        assert blocks.get_block("k", "e", len(BODY), b, local_only=True) == \
            BODY[b * BLOCK:(b + 1) * BLOCK]
    fresh = _cache(tmp_path, store)  # the disk tier holds them: a new cache finds them
    assert fresh.get_block("k", "e", len(BODY), 5, local_only=True) == BODY[5 * BLOCK:6 * BLOCK]
    # the last block is short; a run past the end stops at the object's end
    assert trio.run(lambda: blocks.aget_block("k", "e", len(BODY), 9, run=8)) == \
        BODY[9 * BLOCK:10 * BLOCK]
    assert store.async_gets[-1] == (9 * BLOCK, len(BODY))


def test_awaited_fetch_waits_for_a_worker_threads_fetch_of_the_same_block(tmp_path: Path) -> None:
    store = TwoWayStore()
    blocks = _cache(tmp_path, store)
    store.hold.clear()
    out: dict[str, bytes] = {}
    t = threading.Thread(target=lambda: out.__setitem__(
        "thread", blocks.get_block("k", "e", len(BODY), 3, run=2)))
    t.start()

    async def main() -> None:
        while not store.sync_gets:  # the worker thread owns the fetch now
            await trio.sleep(0.005)
        async with trio.open_nursery() as n:
            async def awaited() -> None:
                out["trio"] = await blocks.aget_block("k", "e", len(BODY), 3)

            n.start_soon(awaited)
            await trio.sleep(0.05)
            assert "trio" not in out  # waiting on the thread's fetch, loop not blocked
            store.hold.set()

    trio.run(main)
    t.join(5)
    assert out["thread"] == out["trio"] == BODY[3 * BLOCK:4 * BLOCK]
    assert store.sync_gets == [(3 * BLOCK, 5 * BLOCK)] and store.async_gets == []


def test_a_thread_waits_for_an_awaited_fetch_and_errors_reach_every_waiter(
        tmp_path: Path) -> None:
    store = TwoWayStore()
    blocks = _cache(tmp_path, store)
    store.fail = OSError("boom")
    seen: list[BaseException] = []

    async def main() -> None:
        async def thread_reader() -> None:
            while not store.async_gets:
                await trio.sleep(0.001)
            try:
                await trio.to_thread.run_sync(
                    lambda: blocks.get_block("k", "e", len(BODY), 1))
            except OSError as exc:
                seen.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(thread_reader)
            with pytest.raises(OSError, match="boom"):
                await blocks.aget_block("k", "e", len(BODY), 0, run=3)

    trio.run(main)
    # the thread either waited on the failed fetch (same error) or fetched block 1 itself
    assert [str(e) for e in seen] in (["boom"], [])
    assert store.async_gets == [(0, 3 * BLOCK)]
    assert not blocks.cached("k", "e", 0) and not blocks.cached("k", "e", 2)
    store.fail = None
    assert trio.run(lambda: blocks.aget_block("k", "e", len(BODY), 0)) == BODY[:BLOCK]


def test_a_short_body_is_an_error_not_a_short_block(tmp_path: Path) -> None:
    store = TwoWayStore()
    blocks = _cache(tmp_path, store)

    async def short(key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        return BODY[start:end - 1]

    store.aget_range = short  # type: ignore[method-assign]
    with pytest.raises(OSError, match="short read"):
        trio.run(lambda: blocks.aget_block("k", "e", len(BODY), 0, run=2))
    assert not blocks.cached("k", "e", 0)
