"""Requests in flight at WAN latency (issue 16, 20 ms RTT): what a cold walk and a first backup
send at once, and the caps on it.  In process (FsCore, no kernel) against the real SeaweedFS."""

from __future__ import annotations

import os
import stat
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from inprocess import MiB, plain_or_client_core, run_core

from s3encfs import defaults
from s3encfs.fs.core import FsCore
from s3encfs.fs.dirprefetch import FAST_LIST_WAYS
from s3encfs.fs.nodes import Node
from s3encfs.fs.streaming import STREAM_PARTS
from s3encfs.store.objinfo import ListPage

DIRS = ("a", "a/b", "a/b/c", "a/d", "e", "e/f", "g")


@pytest.fixture(autouse=True)
def _s3_credentials(s3server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)


async def _make_tree(core: FsCore, dirs: tuple[str, ...] = DIRS) -> None:
    """`dirs` (a/b is 0750: only its parent's index says so) with two files in each."""
    made: dict[str, Node] = {"": core.root}
    for path in dirs:
        parent, _, name = path.rpartition("/")
        mode = 0o750 if path == "a/b" else 0o755
        made[path] = d = await core.mkdir(made[parent], name, mode, 0, 0)
        for i in range(2):
            node = await core.create_file(d, f"x{i}", 0o100644, 0, 0)
            await core.open(node, True)
            await core.write(node, 0, f"{path}/{i}".encode())
            await core.release(node, True)
    await core.flush_all()


def _count_index_gets(core: FsCore, awaited: list[str] | None = None) -> list[str]:
    """Record every GET of a directory index from now on (worker threads and trio alike);
    those awaited on the CRT with no worker thread (`aget`) also go to `awaited`."""
    seen: list[str] = []
    real, areal = core.store.get, core.store.aget
    control = core.layout.control_prefix() + "idx/"

    def get(key: str, *a: Any, **kw: Any) -> Any:
        if key.startswith(control):
            seen.append(key)
        return real(key, *a, **kw)

    async def aget(key: str) -> Any:
        if key.startswith(control):
            seen.append(key)
            if awaited is not None:
                awaited.append(key)
        return await areal(key)

    core.store.get = get  # type: ignore[method-assign]
    core.store.aget = aget  # type: ignore[method-assign]
    return seen


async def _settled(core: FsCore) -> None:
    """Until the subtree LIST and the index read-ahead behind it are done."""
    with trio.fail_after(30):
        while core._fast_lists or core._index_ahead_workers:
            await trio.sleep(0.01)


async def _walk(core: FsCore, d: Node, out: dict[str, int]) -> None:
    """What `find` does: list a directory (opendir: its listing, then the prefetch of its
    subdirectories), then go down in name order."""
    children = await core.ensure_listed(d)
    core.prefetch_subdirs(d)
    for _name, c in sorted(children.items()):
        out[c.path] = stat.S_IMODE(c.attrs.mode)
        if c.is_dir:
            await _walk(core, c, out)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_cold_walk_reads_every_directory_index_ahead_once(mode: str, s3server: Any,
                                                          bucket: str, tmp_path: Path) -> None:
    """A cold walk's subtree LIST queues the GETs of every directory's index as the LIST
    completes each directory; the walk then lists every directory without a request of its
    own (before: one index GET per directory as the walk reached it, 8 at once at most, a
    round trip per level at 20 ms RTT) and no index is read twice."""
    writer = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "w")
    run_core(writer, _make_tree)
    core = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "r")

    awaited: list[str] = []

    async def job(core: FsCore) -> tuple[list[str], list[str], dict[str, int]]:
        await core.load_root()
        gets = _count_index_gets(core, awaited)
        core.prefetch_subdirs(core.root)  # the walk's first readdir
        core._after_fast_list.clear()  # no background listing: the walk lists each one
        await _settled(core)
        ahead = list(gets)
        gets.clear()
        real_run = core.run

        async def run(fn: Any, *args: Any) -> Any:
            threaded.append(fn.__name__)
            return await real_run(fn, *args)

        core.run = run  # type: ignore[method-assign]
        out: dict[str, int] = {}
        await _walk(core, core.root, out)
        return ahead, gets, out

    threaded: list[str] = []
    ahead, during, seen = run_core(core, job)
    assert during == []  # every listing of the walk took its index from the read-ahead
    assert threaded == []  # ... and became entries with no worker thread (tree.Tree._load)
    assert len(ahead) == len(set(ahead)) == len(DIRS)
    # on the CRT, awaited: no worker thread a GET (a third of a cold walk's daemon CPU went
    # to the thread hops and GIL hand-offs of 826 index GETs)
    assert awaited == ahead
    assert seen["a/b"] == 0o750 and seen["a"] == 0o755  # the attributes the indexes hold
    assert sorted(p for p in seen if not p.rsplit("/", 1)[-1].startswith("x")) == sorted(DIRS)
    assert core.stats["index_read_ahead"] == len(DIRS)


