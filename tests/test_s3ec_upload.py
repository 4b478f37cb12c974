"""S3EC multipart uploads against SeaweedFS (store/s3ec_upload.py): parts are encrypted and sent
in order while later ones still arrive, and whatever happens the object is one valid GCM stream
that the tests' independent decoder reads byte-exact (or the upload starts again)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from test_s3ec_format import KEK, ref_decrypt

from s3encfs.crypto.s3ec_codec import S3ECCodec
from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store import s3ec_upload
from s3encfs.store.bodies import FileRange
from s3encfs.store.errors import UploadRestart
from s3encfs.store.s3 import ObjectStore
from s3encfs.store.s3ec import S3ECStore
from s3encfs.store.sealed_spool import PartSpool

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest non-final part


@pytest.fixture
def st(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
       request: pytest.FixtureRequest) -> S3ECStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    keys = S3ECKeys([AesKeyring("k", KEK, {})])
    return S3ECStore(bucket, s3ec=keys, spool_dir=str(tmp_path / "spool"),
                     endpoint_url=s3server.endpoint, region="us-east-1",
                     s3_client=getattr(request, "param", "crt"))


def _read(s3: Any, bucket: str, key: str) -> tuple[dict[str, str], bytes]:
    r = s3.get_object(Bucket=bucket, Key=key)
    return r["Metadata"], r["Body"].read()


def _sent(s3: Any, bucket: str, key: str, upload_id: str) -> list[int]:
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])
    return sorted(p["PartNumber"] for p in parts)


@pytest.mark.parametrize("st", ["crt", "boto3"], indirect=True)  # ciphertext in a bytearray
def test_parts_go_to_s3_before_completion(st: S3ECStore, s3: Any, bucket: str) -> None:
    data = [os.urandom(PART) for _ in range(3)] + [os.urandom(1000)]
    uid = st.create_multipart("f", {"mode": "33188"})
    tags = [st.upload_part("f", uid, 1, data[0])]
    assert _sent(s3, bucket, "f", uid) == [1]  # its turn, and big enough to be non-final
    tags += [st.upload_part("f", uid, n, d) for n, d in enumerate(data[1:], start=2)]
    assert _sent(s3, bucket, "f", uid) == [1, 2, 3]  # the small part 4 waits: it may be last
    st.complete_multipart("f", uid, list(enumerate(tags, start=1)))
    meta, body = _read(s3, bucket, "f")
    assert ref_decrypt(meta, body) == b"".join(data)
    assert st.get("f")[0] == b"".join(data)


def test_out_of_order_parts_wait_for_their_turn(st: S3ECStore, s3: Any, bucket: str) -> None:
    data = [os.urandom(PART), os.urandom(PART), os.urandom(1000)]
    uid = st.create_multipart("f", {})
    st.upload_part("f", uid, 3, data[2])
    st.upload_part("f", uid, 2, data[1])
    assert _sent(s3, bucket, "f", uid) == []  # part 1 is missing: nothing can be encrypted
    st.upload_part("f", uid, 1, data[0])
    assert _sent(s3, bucket, "f", uid) == [1, 2]
    st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_early_parts_past_the_memory_bound_go_to_the_spool(
        st: S3ECStore, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts that arrive before their turn are kept (in memory up to _HOLD, then sealed on
    disk); parts that are their turn never touch the disk."""
    spooled: list[int] = []
    real_put = PartSpool.put
    monkeypatch.setattr(PartSpool, "put", lambda self, n, d: (spooled.append(n),
                                                                real_put(self, n, d))[-1])
    data = [os.urandom(PART) for _ in range(6)]
    uid = st.create_multipart("f", {})
    st.upload_part("f", uid, 1, data[0])
    monkeypatch.setattr(s3ec_upload, "_HOLD", 2 * PART)
    for n in (6, 5, 4, 3):
        st.upload_part("f", uid, n, data[n - 1])
    assert spooled == [4, 3] and _sent(s3, bucket, "f", uid) == [1]
    st.upload_part("f", uid, 2, data[1])
    assert _sent(s3, bucket, "f", uid) == [1, 2, 3, 4, 5, 6]
    st.complete_multipart("f", uid, [(n, "") for n in range(1, 7)])
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)
    assert spooled == [4, 3]


