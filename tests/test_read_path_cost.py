"""The trio thread's work per read stays small (issue 10: client mode ≥ 90% of plain on W2).

A profile of a cold sequential read (bench/read_path.py) showed the read-ahead bookkeeping
ahead of the decryption: every 128 KiB read looked at each block of its 32-block window again
(a SHA-256 and a path join per block), and asked the kernel to read ahead (`advise`: open,
fadvise, close) blocks that were only in memory. Now the window is looked at once per block the
reader enters, and only blocks on disk only are advised — still done for a read from the disk
tier. In process, against SeaweedFS, with the CRT client the mount uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inprocess import plain_or_client_core, run_core, uploaded_random_file

from s3encfs.fs.core import FsCore

MiB = 1024 * 1024
READ = 128 * 1024  # the kernel's read size on a FUSE mount


def _counting(core: FsCore, calls: dict[str, int]) -> None:
    for name in ("where", "cached", "advise"):  # a lookup is either of the first two
        real = getattr(core.blocks, name, None)
        if real is None:
            continue

        def wrapped(*a: Any, _real: Any = real, _name: str = name) -> Any:
            calls["advise" if _name == "advise" else "where"] += 1
            return _real(*a)

        setattr(core.blocks, name, wrapped)


async def _read_all(core: FsCore, size: int) -> bytes:
    node = await core.lookup(core.root, "f")
    return b"".join([await core.read(node, off, READ) for off in range(0, size, READ)])


@pytest.mark.parametrize("mode", ["none", "client"])
def test_read_ahead_bookkeeping_once_per_block(mode: str, s3server: Any, bucket: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch,
                                24 * MiB)
    cold = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    calls = {"where": 0, "advise": 0}
    _counting(cold, calls)
    assert run_core(cold, lambda c: _read_all(c, len(data))) == data
    reads = len(data) // READ
    # before: ~8 per read (the whole window at every read), and an advise for every block in
    # flight or in memory; now at most the window once per block entered (≈ 1.5 per read here)
    assert calls["where"] <= 3 * reads, calls
    assert calls["advise"] == 0, calls  # every block was in memory when the reader got to it
    # a fresh mount over the same cache: blocks on disk only are still advised to the kernel
    warm = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    calls = {"where": 0, "advise": 0}
    _counting(warm, calls)
    assert run_core(warm, lambda c: _read_all(c, len(data))) == data
    assert calls["advise"] >= 8, calls
    # served from the disk tier (a GET or two: the root listing's index, not the 24 blocks)
    assert warm.store.stats.as_dict()["requests"].get("GetObject", 0) <= 2


def test_a_plain_read_within_a_block_is_a_view_of_the_cached_block_not_a_copy(
        s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each cold byte used to be copied three times in Python before the FUSE reply: the run
    split into blocks, the block sliced into the read, the read joined. Now a plain read within
    one block is a read-only view of the cached block (pyfuse3 replies from any buffer), and a
    run's blocks are views of the run's one buffer (cache/memtier.py)."""
    data = uploaded_random_file(s3server, bucket, "none", tmp_path, monkeypatch,
                                20 * MiB + 5)
    cold = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")

    async def job(c: FsCore) -> list[Any]:
        node = await c.lookup(c.root, "f")
        got = [await c.read(node, off, MiB) for off in range(0, len(data), MiB)]
        got.append(await c.read(node, 3 * MiB - 10, 20))  # across two blocks: joined bytes
        return got

    got = run_core(cold, job)
    assert b"".join(got[:-1]) == data and got[-1] == data[3 * MiB - 10:3 * MiB + 10]
    views = [g for g in got[:-1] if isinstance(g, memoryview)]
    assert len(views) == len(got) - 1 and all(v.readonly for v in views)
    # blocks of one run share its buffer: 21 reads, a handful of GETs' buffers behind them
    assert len({id(v.obj) for v in views}) <= cold.store.stats.as_dict()["requests"].get(
        "GetObject", 0)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_sequential_reader_looks_at_each_block_of_its_window_once(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A mounted `dd bs=1M` sends 1 MiB reads: one per block, so "once per block entered"
    still looked again at every block of the 48-block window already fetched on every read.
    The window is now scanned on from where the last read's scan stopped."""
    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch, 40 * MiB)
    cold = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    calls = {"where": 0, "advise": 0}
    _counting(cold, calls)

    async def read_all(core: FsCore) -> bytes:
        node = await core.lookup(core.root, "f")
        return b"".join([await core.read(node, off, MiB) for off in range(0, len(data), MiB)])

    assert run_core(cold, read_all) == data
    blocks = -(-len(data) // cold.blocks.block_bytes)
    assert calls["where"] <= 2 * blocks, calls  # before: 147 here (52 after)