def test_a_first_listing_waits_for_the_index_get_in_flight(s3server: Any, bucket: str,
                                                           tmp_path: Path) -> None:
    """A directory listed while its index read-ahead is in flight waits for that GET rather
    than sending a second one."""
    writer = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "w")
    run_core(writer, _make_tree)
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")

    async def job(core: FsCore) -> tuple[list[str], dict[str, Node]]:
        await core.load_root()
        gets = _count_index_gets(core)
        real, gate = core.store.aget, trio.Event()

        async def held_aget(key: str) -> Any:  # the read-ahead's GET, awaited on the CRT
            await gate.wait()
            return await real(key)

        core.store.aget = held_aget  # type: ignore[method-assign]
        core.prefetch_subdirs(core.root)
        core._after_fast_list.clear()  # only this test's listing of a takes "a/"
        with trio.fail_after(30):
            while "a/" not in core.prelisted or core.prelisted["a/"].index_reading is None:
                await trio.sleep(0.01)
        a = core.root.children["a"]  # type: ignore[index]
        async with trio.open_nursery() as n:
            n.start_soon(core.ensure_listed, a)
            await trio.sleep(0.2)
            gate.set()
        children = await core.ensure_listed(a)
        await _settled(core)
        return gets, children

    gets, children = run_core(core, job)
    assert sorted(children) == ["b", "d", "x0", "x1"]
    assert stat.S_IMODE(children["b"].attrs.mode) == 0o750
    assert gets.count(core.layout.index_key(("a",))) == 1


class _InFlight:
    """Counts calls in flight (now, most) around a store method, each held `hold` seconds
    first: the round trip of a WAN link, long enough for everything started to overlap."""

    def __init__(self, hold: float):
        self.hold, self.now, self.most, self.lock = hold, 0, 0, threading.Lock()

    def _enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def _leave(self) -> None:
        with self.lock:
            self.now -= 1

    def awaited(self, real: Any) -> Any:
        async def call(*a: Any, **kw: Any) -> Any:
            self._enter()
            try:
                await trio.sleep(self.hold)
                return await real(*a, **kw)
            finally:
                self._leave()
        return call

    def threaded(self, real: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            self._enter()
            try:
                time.sleep(self.hold)
                return real(*a, **kw)
            finally:
                self._leave()
        return call


async def _small_files(core: FsCore, n: int, tag: str = "s") -> None:
    for i in range(n):
        node = await core.create_file(core.root, f"{tag}{i}", 0o100644, 0, 0)
        await core.open(node, True)
        await core.write(node, 0, b"x" * 2000 + str(i).encode())
        await core.release(node, True)
    with trio.fail_after(120):
        await core.flush_all()


def test_small_uploads_fill_upload_concurrency_and_never_pass_it(s3server: Any, bucket: str,
                                                                 tmp_path: Path) -> None:
    """At 20 ms RTT an rsync of 8,000 files waits 8,000 x 20 ms / (PUTs in flight): the default
    keeps `UPLOAD_CONCURRENCY` (32; it was 8: W4 61.9 s at 20 ms, 42.3 s with 32) small
    PUTs in flight, and a configured cap is never passed."""
    for cfg, cap in (({}, defaults.UPLOAD_CONCURRENCY), ({"upload_concurrency": 12}, 12)):
        core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / f"c{cap}",
                                    **cfg)
        puts = _InFlight(0.3)
        core.store.aput = puts.awaited(core.store.aput)  # type: ignore[method-assign]
        run_core(core, partial(_small_files, n=2 * cap, tag=f"c{cap}-"))
        assert puts.most == cap, (cfg, puts.most)
    assert defaults.UPLOAD_CONCURRENCY >= 32