def test_a_part_sent_again_restarts_the_upload(st: S3ECStore, s3: Any, bucket: str) -> None:
    """A write into a part that was encrypted already: never two plaintexts under one
    (data key, message id). The store refuses it and the completion (UploadRestart): the
    caller aborts and sends the object again in a new upload, under a fresh data key."""
    data = [os.urandom(PART) for _ in range(3)]
    uid = st.create_multipart("f", {})
    for n, d in enumerate(data, start=1):
        st.upload_part("f", uid, n, d)
    with pytest.raises(UploadRestart):
        st.upload_part("f", uid, 1, os.urandom(PART))  # part 1 went to S3 with its old bytes
    with pytest.raises(UploadRestart):
        st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    st.abort_multipart("f", uid)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with pytest.raises(UploadRestart):  # encrypted at most once: a retry must start anew
        st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])


def test_every_part_sent_early_then_the_tag_alone(st: S3ECStore, s3: Any, bucket: str) -> None:
    data = [os.urandom(PART) for _ in range(3)]
    uid = st.create_multipart("f", {})
    for n, d in enumerate(data, start=1):
        st.upload_part("f", uid, n, d)
    st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    sizes = [len(_read(s3, bucket, "f")[1])]
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)
    assert sizes == [3 * PART + 16]
    # the file shrank to 2 parts after part 3 was sent: part 2 went as a non-final part
    uid = st.create_multipart("g", {})
    for n, d in enumerate(data, start=1):
        st.upload_part("g", uid, n, d)
    with pytest.raises(UploadRestart):
        st.complete_multipart("g", uid, [(1, ""), (2, "")])


