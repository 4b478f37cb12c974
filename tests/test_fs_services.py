"""In-process checks of the filesystem services (issue 11): no kernel mount, real SeaweedFS.

These drive `FsCore` directly, where an interleaving or a concurrency bound must be exact.
"""

from __future__ import annotations

import threading
import time

import trio

from s3encfs.codec import IdentityCodec
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.fs.nodes import Node
from s3encfs.store.s3 import ObjectStore


def _core(bucket, s3server, monkeypatch, tmp_path, **cfg) -> FsCore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=s3server.endpoint)
    return FsCore(store, IdentityCodec(), "", FsConfig(cache_dir=str(tmp_path / "cache"), **cfg))


# -- issue 11 item 4: worker threads that bypassed the store limiter -----------------------------
def test_uploads_stay_within_the_store_thread_limit(bucket, s3server, monkeypatch, tmp_path):
    """`s3_threads` bounds the worker threads that talk to S3.  Uploads went to a worker thread
    with trio's default limiter (40), so `upload_concurrency` uploads ran at once whatever
    `s3_threads` said.  Before the fix: 6 uploads in flight with s3_threads=2."""
    core = _core(bucket, s3server, monkeypatch, tmp_path, s3_threads=2, upload_concurrency=6,
                 upload_delay=0)
    lock = threading.Lock()
    inside = [0, 0]  # now, most
    real = core.uploader.upload

    def counted(job):  # type: ignore[no-untyped-def]
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        try:
            time.sleep(0.3)  # long enough for every upload the loop started to get here
            return real(job)
        finally:
            with lock:
                inside[0] -= 1

    core.uploader.upload = counted  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            for i in range(6):
                node = await core.create_file(core.root, f"f{i}", 0o100644, 0, 0)
                await core.open(node, True)
                await core.write(node, 0, b"x" * 1000)
                await core.release(node, True)
            with trio.fail_after(120):
                await core.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(main)
    core.close()
    keys = {o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert {f"f{i}" for i in range(6)} <= keys
    assert inside[1] <= 2, f"{inside[1]} uploads in worker threads at once with s3_threads=2"


# -- a listing S3 answered before this mount's own changes ----------------------------------------
def test_a_listing_answered_before_local_changes_does_not_undo_them(
        bucket, s3server, monkeypatch, tmp_path):
    """A directory LIST that S3 answered before an upload landed (or a name was removed here)
    was merged as the truth: the new file's node was dropped (rsync's rename of its temp file
    then failed ENOENT, rsync exit 23, seen in 7 of 15 large runs), a rewritten file fell back
    to its older ETag, and an unlinked name came back.  Here the LIST is held between S3's
    answer and the merge while the changes land."""
    core = _core(bucket, s3server, monkeypatch, tmp_path, upload_delay=0)
    taken, gate = threading.Event(), threading.Event()
    armed = [False]
    real_pages = core.store.list_pages

    def held_pages(prefix, delimiter="/"):  # type: ignore[no-untyped-def]
        pages = list(real_pages(prefix, delimiter))
        if armed[0] and prefix == "":
            armed[0] = False
            taken.set()
            gate.wait(60)
        yield from pages

    core.store.list_pages = held_pages  # type: ignore[method-assign]

    async def write_file(name: str, data: bytes, new: bool):  # type: ignore[no-untyped-def]
        if new:
            node = await core.create_file(core.root, name, 0o100644, 0, 0)
        else:
            node = (await core.ensure_listed(core.root))[name]
        await core.open(node, True)
        await core.truncate(node, 0)
        await core.write(node, 0, data)
        await core.release(node, True)
        return node

    async def landed(node) -> None:  # type: ignore[no-untyped-def]
        with trio.fail_after(60):
            while node.content is not None or node.obj is None or node.row_id is not None:
                await trio.sleep(0.05)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            await write_file("old", b"version 1", True)
            await write_file("gone", b"to be removed", True)
            with trio.fail_after(60):
                await core.flush_all()
            armed[0] = True
            listed = trio.Event()

            async def listing() -> None:
                await core.ensure_listed(core.root, force=True)
                listed.set()

            nursery.start_soon(listing)
            await trio.to_thread.run_sync(taken.wait, 60)
            new = await write_file("new", b"a new file", True)
            old = await write_file("old", b"version 2, longer", False)
            await core.unlink(core.root, "gone")
            await landed(new)
            await landed(old)
            gate.set()
            with trio.fail_after(60):
                await listed.wait()
            children = core.root.children
            assert children is not None
            assert "new" in children, "a file that landed during the LIST was dropped"
            head = s3server.client().head_object(Bucket=bucket, Key="old")
            assert children["old"].obj.etag == head["ETag"].strip('"'), \
                "a rewrite that landed during the LIST fell back to the listed ETag"
            assert children["old"].attrs.size == len(b"version 2, longer")
            assert "gone" not in children, "a name unlinked during the LIST came back"
            # a listing asked for after the changes sees them all from S3, and agrees
            await core.ensure_listed(core.root, force=True)
            assert {"new", "old"} <= set(core.root.children or {})
            assert "gone" not in (core.root.children or {})
            assert core.root.gone is None  # the tombstone went with the first newer listing
            nursery.cancel_scope.cancel()

    trio.run(main)
    core.close()


# -- stale sizes: another writer's new version under a warm kernel inode ---------------------
def test_another_writers_new_version_gets_a_new_inode(bucket, s3server, monkeypatch, tmp_path):
    """With the writeback cache the kernel never takes a new size for an inode it holds, so a
    listing that shows another writer's new ETag for a clean file the kernel knows gives the
    name a new node (a new inode number); the old node stays until the kernel forgets it, and
    forgetting it leaves the new one listed.  A file open here keeps its node and version until
    its last close; the next listing then gives the new one a new node.  Before the fix
    the node was updated in place (same inode: the mount's reads kept the old length)."""
    core = _core(bucket, s3server, monkeypatch, tmp_path, upload_delay=0)
    s3 = s3server.client()
    s3.put_object(Bucket=bucket, Key="f", Body=b"old")

    async def relist_and_lookup() -> Node | None:
        await core.ensure_listed(core.root, force=True)
        return await core.lookup(core.root, "f")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.lookup(core.root, "f")
            assert node is not None and node.attrs.size == 3
            node.lookups += 1  # the kernel now holds its inode (Operations._lookup_ref)
            assert await relist_and_lookup() is node  # nothing changed: the same node
            s3.put_object(Bucket=bucket, Key="f", Body=b"B's longer version")
            fresh = await relist_and_lookup()
            assert fresh is not node and fresh.inode != node.inode
            assert fresh.attrs.size == len(b"B's longer version")
            assert core.inodes[node.inode] is node  # until the kernel forgets the old inode
            core.forget(node.inode, 1)
            assert node.inode not in core.inodes and core.root.children["f"] is fresh
            fresh.lookups += 1
            await core.open(fresh, False)  # open here: it keeps its inode and version
            etag = fresh.obj.etag if fresh.obj is not None else None
            s3.put_object(Bucket=bucket, Key="f", Body=b"third")
            assert await relist_and_lookup() is fresh
            assert fresh.obj is not None and fresh.obj.etag == etag
            await core.release(fresh, False)
            third = await relist_and_lookup()  # closed: the next listing gives a new inode
            assert third is not fresh and third is not None and third.attrs.size == 5
            nursery.cancel_scope.cancel()

    trio.run(main)
    core.close()


# -- the upload loop's index scheduling (fs/writeback.py `_start_due_indexes`) ---------------------
def test_directory_index_waits_for_its_children_and_names_their_final_etags(
        bucket, s3server, monkeypatch, tmp_path):
    """A directory's index is written, after its children are in S3, and names each child's
    final ETag, though it fell due while uploads were still running. The loop now walks the
    index queue only when something in it is due (`_index_next`, kept by every place that
    queues an index or brings one forward) and looks at a due index with pending children
    again 0.2 s later: a wake-up lost there leaves the index unwritten and flush_all waiting
    (this test then fails on its timeout)."""
    from s3encfs.fs.listing import read_index

    core = _core(bucket, s3server, monkeypatch, tmp_path, upload_delay=0.05,
                 upload_concurrency=4)
    real = core.uploader.upload

    def slow(job):  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # the index falls due long before the last child is up
        return real(job)

    core.uploader.upload = slow  # type: ignore[method-assign]
    index_writes = [0]
    real_index = core.write_index

    async def counted(d):  # type: ignore[no-untyped-def]
        index_writes[0] += 1
        await real_index(d)

    core.write_index = counted  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            d = await core.mkdir(core.root, "d", 0o40755, 0, 0)
            for i in range(40):
                node = await core.create_file(d, f"f{i}", 0o100644, 0, 0)
                await core.open(node, True)
                await core.write(node, 0, b"y" * (100 + i))
                await core.release(node, True)
            with trio.fail_after(120):
                await core.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(main)
    index = read_index(core.store, core.layout, ("d",))
    core.close()
    assert index is not None
    listed = {o["Key"]: o["ETag"].strip('"') for o in
              s3server.client().list_objects_v2(Bucket=bucket, Prefix="d/").get("Contents", [])}
    assert len(index.files) == 40, sorted(index.files)
    assert 1 <= index_writes[0] <= 6, f"{index_writes[0]} index writes for one burst"
    for name, (etag, _meta) in index.files.items():
        assert listed[f"d/{name}"] == etag.strip('"'), name


def test_a_due_index_goes_up_while_uploads_are_queued(bucket, s3server, monkeypatch, tmp_path):
    """A due index write takes the next free upload slot even while files are queued.  Uploads
    used to refill every slot first, so the index (and, in plain mode, the journal rows it
    settles, which keep their nodes in memory: fs/pending.py `_row_until_index`) waited until
    the queue drained: `a`'s index went up with 0 uploads left queued, its 20 rows kept till
    then.  Now it goes up while most of `slow`'s 60 uploads (0.2 s each) are still queued."""
    core = _core(bucket, s3server, monkeypatch, tmp_path, upload_delay=0.05,
                 upload_concurrency=4)
    real = core.uploader.upload

    def slow(job):  # type: ignore[no-untyped-def]
        if "slow/" in job.key:
            time.sleep(0.2)
        return real(job)

    core.uploader.upload = slow  # type: ignore[method-assign]
    real_aput = core.store.aput

    async def slow_aput(key, *args, **kw):  # type: ignore[no-untyped-def]
        if "slow/" in key:  # a small new file's PUT is awaited on the loop (fs/small_upload.py)
            await trio.sleep(0.2)
        return await real_aput(key, *args, **kw)

    monkeypatch.setattr(core.store, "aput", slow_aput)
    seen: list[tuple[int, int]] = []  # per index write of `a`: (uploads queued, rows left)
    real_index = core.write_index

    async def counted(d):  # type: ignore[no-untyped-def]
        queued = len(core.queue)
        await real_index(d)
        if d.name == "a":
            seen.append((queued, sum(c.row_id is not None for c in d.children.values())))

    core.write_index = counted  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            for name, n in (("a", 20), ("slow", 60)):
                d = await core.mkdir(core.root, name, 0o40755, 0, 0)
                for i in range(n):
                    node = await core.create_file(d, f"f{i}", 0o100644, 0, 0)
                    await core.open(node, True)
                    await core.write(node, 0, b"z" * (50 + i))
                    await core.release(node, True)
            with trio.fail_after(120):
                while core.queue or core.running:  # not flush_all: it reorders the queue
                    await trio.sleep(0.05)
                await core.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(main)
    rows = core.journal.count()
    core.close()
    assert seen, "a's index was never written"
    queued, rows_left = seen[0]
    assert rows_left == 0, seen  # plain mode: the index settled every landed child's row
    assert queued >= 20, seen  # was 0: the index waited for the queue to drain
    assert rows == 0
