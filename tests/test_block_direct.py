"""The disk tier's block files are written around the page cache (cache/direct.py, O_DIRECT).

A mounted cold read of 512 MiB spent half of the daemon's CPU in the thread writing the disk
tier, most of it the kernel copying each block into page-cache pages (docs/BENCHMARKS.md). Now
a block file is written from a page-aligned buffer with O_DIRECT: after a cold read the block
files hold exactly the object's bytes and none of their pages is in the page cache (before:
every page was). A filesystem that refuses O_DIRECT still gets every block, buffered.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from pathlib import Path
from typing import Any

import pytest
from inprocess import plain_or_client_core, run_core, uploaded_random_file

from s3encfs.cache import direct
from s3encfs.cache.direct import DirectWriter
from s3encfs.fs.core import FsCore

MiB = 1024 * 1024
_libc = ctypes.CDLL(None, use_errno=True)


def resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache (mincore over a private mapping of the file)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        anchor = ctypes.c_char.from_buffer(m)
        try:
            if _libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size),
                             vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del anchor
    return sum(v & 1 for v in vec)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_cold_read_leaves_its_blocks_on_disk_exactly_and_out_of_the_page_cache(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch,
                                12 * MiB + 12345)  # a partial last block too
    cold = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")

    async def read_all(c: FsCore) -> tuple[bytes, Any]:
        node = await c.lookup(c.root, "f")
        got = b"".join([await c.read(node, off, MiB) for off in range(0, len(data), MiB)])
        return got, node.obj

    got, obj = run_core(cold, read_all, close=False)
    assert got == data
    files = sorted((p for p in (tmp_path / "r" / "blocks").rglob("*.*") if p.is_file()),
                   key=lambda p: int(p.name.rsplit(".", 1)[1].split("+")[0]))
    # one file per GET: a pack of the run's blocks (STEM.F+NxSIZE) or a lone block (STEM.B)
    assert 1 < len(files) < -(-obj.obj_size // cold.blocks.block_bytes)
    # written around the page cache: before, every page of every block file was resident
    assert sum(resident_pages(p) for p in files) == 0
    # and the disk tier holds the object's bytes exactly (plaintext only in plain mode)
    assert b"".join(p.read_bytes() for p in files) == \
        cold.store.get_range(obj.key, 0, obj.obj_size)
    cold.close()


@pytest.mark.parametrize("size", [0, 5, 4096, MiB, MiB + 123])
def test_the_direct_writer_writes_exactly_the_bytes(size: int, tmp_path: Path) -> None:
    body = os.urandom(size)
    w = DirectWriter()
    path = tmp_path / f"b{size}"
    w.write(str(path), [body])
    w.write(str(path), [body[: size // 2]])  # rewritten shorter: no stale tail
    assert path.read_bytes() == body[: size // 2]
    assert w.enabled  # ext4/xfs take O_DIRECT


def test_a_filesystem_that_refuses_o_direct_gets_buffered_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refusing(path: Any, flags: int, *a: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(direct.os, "open", refusing)
    w = DirectWriter()
    body = os.urandom(MiB + 1)
    w.write(str(tmp_path / "a"), [body])
    assert (tmp_path / "a").read_bytes() == body and not w.enabled
    w.write(str(tmp_path / "b"), [body[:10], body[10:20]])  # no second try
    assert (tmp_path / "b").read_bytes() == body[:20]
    w.write(str(tmp_path / "b"), [body[:10]])
    assert (tmp_path / "b").read_bytes() == body[:10]