def test_streamed_parts_stay_few_whatever_upload_concurrency(s3server: Any, bucket: str,
                                                             tmp_path: Path) -> None:
    """Parts sent while a big file is written hold their body in memory: at most
    `STREAM_PARTS` (4) in flight even with 32 upload slots (half of them, 16 x 8 MiB, before)."""
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "c",
                                upload_concurrency=32, part_segments=80)  # 5 MiB parts
    parts = _InFlight(0.3)
    core.store.upload_part = parts.threaded(core.store.upload_part)  # type: ignore[method-assign]
    data = os.urandom(14 * 5 * MiB)

    async def job(core: FsCore) -> int:
        node = await core.create_file(core.root, "big", 0o100644, 0, 0)
        await core.open(node, True)
        for off in range(0, len(data), MiB):
            await core.write(node, off, data[off:off + MiB])
            await trio.sleep(0.01)  # let the parts started go out
        most = parts.most  # while written: streamed parts only (at close the pool sends the rest)
        await core.release(node, True)
        await core.flush_all()
        return most

    most = run_core(core, job)
    assert 2 <= most <= STREAM_PARTS, most
    body, _ = core.store.get("big")
    assert body == data


def test_no_index_read_ahead_for_directories_already_listed(s3server: Any, bucket: str,
                                                            tmp_path: Path) -> None:
    """A subtree LIST also passes directories this mount holds with their children (their
    listings are kept for a directory the kernel forgets): only never-listed directories get
    their index read ahead.  Before, an rsync into a fresh mount read ~800 indexes of
    directories it had made itself, for nothing."""
    writer = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "w")
    run_core(writer, _make_tree)
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")

    async def add_h(c: FsCore) -> None:
        await c.load_root()
        await c.mkdir(c.root, "h", 0o755, 0, 0)
        await c.flush_all()

    async def job(core: FsCore) -> list[str]:
        await core.load_root()
        await _walk(core, core.root, {})  # everything listed: nodes with children
        await _settled(core)
        run_other = trio.to_thread.run_sync
        await run_other(run_core, plain_or_client_core(
            s3server.endpoint, bucket, "none", tmp_path / "w2"), add_h)
        gets = _count_index_gets(core)
        await core.ensure_listed(core.root, force=True)  # h: new, never listed
        gets.clear()
        core.prefetch_subdirs(core.root)  # a subtree LIST of the whole tree, for h
        await _settled(core)
        return gets

    gets = run_core(core, job)
    assert gets == [core.layout.index_key(("h",))]


WIDE = ("top", *(f"top/s{i}" for i in range(6)), "top/s0/deep", "top/s5/deep")


def test_a_subtree_listing_lists_subdirectories_at_once(s3server: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    """A big subtree (its first LIST page does not end it) is listed with one undelimited
    LIST per subdirectory the first page did not reach, several at once; a single
    subdirectory (a backup's top level, `top`) is split one level down.  Before: one LIST of
    the whole subtree, page after page (at 20 ms RTT the walk waited for every page before
    the directories it wanted).  Afterwards the walk makes no request, and sees every
    directory."""
    writer = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "w")
    run_core(writer, partial(_make_tree, dirs=WIDE))
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")
    lists = _InFlight(0.2)
    real_pages = core.store.list_pages

    def list_pages(prefix: str, delimiter: str | None = "/") -> Any:
        """Pages of 4 keys (S3's are 1,000: a big tree in a test's time), each held 0.2 s."""
        objects = [o for page in real_pages(prefix, delimiter) for o in page.objects]
        prefixes = [p for page in real_pages(prefix, delimiter) for p in page.prefixes]
        chunks = [ListPage(objects[i:i + 4], prefixes if i == 0 else [])
                  for i in range(0, max(1, len(objects)), 4)]
        it = iter(chunks)
        while True:
            page = lists.threaded(next)(it, None)
            if page is None:
                return
            yield page

    async def job(core: FsCore) -> tuple[int, dict[str, int], int]:
        await core.load_root()
        core.store.list_pages = list_pages  # type: ignore[method-assign]
        core.prefetch_subdirs(core.root)
        core._after_fast_list.clear()
        await _settled(core)
        before = core.store.stats.as_dict()["requests"].get("ListObjectsV2", 0)
        gets = _count_index_gets(core)
        out: dict[str, int] = {}
        await _walk(core, core.root, out)
        after = core.store.stats.as_dict()["requests"].get("ListObjectsV2", 0)
        return after - before + len(gets), out, lists.most

    during, seen, most = run_core(core, job)
    assert 2 <= most <= FAST_LIST_WAYS, most
    assert during == 0
    assert sorted(p for p in seen if not p.rsplit("/", 1)[-1].startswith("x")) == sorted(WIDE)


