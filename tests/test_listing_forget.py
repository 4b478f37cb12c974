"""Issue 15 (rsync's mkstemp failed with ENOENT under load): a directory the kernel forgot is
made again from a listing, and its first listing may come from a subtree LIST (fast list)
taken earlier.  One taken before this mount's newest names under it landed lacked them: rsync's
`mkstemp "d/e/k/.f.XXXXXX"` then got ENOENT for a directory it had just made.  And a name
forgotten while its directory's LIST ran, having landed after the LIST was asked, was neither
in the listing nor a node to keep: ENOENT for --dir-ttl.

The first is reproduced on a real mount too (the kernel's own FORGETs, after `drop_caches`);
both are driven in-process (tests/test_model_inprocess.py): the kernel's FORGETs are sent by hand,
after everything went up, exactly as `drop_caches` sends them.
"""

# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
from __future__ import annotations

import math
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from mounting import keyenv, mount_factory  # noqa: F401
from test_model_inprocess import CTX, Driver, filesystem, make_codec

from s3encfs.fs.nodes import Node
from s3encfs.store.s3 import ObjectStore


async def _mkdir(fs: Driver, path: str) -> int:
    parent, name = await fs.split(path)
    return int((await fs.ops.mkdir(parent, name, stat.S_IFDIR | 0o755, CTX)).st_ino)


async def _write(fs: Driver, path: str, data: bytes) -> int:
    parent, name = await fs.split(path)
    fi, e = await fs.ops.create(parent, name, stat.S_IFREG | 0o644, os.O_RDWR, CTX)
    await fs.ops.write(fi.fh, 0, data)
    await fs.ops.release(fi.fh)
    return int(e.st_ino)


async def _forget_all(fs: Driver, top: Node) -> None:
    """The kernel drops every dentry under `top` (leaves first) and forgets their inodes."""
    order: list[Node] = []
    stack = [top]
    while stack:
        n = stack.pop()
        order.append(n)
        stack.extend((n.children or {}).values())
    await fs.ops.forget([(n.inode, n.lookups) for n in reversed(order) if n.lookups])


async def _scenario(fs: Driver) -> None:
    core = fs.ops.core
    await _mkdir(fs, "P")
    for d in ("P/d", "P/d/e", "P/h"):
        await _mkdir(fs, d)
    await _write(fs, "P/d/e/f1", b"one")
    await core.flush_all()
    # h is forgotten and made again from P's listing: a cold directory, so the next walk of P
    # lists P's whole subtree in one LIST (dirprefetch.py), which also holds P/d/ and P/d/e/
    p = core.root.children["P"]
    await _forget_all(fs, p.children["h"])
    fh = await fs.ops.opendir(await fs.ino("P"), CTX)
    await fs.ops.releasedir(fh)
    with trio.fail_after(30):
        while core._fast_lists or core._after_fast_list:
            await trio.sleep(0.01)
    # newer than that subtree listing: a file and a directory rsync makes next
    await _write(fs, "P/d/e/f2", b"two")
    await _mkdir(fs, "P/d/e/k")
    await core.flush_all()
    await _forget_all(fs, p.children["d"])  # drop_caches, with everything in S3
    assert "d" not in p.children
    # rsync's receiver goes on: every name this mount made is there
    assert (await fs.ops.getattr(await fs.ino("P/d/e/f2"), CTX)).st_size == 3
    kino = await fs.ino("P/d/e/k")
    fi, _e = await fs.ops.create(kino, b".f.XXXXXX", stat.S_IFREG | 0o600, os.O_RDWR, CTX)
    await fs.ops.release(fi.fh)
    await core.flush_all()


def _store(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """The bucket's store, credentials from the test server's environment."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return ObjectStore(bucket, endpoint_url=s3server.endpoint)


async def _run(store: ObjectStore, mode: str, cache: Path) -> None:
    async with filesystem(store, make_codec(mode), "", cache, [False]) as fs:
        await _scenario(fs)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_directory_made_again_never_takes_a_subtree_listing_older_than_its_names(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    store = _store(s3server, bucket, monkeypatch)
    trio.run(_run, store, mode, tmp_path / "cache")  # ENOENT (in an ExceptionGroup) before


async def _forgotten_during_a_list(fs: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    """P's LIST is asked before f lands; f lands, the kernel forgets it, then S3 answers."""
    from s3encfs.fs import tree

    core = fs.ops.core
    await _mkdir(fs, "P")
    await core.flush_all()
    p = core.root.children["P"]
    await _write(fs, "P/f", b"data")  # its upload waits for the flush below
    answered, go_on = trio.Event(), threading.Event()
    real = tree.load_directory

    def held(*args: Any) -> Any:
        out = real(*args)
        trio.from_thread.run_sync(answered.set)
        go_on.wait(30)
        return out

    monkeypatch.setattr(tree, "load_directory", held)
    p.listed_at = -math.inf  # P's listing has expired
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.ensure_listed, p)
        await answered.wait()  # S3 answered without f
        await core.flush_all()  # f lands and is clean
        await _forget_all(fs, p.children["f"])
        go_on.set()
    monkeypatch.setattr(tree, "load_directory", real)
    assert (await fs.ops.getattr(await fs.ino("P/f"), CTX)).st_size == 4