def test_fs_rewrite_of_a_streamed_part_starts_a_new_upload(
        s3server: Any, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Through the filesystem: parts stream to S3 while the file is written; a write into one
    that went already makes the completion restart, at once, from the staging file."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    keys = S3ECKeys([AesKeyring("k", KEK, {})])
    store = S3ECStore(bucket, s3ec=keys, spool_dir=str(tmp_path / "spool"),
                      endpoint_url=s3server.endpoint, region="us-east-1")
    core = FsCore(store, S3ECCodec(), "", FsConfig(cache_dir=str(tmp_path / "c"),
                                                   upload_delay=0, part_segments=PART // 65536))
    data = bytearray(os.urandom(4 * PART + 1234))
    creates = []
    real_create = S3ECStore.create_multipart
    monkeypatch.setattr(S3ECStore, "create_multipart",
                        lambda self, k, m: (creates.append(k), real_create(self, k, m))[-1])

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.create_file(core.root, "big", 0o100644, 0, 0)
            await core.open(node, True)
            for off in range(0, len(data), MiB):
                await core.write(node, off, bytes(data[off:off + MiB]))
            while not _uploads(s3, bucket) or not _sent(s3, bucket, "big", _uploads(s3, bucket)[0]):
                await trio.sleep(0.05)  # part 1 streamed
            data[10:20] = b"x" * 10
            await core.write(node, 10, b"x" * 10)
            await core.release(node, True)
            await core.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(main)
    errors = core.stats["upload_errors"]
    core.close()
    assert ref_decrypt(*_read(s3, bucket, "big")) == bytes(data)
    assert len(creates) == 2 and not _uploads(s3, bucket)
    assert errors == 0  # restarted inside the same upload, not failed and retried later


def _uploads(s3: Any, bucket: str) -> list[str]:
    return [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _ranges(tmp_path: Path, data: list[bytes]) -> tuple[int, list[FileRange]]:
    """`data` written one after another into a file: its fd and each part as a range of it."""
    path = tmp_path / "staging"
    path.write_bytes(b"".join(data))
    fd = os.open(path, os.O_RDWR)
    offs = [sum(len(d) for d in data[:i]) for i in range(len(data))]
    return fd, [FileRange(fd, o, len(d)) for o, d in zip(offs, data, strict=True)]


def test_file_range_parts_are_read_into_their_ciphertext_buffers(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The filesystem's parts are ranges of the staging file (file_parts): a part that is its
    turn is read straight into its ciphertext buffer and encrypted there (no plaintext part
    built), during upload_part only, so the file may change once it returned."""
    assert st.file_parts
    monkeypatch.setattr(FileRange, "read", lambda self: pytest.fail("plaintext part built"))
    data = [os.urandom(PART), os.urandom(PART), os.urandom(1000)]
    fd, rngs = _ranges(tmp_path, data)
    try:
        uid = st.create_multipart("f", {})
        st.upload_part("f", uid, 1, rngs[0])
        assert _sent(s3, bucket, "f", uid) == [1]
        os.pwrite(fd, b"\0" * PART, 0)  # after upload_part returned: not what part 1 holds
        st.upload_part("f", uid, 2, rngs[1])
        st.upload_part("f", uid, 3, rngs[2])  # the small last part is kept (read) for the tag
        os.pwrite(fd, b"\0" * 1000, 2 * PART)
        st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    finally:
        os.close(fd)
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_an_early_file_range_waits_for_its_turn(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Part 3 arriving before parts 1 and 2 (their threads a moment late) is neither kept in
    memory nor spooled: its thread waits and encrypts it from the file when its turn comes."""
    monkeypatch.setattr(s3ec_upload, "_WAIT", 60.0)
    kept: list[int] = []
    real_read = s3ec_upload.S3ECUpload._read
    monkeypatch.setattr(s3ec_upload.S3ECUpload, "_read",
                        staticmethod(lambda rng: (kept.append(rng.offset), real_read(rng))[1]))
    data = [os.urandom(PART) for _ in range(3)] + [os.urandom(PART + 1)]
    fd, rngs = _ranges(tmp_path, data)
    uid = st.create_multipart("f", {})
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            st.upload_part("f", uid, n, rngs[n - 1])
        except BaseException as exc:
            errors.append(exc)

    try:
        early = [threading.Thread(target=send, args=(n,)) for n in (3, 2)]
        for t in early:
            t.start()
            time.sleep(0.1)
        assert all(t.is_alive() for t in early) and _sent(s3, bucket, "f", uid) == []
        send(1)
        for t in early:
            t.join(10)
        assert _sent(s3, bucket, "f", uid) == [1, 2, 3] and not errors and not kept
        send(4)  # the file's end: kept for the tag
        assert not errors and kept == [3 * PART]
        st.complete_multipart("f", uid, [(n, "") for n in range(1, 5)])
    finally:
        os.close(fd)
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_an_early_file_range_whose_turn_does_not_come_is_kept(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After `_WAIT` the early part is read into memory (as bytes are kept): the caller may
    then change its file, the object holds what upload_part was given."""
    monkeypatch.setattr(s3ec_upload, "_WAIT", 0.2)
    data = [os.urandom(PART), os.urandom(PART), os.urandom(PART)]
    fd, rngs = _ranges(tmp_path, data)
    try:
        uid = st.create_multipart("f", {})
        st.upload_part("f", uid, 2, rngs[1])  # returns after _WAIT, part 2 kept
        assert _sent(s3, bucket, "f", uid) == []
        os.pwrite(fd, b"\0" * PART, PART)
        st.upload_part("f", uid, 1, rngs[0])
        assert _sent(s3, bucket, "f", uid) == [1, 2]
        st.upload_part("f", uid, 3, rngs[2])
        st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    finally:
        os.close(fd)
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_a_part_that_cannot_be_read_breaks_the_upload(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    """Part 1 (small: kept until part 2 says it is not the last) is encrypted, then part 2's
    file read fails: the GCM stream moved past part 1, which was never sent, so the upload
    can only start again (UploadRestart), never complete with a part missing or re-encrypted."""
    data = [os.urandom(1000), os.urandom(PART)]
    path = tmp_path / "wo"
    path.write_bytes(data[1] * 2)  # part 2 does not reach the end: not kept for the tag
    fd = os.open(path, os.O_WRONLY)  # preadv fails: EBADF
    try:
        uid = st.create_multipart("f", {})
        st.upload_part("f", uid, 1, data[0])
        with pytest.raises(OSError):
            st.upload_part("f", uid, 2, FileRange(fd, 0, PART))
        with pytest.raises(UploadRestart):
            st.upload_part("f", uid, 3, os.urandom(PART))
        with pytest.raises(UploadRestart):
            st.complete_multipart("f", uid, [(1, ""), (2, "")])
    finally:
        os.close(fd)
    assert _sent(s3, bucket, "f", uid) == []
    st.abort_multipart("f", uid)


def test_abort_releases_a_part_waiting_for_its_turn(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3ec_upload, "_WAIT", 60.0)
    fd, rngs = _ranges(tmp_path, [os.urandom(PART), os.urandom(PART)])
    uid = st.create_multipart("f", {})
    got: list[BaseException] = []

    def send() -> None:
        try:
            st.upload_part("f", uid, 2, rngs[1])
        except BaseException as exc:
            got.append(exc)

    waiter = threading.Thread(target=send)
    try:
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive()
        st.abort_multipart("f", uid)
        waiter.join(10)
        assert not waiter.is_alive() and len(got) == 1 and isinstance(got[0], UploadRestart)
    finally:
        os.close(fd)


def test_a_file_range_after_a_kept_part_does_not_wait(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Part 1 is small and kept (it may be the last); part 2 is not its turn yet, but nothing
    is missing before it: part 2's arrival makes part 1 non-final, both go at once (S3
    would refuse to complete a non-final part this small: the upload is aborted)."""
    monkeypatch.setattr(s3ec_upload, "_WAIT", 60.0)
    fd, rngs = _ranges(tmp_path, [os.urandom(1000), os.urandom(PART), os.urandom(10)])
    uid = st.create_multipart("f", {})
    try:
        st.upload_part("f", uid, 1, rngs[0])
        assert _sent(s3, bucket, "f", uid) == []
        second = threading.Thread(target=st.upload_part, args=("f", uid, 2, rngs[1]))
        second.start()
        second.join(20)
        assert not second.is_alive() and _sent(s3, bucket, "f", uid) == [1, 2]
    finally:
        os.close(fd)
        st.abort_multipart("f", uid)


def test_an_early_part_that_cannot_be_read_is_not_there(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept after its wait, an early part's read fails: the call fails and the part counts as
    never sent (nothing was encrypted); sent again, the upload completes."""
    monkeypatch.setattr(s3ec_upload, "_WAIT", 0.1)
    data = [os.urandom(PART), os.urandom(PART)]
    path = tmp_path / "wo"
    path.write_bytes(data[1])
    bad = os.open(path, os.O_WRONLY)
    try:
        uid = st.create_multipart("f", {})
        with pytest.raises(OSError):
            st.upload_part("f", uid, 2, FileRange(bad, 0, PART))
        st.upload_part("f", uid, 1, data[0])
        assert _sent(s3, bucket, "f", uid) == [1]  # not part 2: it is not there
        st.upload_part("f", uid, 2, data[1])
        st.complete_multipart("f", uid, [(1, ""), (2, "")])
    finally:
        os.close(bad)
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_a_last_part_reaching_the_file_end_carries_the_tag(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full-size part whose range ends at its file's end is kept for the completion, which
    appends the tag to it: no 16-byte part of its own (one request fewer). Were a part to
    follow it after all, that part's arrival sends it as a non-final part."""
    sent: list[int] = []
    real = ObjectStore.upload_part
    monkeypatch.setattr(ObjectStore, "upload_part",
                        lambda self, k, u, n, b: (sent.append(n), real(self, k, u, n, b))[-1])
    data = [os.urandom(PART) for _ in range(3)]
    fd, rngs = _ranges(tmp_path, data)
    try:
        uid = st.create_multipart("f", {})
        for n in (1, 2, 3):
            st.upload_part("f", uid, n, rngs[n - 1])
        assert _sent(s3, bucket, "f", uid) == [1, 2]  # part 3 ends the file: kept
        st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
        assert sent == [1, 2, 3]
        assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)
        sent.clear()
        uid = st.create_multipart("g", {})
        st.upload_part("g", uid, 1, rngs[2])  # at the end of the file when it arrived
        os.pwrite(fd, data[0], 3 * PART)  # the file grew: another part follows
        st.upload_part("g", uid, 2, FileRange(fd, 3 * PART, PART - 5))
        assert _sent(s3, bucket, "g", uid) == [1]
        st.complete_multipart("g", uid, [(1, ""), (2, "")])
        assert sent == [1, 2]
        assert ref_decrypt(*_read(s3, bucket, "g")) == data[2] + data[0][:PART - 5]
    finally:
        os.close(fd)


def test_parts_out_of_order_stop_waiting(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse or parallel write: a part far ahead of the next to encrypt is kept at once, and
    after one wait timed out no part of that upload waits any more (a stalled streamer would
    hold up the close for a second per part)."""
    data = [os.urandom(PART) for _ in range(12)]
    fd, rngs = _ranges(tmp_path, data)
    uid = st.create_multipart("f", {})

    def returns(n: int) -> bool:
        t = threading.Thread(target=st.upload_part, args=("f", uid, n, rngs[n - 1]))
        t.start()
        t.join(20)
        return not t.is_alive()

    try:
        monkeypatch.setattr(s3ec_upload, "_WAIT", 60.0)
        assert returns(11)  # 10 parts ahead: kept, no wait
        monkeypatch.setattr(s3ec_upload, "_WAIT", 0.1)
        st.upload_part("f", uid, 3, rngs[2])  # waits for parts 1 and 2, times out: kept
        monkeypatch.setattr(s3ec_upload, "_WAIT", 60.0)
        assert returns(4) and returns(2)  # kept at once
        assert _sent(s3, bucket, "f", uid) == []
        for n in (1, 5, 6, 7, 8, 9, 10, 12):
            st.upload_part("f", uid, n, rngs[n - 1])
        st.complete_multipart("f", uid, [(n, "") for n in range(1, 13)])
    finally:
        os.close(fd)
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)