def test_no_second_subtree_listing_over_a_directory_being_listed(s3server: Any, bucket: str,
                                                                 tmp_path: Path) -> None:
    """find's opendir of `a` prefetches a's subdirectories; one the prefetch is listing right
    now (its listing read ahead taken, its index GET in flight) is not "never listed": before,
    it started a second subtree LIST over it, whose directories then had their indexes read
    again (a cold walk of /usr/include: up to 450 index GETs more, 826 → 1,272)."""
    writer = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "w")
    run_core(writer, _make_tree)
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")

    async def job(core: FsCore) -> tuple[list[str], dict[str, Node]]:
        await core.load_root()
        core.prefetch_subdirs(core.root)
        core._after_fast_list.clear()
        await _settled(core)
        await core.ensure_listed(core.root.children["a"])  # type: ignore[index]
        a = core.root.children["a"]  # type: ignore[index]
        b = a.children["b"]  # type: ignore[index]
        pre = core.prelisted["a/b/"]
        pre.index, pre.index_reading = None, None  # its read-ahead failed: b GETs it itself
        real_get, gate = core.store.get, trio.Event()
        token = trio.lowlevel.current_trio_token()

        def held_get(key: str, *args: Any, **kw: Any) -> Any:
            trio.from_thread.run(gate.wait, trio_token=token)
            return real_get(key, *args, **kw)

        lists: list[str] = []
        real_pages = core.store.list_pages

        def list_pages(prefix: str, delimiter: str | None = "/") -> Any:
            lists.append(prefix)
            return real_pages(prefix, delimiter)

        core.store.get = held_get  # type: ignore[method-assign]
        core.store.list_pages = list_pages  # type: ignore[method-assign]
        async with trio.open_nursery() as n:
            n.start_soon(core.ensure_listed, b)
            with trio.fail_after(10):
                while "a/b/" in core.prelisted:
                    await trio.sleep(0.01)
            core.prefetch_subdirs(a)  # opendir(a) while b is being listed
            await trio.sleep(0.2)
            gate.set()
        await _settled(core)
        return lists, await core.ensure_listed(b)

    lists, children = run_core(core, job)
    assert lists == []
    assert sorted(children) == ["c", "x0", "x1"]


def test_a_read_ahead_listing_with_a_file_its_index_lacks_is_loaded_in_a_thread(
        s3server: Any, bucket: str, s3: Any, tmp_path: Path) -> None:
    """A file written by another tool (not in the directory's index) needs a HEAD for its
    attributes: that listing still goes to `load_directory` in a worker thread, and the walk
    sees the object's own metadata; the other directories need no thread."""
    writer = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "w")
    run_core(writer, _make_tree)
    s3.put_object(Bucket=bucket, Key="a/d/foreign", Body=b"abc",
                  Metadata={"mode": str(stat.S_IFREG | 0o700)})
    core = plain_or_client_core(s3server.endpoint, bucket, "none", tmp_path / "r")
    threaded: list[str] = []

    async def job(core: FsCore) -> dict[str, int]:
        await core.load_root()
        core.prefetch_subdirs(core.root)
        core._after_fast_list.clear()
        await _settled(core)
        real_run = core.run

        async def run(fn: Any, *args: Any) -> Any:
            threaded.append(f"{fn.__name__} {'/'.join(args[4]) if len(args) > 4 else ''}")
            return await real_run(fn, *args)

        core.run = run  # type: ignore[method-assign]
        out: dict[str, int] = {}
        await _walk(core, core.root, out)
        return out

    seen = run_core(core, job)
    assert seen["a/d/foreign"] == 0o700 and seen["a/d/x0"] == 0o644
    assert threaded == ["load_directory a/d"]
