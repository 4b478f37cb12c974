"""Issue 11: two crash-and-replay bugs the in-process model test (test_model_inprocess.py)
found, pinned down deterministically (no kernel mount: the interleaving must be exact).

1. A file with a pending metadata-only change (a "meta" journal row: chmod/utime of a file
   already in S3) written and closed again: the row was rewritten with the new data but kept
   its kind "meta", so the replay after a crash skipped it — the closed data was lost.
2. A metadata-only change whose self-copy landed, then a crash before the parent's index was
   written: the copy keeps the object's ETag (same body), so the old index entry and the
   attribute cache went on vouching for the old mode for ever.
3. The same for a content upload whose body is that of the version before (plain mode: the same
   MD5, so the same ETag) — a file fsync'd after a utime is re-uploaded unchanged: landed live,
   or replayed after a crash, its new mode and mtime were hidden by the parent's old index
   entry (issue 15; the model test's seed 1).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
from test_model_inprocess import CTX, Driver, filesystem, make_codec

from s3encfs.store.s3 import ObjectStore

MODES = ["none", "client"]


@pytest.fixture
def store(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return ObjectStore(bucket, endpoint_url=s3server.endpoint)


async def write_file(fs: Driver, path: str, data: bytes, exists: bool) -> None:
    fh = await fs.open_write(path, exists)
    if exists:
        await fs.setattr(path, size=0)
    await fs.ops.write(fh, 0, data)
    await fs.ops.release(fh)


@pytest.mark.parametrize("mode", MODES)
def test_write_after_a_pending_chmod_survives_a_crash(mode: str, store: ObjectStore,
                                                      tmp_path: Path) -> None:
    codec = make_codec(mode)

    async def main() -> None:
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await write_file(fs, "f", b"version 1", False)  # in S3 at the clean stop
        crash = [True]
        async with filesystem(store, codec, "", tmp_path / "c1", crash, 3600) as fs:
            await fs.setattr("f", mtime=1_000_000_000)  # a "meta" row, due in an hour
            await write_file(fs, "f", b"version 2, closed before the crash", True)
        async with filesystem(store, codec, "", tmp_path / "c1", [False]) as fs:
            assert await fs.read_all("f", 100) == b"version 2, closed before the crash"
        async with filesystem(store, codec, "", tmp_path / "cold", [False]) as fs:
            assert await fs.read_all("f", 100) == b"version 2, closed before the crash"

    trio.run(main)


@pytest.mark.parametrize("mode", MODES)
def test_chmod_whose_copy_landed_survives_a_crash_before_the_index(
        mode: str, store: ObjectStore, tmp_path: Path) -> None:
    codec = make_codec(mode)

    async def main() -> None:
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await write_file(fs, "f", b"data", False)
            await fs.ops.mkdir(pyfuse3.ROOT_INODE, b"d", stat.S_IFDIR | 0o755, CTX)
            await write_file(fs, "d/g", b"data", False)
        crash = [True]
        async with filesystem(store, codec, "", tmp_path / "c1", crash, 30) as fs:
            core = fs.ops.core
            for path in ("f", "d/g"):
                await fs.setattr(path, mode=stat.S_IFREG | 0o600)
                node = core.inodes[await fs.ino(path)]
                core.schedule(node, 0)  # the copy now; the index write stays 30 s away
                with trio.fail_after(30):
                    while node.meta_dirty or node in core.running or node in core.queue:
                        await trio.sleep(0.01)
        for cache in ("c1", "cold"):
            async with filesystem(store, codec, "", tmp_path / cache, [False]) as fs:
                for path in ("f", "d/g"):
                    e = await fs.ops.getattr(await fs.ino(path), CTX)
                    assert stat.S_IMODE(e.st_mode) == 0o600, (cache, path, oct(e.st_mode))

    trio.run(main)


def test_rows_keep_nothing_after_a_clean_stop(store: ObjectStore, tmp_path: Path) -> None:
    """The meta row that now waits for the index write is gone once the index is written."""
    codec = make_codec("none")

    async def main() -> None:
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await write_file(fs, "f", b"data", False)
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await fs.setattr("f", mode=stat.S_IFREG | 0o600)
            with trio.fail_after(60):
                await fs.ops.core.flush_all()
            assert fs.ops.core.journal.count() == 0

    trio.run(main)
    assert os.path.exists(tmp_path / "c0" / "journal.sqlite")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "replayed"])
def test_attrs_of_an_unchanged_body_survive_a_crash_before_the_index(
        mode: str, landed: bool, store: ObjectStore, tmp_path: Path) -> None:
    codec = make_codec(mode)
    body = b"the same bytes in every version"

    async def main() -> None:
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await write_file(fs, "f", body, False)  # in S3, and in the root's index
        async with filesystem(store, codec, "", tmp_path / "c1", [True], 3600) as fs:
            await write_file(fs, "f", body, True)  # plain mode: the same ETag as before
            await fs.setattr("f", mode=stat.S_IFREG | 0o600, mtime=1_000_000_000)
            if landed:  # the upload lands; the root's index would be written an hour later
                core = fs.ops.core
                await core.fsync(core.inodes[await fs.ino("f")])
        for cache in ("c1", "cold"):  # c1 replays what the crash left
            async with filesystem(store, codec, "", tmp_path / cache, [False]) as fs:
                e = await fs.ops.getattr(await fs.ino("f"), CTX)
                assert (stat.S_IMODE(e.st_mode), e.st_mtime_ns) == (0o600, 1_000_000_000), \
                    (cache, oct(e.st_mode), e.st_mtime_ns)
                assert await fs.read_all("f", 100) == body

    trio.run(main)


@pytest.mark.parametrize("mode", MODES)
def test_rows_under_a_renamed_directory_follow_it(mode: str, store: ObjectStore, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows still waiting for an index write when their directory is renamed (a new
    subdirectory's "dir" row, a chmod'ed file's "meta" row) must name the new path: replayed
    at the old one, the dir row made the old directory again."""
    codec = make_codec(mode)
    monkeypatch.setattr(pyfuse3, "readdir_reply",  # the token is a list (test_model_inprocess)
                        lambda token, name, attr, next_id: token.append(name) or True)

    async def main() -> None:
        async with filesystem(store, codec, "", tmp_path / "c0", [False]) as fs:
            await fs.ops.mkdir(pyfuse3.ROOT_INODE, b"x", stat.S_IFDIR | 0o755, CTX)
            await write_file(fs, "x/f", b"data", False)
        async with filesystem(store, codec, "", tmp_path / "c1", [True], 3600) as fs:
            x = await fs.ino("x")
            await fs.ops.mkdir(x, b"y", stat.S_IFDIR | 0o700, CTX)
            await fs.setattr("x/f", mode=stat.S_IFREG | 0o600)
            await fs.ops.rename(pyfuse3.ROOT_INODE, b"x", pyfuse3.ROOT_INODE, b"z", 0, CTX)
        for cache in ("c1", "cold"):
            async with filesystem(store, codec, "", tmp_path / cache, [False]) as fs:
                assert await fs.listdir("") == {"z"}, cache
                assert await fs.listdir("z") == {"f", "y"}, cache
                e = await fs.ops.getattr(await fs.ino("z/f"), CTX)
                assert stat.S_IMODE(e.st_mode) == 0o600, (cache, oct(e.st_mode))
                assert fs.ops.core.journal.count() == 0, cache  # no replay failed

    trio.run(main)
