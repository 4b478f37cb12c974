"""The block cache's memory tier holds blocks as slices of their run's buffer (no copy per
block, cache/memtier.py) and bounds the buffers it keeps alive, not the slices: a run is charged
in full while any of its blocks is held, whichever blocks the LRU keeps."""

from __future__ import annotations

import os

from s3encfs.cache.memtier import MemTier

UNIT = 1000


def _run(name: str, n: int) -> list[tuple[tuple[str, str, int], memoryview]]:
    buf = os.urandom(n * UNIT)
    view = memoryview(buf).toreadonly()
    return [((name, "e", b), view[b * UNIT:(b + 1) * UNIT]) for b in range(n)]


def test_a_run_is_charged_once_and_released_with_its_last_block() -> None:
    tier = MemTier(100 * UNIT)
    run = _run("a", 8)
    for ident, v in run:
        tier.put(ident, v)
    assert tier.total == 8 * UNIT and len(tier) == 8
    for ident, _v in run[:7]:
        tier.pop(ident)
        assert tier.total == 8 * UNIT  # one block left keeps the whole buffer alive
    tier.pop(run[7][0])
    assert tier.total == 0 and len(tier) == 0
    tier.put(("b", "e", 0), b"x" * UNIT)  # a block read from disk is its own buffer
    assert tier.total == UNIT


def _buffers_held(tier: MemTier) -> int:
    """Bytes of the distinct buffers the tier's blocks keep alive."""
    owners = {id(v.obj): len(v.obj) if isinstance(v, memoryview) else len(v)
              for v in tier._blocks.values()}
    return sum(owners.values())


def test_the_limit_bounds_buffers_kept_alive_by_single_blocks() -> None:
    tier = MemTier(16 * UNIT)
    runs = []
    for r in range(6):
        run = _run(f"r{r}", 8)
        runs.append(run)
        for ident, v in run:
            tier.put(ident, v)
        for old in runs:  # one block of every run so far stays hot
            tier.get(old[3][0])
        # counting slices would allow 16 hot blocks of 16 different 8-unit buffers (128 units)
        assert tier.total == _buffers_held(tier) <= 16 * UNIT


def test_clear_forgets_everything() -> None:
    tier = MemTier(100 * UNIT)
    for ident, v in _run("a", 4):
        tier.put(ident, v)
    tier.clear()
    assert tier.total == 0 and len(tier) == 0 and ("a", "e", 0) not in tier
