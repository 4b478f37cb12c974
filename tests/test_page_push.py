# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""A file read at random offsets is fetched whole and its pages are stored into the kernel's
page cache as they land (fs/pagepush.py, FUSE_NOTIFY_STORE): W3's 4 KiB reads then cost no FUSE
request. Before, each one was a FUSE read (~140 µs of the daemon's CPU). The stored bytes are
the object's plaintext (authenticated in client mode); a writer stops the stores and waits for
one in flight, so a writer's bytes are never overwritten."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from inprocess import plain_or_client_core, run_core, uploaded_random_file
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

from s3encfs.control import control_socket_path, query
from s3encfs.fs.core import FsCore

MiB = 1024 * 1024
SIZE = 16 * MiB


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_randomly_read_file_is_stored_whole_into_the_kernel_until_a_writer_opens_it(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch,
                                SIZE)
    core = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    stored: dict[int, bytes] = {}
    core.pages.store_fn = lambda inode, off, buf: stored.__setitem__(off, bytes(buf))

    async def job(c: FsCore) -> tuple[int, int]:
        node = await c.lookup(c.root, "f")
        await c.open(node, False)
        for off in (5 * MiB + 100, 1 * MiB + 7, 12 * MiB):  # the third random read
            assert await c.read(node, off, 4096) == data[off:off + 4096]
        with trio.fail_after(120):
            while sum(map(len, stored.values())) < SIZE:
                await trio.sleep(0.05)
        whole = len(stored)
        await c.open(node, True)  # a writer: no more stores
        await c.write(node, 0, b"w" * 4096)
        node.random_reads = 0
        for off in (9 * MiB, 2 * MiB, 14 * MiB):
            await c.read(node, off, 4096)
        await trio.sleep(0.5)
        await c.release(node, True)
        await c.release(node, False)
        return whole, len(stored)

    whole, after = run_core(core, job)
    # every byte of the object's plaintext, each range where it belongs, exactly once
    assert b"".join(stored[o] for o in sorted(stored)) == data
    assert whole == after  # nothing stored once a writer had the file open


def _status(mnt: Path) -> dict[str, Any]:
    return query(control_socket_path(str(mnt)), "status")


def _fuse_reads(mnt: Path) -> int:
    return int(_status(mnt)["fuse_requests"].get("read", 0))


@pytest.mark.parametrize("mode", ["none", "client"])
def test_random_reads_are_served_from_the_stored_pages(mode, bucket, mount_factory):  # type: ignore[no-untyped-def]
    data = os.urandom(SIZE)
    m = mount_factory(bucket, mode, name=f"p-{mode}", prefix=f"{mode}/")
    (m.mountpoint / "f").write_bytes(data)
    subprocess.run([*S3ENCFS, "flush", str(m.mountpoint)], env=m.env, check=True,
                   capture_output=True, timeout=300)
    rng = random.Random(7)
    counts = []
    # other tests (and benchmarks) on this machine drop every page cache now and then
    # (/proc/sys/vm/drop_caches): a cold mount again when that took the stored pages
    for _attempt in range(3):
        m.umount()
        shutil.rmtree(m.cache_dir)
        m.start()
        with open(m.mountpoint / "f", "rb", buffering=0) as f:
            fd = f.fileno()
            for _ in range(3):  # the third random read fetches the file whole
                off = rng.randrange(0, SIZE - 4096) & ~4095
                assert os.pread(fd, 4096, off) == data[off:off + 4096]
            deadline = time.monotonic() + 120
            while _status(m.mountpoint)["pages_pushed_bytes"] < SIZE and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            before = _fuse_reads(m.mountpoint)
            for _ in range(300):
                off = rng.randrange(0, SIZE - 4096) & ~4095
                assert os.pread(fd, 4096, off) == data[off:off + 4096], off
            counts.append(_fuse_reads(m.mountpoint) - before)
        if counts[-1] <= 15:
            break
    # before: one FUSE read per pread (300 of 300); now the kernel answers them
    assert min(counts) <= 15, counts
    # a writer's bytes win over the stored pages, and the file stays whole
    with open(m.mountpoint / "f", "r+b") as f:
        f.seek(5 * MiB)
        f.write(b"w" * 8192)
    want = data[:5 * MiB] + b"w" * 8192 + data[5 * MiB + 8192:]
    assert (m.mountpoint / "f").read_bytes() == want
    m.umount()


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_runs_pages_are_stored_from_memory_without_waiting_for_its_disk_write(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Before, a read-ahead run's pages were stored only after its disk-tier write; by then
    other runs had often pushed its blocks out of the memory tier, and the trio thread read
    them back from disk (16 % of a mounted W3's daemon CPU was that pread). Now the store
    starts as the GET is done: here every page is stored while every disk write is held."""
    import threading

    data = uploaded_random_file(s3server, bucket, mode, tmp_path, monkeypatch, SIZE)
    core = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")
    stored: dict[int, bytes] = {}
    core.pages.store_fn = lambda inode, off, buf: stored.__setitem__(off, bytes(buf))
    held = threading.Event()
    real_write = core.blocks.write_disk

    def held_write(*args: Any) -> None:
        held.wait(60)
        real_write(*args)

    monkeypatch.setattr(core.blocks, "write_disk", held_write)

    async def job(c: FsCore) -> int:
        node = await c.lookup(c.root, "f")
        await c.open(node, False)
        try:
            for off in (5 * MiB + 100, 1 * MiB + 7, 12 * MiB):  # the third random read
                assert await c.read(node, off, 4096) == data[off:off + 4096]
            with trio.move_on_after(30):
                while sum(map(len, stored.values())) < SIZE:
                    await trio.sleep(0.05)
            return sum(map(len, stored.values()))
        finally:
            held.set()
            await c.release(node, False)

    assert run_core(core, job) == SIZE  # all of it, no disk write done yet
    assert b"".join(stored[o] for o in sorted(stored)) == data
