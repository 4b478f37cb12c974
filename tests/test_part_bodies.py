"""Upload parts are ranges of the staging file, read by the CRT as it sends them
(store/bodies.py): in plain mode every part of written segments, in client mode every part
whose slots are whole segments sealed with the version's key (ObjectSlots) and hold none of
the object's last segment, and S3EC's (read into the part's ciphertext buffer).  What S3 gets
is byte for byte what was written, with zeros where the staging file has none (its unwritten
tail)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from inprocess import MiB, plain_or_client_core, run_core

from s3encfs.crypto.s3ec_codec import S3ECCodec
from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store.bodies import FileRange
from s3encfs.store.s3ec import S3ECStore


@pytest.fixture(autouse=True)
def _s3_credentials(s3server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)


def _record_parts(core: FsCore) -> list[tuple[str, int, Any]]:
    bodies: list[tuple[str, int, Any]] = []
    real = core.store.upload_part

    def upload_part(key: str, upload_id: str, number: int, body: Any) -> str:
        bodies.append((key, number, body))
        return real(key, upload_id, number, body)

    core.store.upload_part = upload_part  # type: ignore[method-assign]
    return bodies


def test_file_range_reads_zeros_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDONLY)
    try:
        rng = FileRange(fd, 2, 10)
        assert rng.read() == b"cdef" + bytes(6)
        stream = rng.stream()
        buf = bytearray(4)
        assert stream.readinto(buf) == 4 and buf == b"cdef"
        assert stream.readinto(buf) == 4 and buf == bytes(4)
        assert stream.readinto(buf) == 2 and buf[:2] == bytes(2)
        assert stream.readinto(buf) == 0
        stream.seek(0)  # a retry reads the range again from its start
        out = bytearray(16)
        assert stream.readinto(out) == 10 and out[:10] == b"cdef" + bytes(6)
    finally:
        os.close(fd)


async def _write(core: FsCore, name: str, data: bytes, size: int | None = None) -> None:
    node = await core.create_file(core.root, name, 0o100644, 0, 0)
    await core.open(node, True)
    for off in range(0, len(data), MiB):
        await core.write(node, off, data[off:off + MiB])
        await trio.sleep(0.01)  # let the parts started go out
    if size is not None:
        await core.truncate(node, size)
    await core.release(node, True)


async def _read(core: FsCore, names: tuple[str, ...]) -> list[bytes]:
    got = []
    for name in names:
        node = await core.lookup(core.root, name)
        out = bytearray()
        while len(out) < node.attrs.size:
            out += await core.read(node, len(out), 4 * MiB)
        got.append(bytes(out))
    return got


def _core(endpoint: str, bucket: str, mode: str, cache: Path, **cfg: Any) -> FsCore:
    if mode != "s3ec":
        return plain_or_client_core(endpoint, bucket, mode, cache, **cfg)
    store = S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("k", bytes(range(32)), {})]),
                      spool_dir=str(cache / "spool"), endpoint_url=endpoint, s3_client="crt")
    return FsCore(store, S3ECCodec(), "", FsConfig(cache_dir=str(cache), upload_delay=0,
                                                   **cfg))


@pytest.mark.parametrize("mode", ["none", "client", "s3ec"])
def test_parts_of_a_big_file_are_staging_ranges(s3server: Any, bucket: str, tmp_path: Path,
                                                mode: str) -> None:
    """Streamed parts (while written) and the rest (at close) alike.  `holey` is extended
    past its last write: its 5th part ends in a segment written only 100 bytes into (a range
    past the staging file's end: zeros; in client mode a short slot, so bytes), its 6th holds
    no written segment (built as bytes).  Client mode: the 5th part of `big` holds the last
    segment (sealed with last = 1 at upload: bytes).  S3EC reads a range into the part's
    ciphertext buffer (store/s3ec_upload.py)."""
    core = _core(s3server.endpoint, bucket, mode, tmp_path / "c",
                 part_segments=80)  # 5 MiB parts
    bodies = _record_parts(core)
    big = os.urandom(23 * MiB + 100)
    holey = os.urandom(25 * MiB - 64 * 1024 + 100)

    async def job(core: FsCore) -> None:
        await _write(core, "big", big)
        await _write(core, "holey", holey, 27 * MiB)
        await core.flush_all()

    run_core(core, job)
    reader = _core(s3server.endpoint, bucket, mode, tmp_path / "r")
    got = run_core(reader, lambda c: _read(c, ("big", "holey")))
    assert got == [big, holey + bytes(27 * MiB - len(holey))]
    names = {core.key_of(n): name for name, n in core.root.children.items()}
    ranged = {(names[k], n) for k, n, b in bodies if isinstance(b, FileRange)}
    sent = {(names[k], n) for k, n, _b in bodies}
    assert {n for k, n in sent if k == "big"} == {1, 2, 3, 4, 5}
    assert {n for k, n in sent if k == "holey"} == {1, 2, 3, 4, 5, 6}
    if mode != "client":
        assert ranged == sent - {("holey", 6)}, sorted(sent - ranged)
    else:
        assert ranged == sent - {("holey", 5), ("holey", 6), ("big", 5)}, sorted(sent - ranged)


def test_client_part_with_a_rewritten_short_slot_is_built(s3server: Any, bucket: str,
                                                         tmp_path: Path) -> None:
    """A slot rewritten as a short slot (a segment that now ends in zeros: sealed under the
    slot key, not as the object's segment) takes its part out of the ranges, and a slot
    written whole again puts it back; the object reads back byte for byte."""
    core = plain_or_client_core(s3server.endpoint, bucket, "client", tmp_path / "c",
                                part_segments=80, upload_delay=60)
    bodies = _record_parts(core)
    S = 64 * 1024
    data = bytearray(os.urandom(16 * MiB + 100))
    data[2 * MiB + 3 * S + 10:2 * MiB + 4 * S] = bytes(S - 10)  # part 1: a short slot
    data[7 * MiB:7 * MiB + S] = bytes(S)  # part 2: short, then rewritten whole

    async def job(core: FsCore) -> None:
        node = await core.create_file(core.root, "f", 0o100644, 0, 0)
        await core.open(node, True)
        await core.write(node, 0, os.urandom(4 * MiB))  # whole slots, rewritten below
        for off in range(0, len(data), MiB):
            await core.write(node, off, bytes(data[off:off + MiB]))
        await core.write(node, 7 * MiB, os.urandom(S))
        data[7 * MiB:7 * MiB + S] = b"x" * S
        await core.write(node, 7 * MiB, b"x" * S)
        await core.release(node, True)
        await core.flush_all()

    run_core(core, job)
    reader = plain_or_client_core(s3server.endpoint, bucket, "client", tmp_path / "r")
    assert run_core(reader, lambda c: _read(c, ("f",))) == [bytes(data)]
    sent = {n: b for _k, n, b in bodies}
    assert sorted(sent) == [1, 2, 3, 4]
    assert not isinstance(sent[1], FileRange)  # its short slot
    assert isinstance(sent[2], FileRange) and isinstance(sent[3], FileRange)
    assert not isinstance(sent[4], FileRange)  # the object's last segment
