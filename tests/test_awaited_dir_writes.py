"""A new directory's marker and a small directory index are PUT awaited on the trio thread
(store/crt_async.py), like a small file's body, not through a worker thread (fs/upload.py
`AWAITED_INDEX`): on W4 each worker-thread hand-off cost ~100 us of CPU. What lands is the
same: the marker, the index naming every child."""

from __future__ import annotations

import stat
from typing import Any

import pytest
from inprocess import plain_or_client_core, run_core, write_file

from s3encfs.fs import upload
from s3encfs.fs.core import FsCore
from s3encfs.fs.listing import read_index


def _core_counting_threads(s3server: Any, bucket: str, tmp_path: Any, monkeypatch: Any,
                           mode: str) -> tuple[FsCore, list[str]]:
    """A fresh core whose worker-thread calls (`core.run`) are listed by function name."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    core = plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "c")
    threaded: list[str] = []
    real_run = core.run

    async def counted(fn: Any, *a: Any, **kw: Any) -> Any:
        threaded.append(getattr(fn, "__name__", repr(fn)))
        return await real_run(fn, *a, **kw)

    monkeypatch.setattr(core, "run", counted)
    return core, threaded


@pytest.mark.parametrize("mode", ["none", "client"])
def test_markers_and_small_indexes_go_up_without_a_worker_thread(
        s3server, bucket, tmp_path, monkeypatch, mode):
    core, threaded = _core_counting_threads(s3server, bucket, tmp_path, monkeypatch, mode)

    async def job(c: FsCore) -> None:
        d = await c.mkdir(c.root, "d", stat.S_IFDIR | 0o750, 0, 0)
        for i in range(3):
            node = await c.create_file(d, f"f{i}", 0o100640, 0, 0)
            await c.open(node, True)
            await c.write(node, 0, b"x" * (10 + i))
            await c.release(node, True)
        await c.flush_all()
        await write_file(c, "top", b"root file")

    run_core(core, job)
    # marker, d's index and the root's: all awaited (the root's listing is a read: a thread)
    assert not {"put", "write_index"} & set(threaded), threaded
    assert core.store.awaitable_puts
    index = read_index(core.store, core.layout, ("d",))
    assert index is not None and len(index.files) == 3
    root = read_index(core.store, core.layout, ())
    assert root is not None and len(root.dirs) == 1 and len(root.files) == 1
    if mode == "none":  # plain names: the marker is there (SeaweedFS keeps no metadata on it)
        core.store.client.head_object(Bucket=bucket, Key="d/")


def test_a_big_index_is_still_built_on_a_worker_thread(s3server, bucket, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(upload, "AWAITED_INDEX", 2)
    core, threaded = _core_counting_threads(s3server, bucket, tmp_path, monkeypatch, "none")

    async def job(c: FsCore) -> None:
        for i in range(3):
            await write_file(c, f"f{i}", b"y" * i)

    run_core(core, job)
    assert "write_index" in threaded
    index = read_index(core.store, core.layout, ())
    assert index is not None and sorted(index.files) == ["f0", "f1", "f2"]