@pytest.mark.parametrize("mode", ["none", "client"])
def test_a_name_forgotten_while_its_directory_is_listed_stays_visible(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    store = _store(s3server, bucket, monkeypatch)

    async def run() -> None:
        async with filesystem(store, make_codec(mode), "", tmp_path / "cache", [False]) as fs:
            await _forgotten_during_a_list(fs, monkeypatch)

    trio.run(run)


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _drop_caches() -> None:
    for _ in range(4):  # a directory's dentry goes once its children's have gone
        DROP_CACHES.write_text("2")
        time.sleep(0.3)


@pytest.mark.skipif(not os.access(DROP_CACHES, os.W_OK), reason="needs root (drop_caches)")
def test_names_made_here_survive_drop_caches_after_a_subtree_listing(bucket, mount_factory):
    m = mount_factory(bucket, "none", extra=["--dir-ttl", "20", "--attr-timeout", "0.1",
                                             "--upload-delay", "0"])
    top = m.mountpoint
    (top / "P/d/e").mkdir(parents=True)
    (top / "P/h").mkdir()
    m.flush()
    pin = subprocess.Popen(["sleep", "60"], cwd=top / "P/d/e")  # P, d, e stay in the dcache
    try:
        _drop_caches()  # h is forgotten: P's next read lists P's subtree (P/d/, P/d/e/ too)
        os.listdir(top / "P")
        time.sleep(1.5)
        (top / "P/d/e/f2").write_text("2")
        (top / "P/d/e/k").mkdir()
        m.flush()
    finally:
        pin.kill()
        pin.wait()
    _drop_caches()  # everything is in S3: P, d, e are forgotten and made again
    assert [(top / "P/d/e/f2").exists(), (top / "P/d/e/k").exists()] == [True, True]


async def _index_after_forgetting_siblings(fs: Driver) -> None:
    """P/b (0700) and P/f land; the kernel forgets both (clean: they leave memory and P's
    listing); then a new name in P rewrites P's index.  The index is where b's attrs live and
    where f's entry spares a HEAD: written from the incomplete listing, it dropped both, and a
    cold mount showed b as 0755 (`.d..p.....` on every rsync after a `drop_caches`)."""
    from s3encfs.fs.listing import read_index

    core = fs.ops.core
    await _mkdir(fs, "P")
    pino = await fs.ino("P")
    await fs.ops.mkdir(pino, b"b", stat.S_IFDIR | 0o700, CTX)
    await _write(fs, "P/f", b"data")
    await core.flush_all()
    p = core.root.children["P"]
    await _write(fs, "P/g", b"new")  # P's index is due again, once g lands
    await _forget_all(fs, p.children["b"])
    await _forget_all(fs, p.children["f"])
    assert sorted(p.children) == ["g"] and p.listed_at == -math.inf
    await core.flush_all()
    index = read_index(core.store, core.layout, ("P",))
    assert index is not None
    assert core.codec.encode_name("P", "b") in index.dirs
    assert sorted(index.files) == sorted(core.codec.encode_name("P", n) for n in ("f", "g"))


@pytest.mark.parametrize("mode", ["none", "client"])
def test_an_index_written_after_a_forget_keeps_the_forgotten_names(
        mode: str, s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    store = _store(s3server, bucket, monkeypatch)
    codec = make_codec(mode)

    async def run() -> None:
        async with filesystem(store, codec, "", tmp_path / "cache", [False]) as fs:
            await _index_after_forgetting_siblings(fs)
        async with filesystem(store, codec, "", tmp_path / "cold", [False]) as fs:
            b = await fs.ops.getattr(await fs.ino("P/b"), CTX)
            assert stat.S_IMODE(b.st_mode) == 0o700
            assert (await fs.ops.getattr(await fs.ino("P/f"), CTX)).st_size == 4

    trio.run(run)


def _tree_with_modes(src: Path) -> None:
    """Directories of three modes and set mtimes, each with files: what a backup holds."""
    for i in range(24):
        d = src / f"d{i:02}" / f"s{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(12):
            (d / f"f{j}").write_bytes(b"x" * (j * 37))
            (d.parent / f"g{j}").write_bytes(b"y" * j)
    for k, d in enumerate(sorted(p for p in src.rglob("*") if p.is_dir())):
        d.chmod((0o700, 0o750, 0o755)[k % 3])
        os.utime(d, (1_600_000_000 + k, 1_600_000_000 + k))


@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.access(DROP_CACHES, os.W_OK), reason="needs root (drop_caches)")
@pytest.mark.parametrize("mode", ["none", "client"])
def test_an_rsync_under_drop_caches_reads_back_unchanged_from_a_cold_mount(
        mode: str, bucket: str, mount_factory: Any, tmp_path: Path) -> None:
    """The kernel forgets landed names while rsync still fills their directories: every index
    rewritten meanwhile must keep them (subdirectory attrs live only there)."""
    src = tmp_path / "src"
    _tree_with_modes(src)
    m = mount_factory(bucket, mode, extra=["--upload-delay", "0.3"])
    stop = threading.Event()

    def forget_loop() -> None:
        while not stop.is_set():
            os.sync()
            DROP_CACHES.write_text("2")
            time.sleep(0.05)

    t = threading.Thread(target=forget_loop, daemon=True)
    t.start()
    try:
        subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True, timeout=240)
        m.flush()
    finally:
        stop.set()
        t.join()
    m.stop()
    cold = mount_factory(bucket, mode, name="cold")
    out = subprocess.run(["rsync", "-a", "-n", "--itemize-changes", f"{src}/",
                          f"{cold.mountpoint}/"], check=True, capture_output=True, text=True,
                         timeout=240).stdout
    assert out == ""
