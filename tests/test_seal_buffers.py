"""Client mode seals into buffers it reuses, not a new bytes per segment (issue 10/16: W1).

A staged 64 KiB segment was sealed into a fresh ciphertext, prefixed with its nonce (a second
buffer and a copy), and an upload read each slot back into a new buffer, opened it into
another, sealed that into a fourth and a fifth and joined 128 of them into a part. The same
bytes now come from one part buffer and per-thread scratch buffers: what is checked here is
that the bytes (the formats, docs/FORMAT.md) are unchanged and that the buffers are gone.
"""

from __future__ import annotations

import struct
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.codec import IdentityCodec, IntegrityError
from s3encfs.crypto import envelope as env
from s3encfs.crypto.client_codec import ClientCodec, StagingSlots
from s3encfs.fs.uploader import Uploader, UploadJob

K1 = bytes(range(32))
SEG = 64 * 1024
NONCE = bytes(range(100, 112))


@pytest.fixture
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "random_bytes",
                        lambda n: NONCE if n == env.NONCE else bytes(range(n)))


def _slot_key(file_id: str) -> bytes:
    return env.hkdf(K1, b"s3encfs/v1/slot\x00" + file_id.encode())  # FORMAT.md, staging slots


def test_slots_sealed_into_a_buffer_are_the_documented_forms(fixed_nonce: None) -> None:
    slots = StagingSlots(K1)
    aead = AESGCM(_slot_key("f1"))
    whole = bytes(range(256)) * (SEG // 256)
    out = bytearray(SEG + 100)
    n = slots.seal_into("f1", 7, memoryview(whole), out)
    assert bytes(out[:n]) == NONCE + aead.encrypt(NONCE, whole, struct.pack(">Q", 7))
    assert slots.seal("f1", 7, whole) == bytes(out[:n])
    short = b"abc" + bytes(SEG - 3)
    n = slots.seal_into("f1", 7, short, out)
    head = struct.pack(">I", 3)
    assert bytes(out[:n]) == head + NONCE + aead.encrypt(
        NONCE, b"abc", b"s3encfs/v2/slot-short\x00" + struct.pack(">Q", 7) + head)
    plain = bytearray(SEG)
    assert slots.open_into("f1", 7, bytes(out[:n]), plain) == 3 and plain[:3] == b"abc"
    sealed = slots.seal("f1", 7, whole)
    assert slots.open_into("f1", 7, sealed, plain) == SEG and plain == whole
    for fid, idx, data in [("f2", 7, sealed), ("f1", 8, sealed), ("f1", 7, sealed[:-1])]:
        with pytest.raises(IntegrityError):
            slots.open_into(fid, idx, data, plain)


def test_a_segment_encrypted_into_a_buffer_is_encrypt_segment(fixed_nonce: None) -> None:
    cipher, _meta = ClientCodec({"k1": K1}, "k1").new_object()
    data = bytes(range(256)) * (SEG // 256)
    out = memoryview(bytearray(2 * SEG))
    for i, pt, last in [(0, data, False), (3, data[:100], True), (0, b"", True)]:
        n = cipher.encrypt_segment_into(i, memoryview(pt), last, out)
        assert bytes(out[:n]) == cipher.encrypt_segment(i, pt, last)
        assert cipher.decrypt_segment(i, out[:n], last) == pt
    with pytest.raises(ValueError):  # a short segment that is not the last
        cipher.encrypt_segment_into(1, data[:100], False, out)


def _job(codec: Any, staging: StagingFile, size: int) -> UploadJob:
    cipher, meta = codec.new_object()
    dirty = DirtySet()
    for i in range(codec.geometry.segment_count(size)):
        dirty.add(i)
    return UploadJob("k", size, dirty, staging, cipher, meta, None, None, 0)


@pytest.mark.parametrize("mode", ["plain", "client"])
def test_an_upload_body_is_built_in_one_buffer(tmp_path: Path, mode: str) -> None:
    codec: Any = IdentityCodec() if mode == "plain" else ClientCodec({"k1": K1}, "k1")
    staging = StagingFile(str(tmp_path / "st"), "f1", SEG, codec.slot_cipher(str(tmp_path)))
    data = (bytes(range(256)) * 4 * 1024 * 9)[:128 * SEG - 1000]  # 128 segments, a short last
    for i in range(0, len(data), SEG):
        staging.write_segment(i // SEG, data[i:i + SEG])
    job = _job(codec, staging, len(data))
    pool = ThreadPoolExecutor(1)
    uploader = Uploader(None, None, codec.geometry, 16, 128, pool)  # type: ignore[arg-type]
    uploader.small_body(job, 16 << 20)  # this thread's scratch buffers exist from here on
    tracemalloc.start()
    try:
        body = uploader.small_body(job, 16 << 20)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pool.shutdown()
    assert body is not None and len(body) == codec.geometry.object_size(len(data))
    # one body's worth and little more: a bytes per segment joined (or a sealed copy of each)
    # peaked at twice the body
    assert peak < len(body) + 4 * SEG, (peak, len(body))
    opened = env.decrypt_object(job.cipher, bytes(body)) if mode == "client" else bytes(body)  # type: ignore[arg-type]
    assert opened == data


def test_a_staged_write_allocates_no_buffer_per_slot(tmp_path: Path) -> None:
    staging = StagingFile(str(tmp_path / "st"), "f1", SEG, StagingSlots(K1))
    data = bytes(range(256)) * (SEG // 256)
    staging.write_segment(0, data)  # the scratch buffer
    tracemalloc.start()
    try:
        for i in range(1, 17):
            staging.write_segment(i, data)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < SEG // 2, peak  # was a 64 KiB ciphertext and its 64 KiB nonce-prefixed copy
    plain = bytearray(SEG)
    staging.write_segment(17, memoryview(data))  # a FUSE write's buffer, sealed as it is
    for i in range(18):
        assert staging.read_segment(i) == data
        assert staging.read_segment_into(i, plain) == data
    staging.remove()


def test_a_big_files_whole_slots_go_up_as_they_are_staged(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """ObjectSlots: a whole slot is the object's own segment, so the upload copies it instead of
    opening it and sealing the segment again (two of the three AES-GCM passes of a big write)."""
    codec = ClientCodec({"k1": K1}, "k1")
    cipher, _meta = codec.new_object()
    slots = codec.slot_cipher(str(tmp_path)).for_content(cipher)
    assert slots.whole_slots_are_segments
    staging = StagingFile(str(tmp_path / "st"), "f1", SEG, slots)
    data = (bytes(range(256)) * 4 * 1024 * 9)[:40 * SEG - 1000]  # 40 segments, a short last
    for i in range(0, len(data), SEG):
        staging.write_segment(i // SEG, data[i:i + SEG])
    job = _job(codec, staging, len(data))
    job.cipher = cipher
    sealed: list[int] = []
    real = env.SegmentCipher.encrypt_segment_into
    monkeypatch.setattr(env.SegmentCipher, "encrypt_segment_into",
                        lambda self, i, *a: sealed.append(i) or real(self, i, *a))
    body = Uploader(None, None, codec.geometry, 16, 128, None).small_body(  # type: ignore[arg-type]
        job, 16 << 20)
    assert body is not None and sealed == [39]  # only the last segment is sealed again
    stride = SEG + env.SEGMENT_OVERHEAD
    with open(tmp_path / "st", "rb") as f:
        assert bytes(body[:39 * stride]) == f.read(39 * stride)  # the staged bytes as they are
    assert env.decrypt_object(cipher, bytes(body)) == data
    other, _meta = codec.new_object()  # another version's cipher copies nothing
    job.cipher, sealed[:] = other, []
    assert env.decrypt_object(other, bytes(Uploader(  # type: ignore[arg-type]
        None, None, codec.geometry, 16, 128, None).small_body(job, 16 << 20) or b"")) == data
    assert sealed == list(range(40))


def test_object_slots_open_across_versions_and_forms(tmp_path: Path) -> None:
    codec = ClientCodec({"k1": K1}, "k1")
    base = StagingSlots(K1)
    v1, _m1 = codec.new_object()
    v2, _m2 = codec.new_object()
    v3, _m3 = codec.new_object()
    one = base.for_content(v1)
    whole = bytes(range(256)) * (SEG // 256)
    sealed = one.seal("f1", 5, whole)
    assert len(sealed) == SEG + 28 and v1.decrypt_segment(5, sealed, False) == whole
    assert one.copies_as(v1, memoryview(sealed)) and not one.copies_as(v2, memoryview(sealed))
    short = one.seal("f1", 5, b"tiny" + bytes(SEG - 4))
    assert len(short) == 4 + 32 and one.open("f1", 5, short) == b"tiny"
    padded = short + sealed[len(short):]  # a short slot before stale bytes: never copied
    assert not one.copies_as(v1, memoryview(padded)) and one.open("f1", 5, padded) == b"tiny"
    old_form = base.seal("f1", 5, whole)  # a whole slot under the slot key (before this)
    assert one.open("f1", 5, old_form) == whole  # (never copied: such a file has no marker)
    two = one.for_content(v2, one)  # an open file's next version; a read in flight of v1's
    assert two.open("f1", 5, sealed) == whole and two.seal("f1", 5, whole) != sealed
    three = two.for_content(v3, two)
    for slots, fid, idx in [(three, "f1", 5), (one, "f1", 6), (one, "f2", 5)]:
        with pytest.raises(IntegrityError):  # two versions back, another index, another file
            slots.open(fid, idx, sealed if fid == "f1" else short)


def test_a_zero_padded_segment_in_a_view_is_measured_as_fast_as_bytes() -> None:
    """A partial write's segment reaches the slot cipher as a memoryview; comparing a view with
    bytes goes item by item (15x slower than bytes for a 1 KB file's 63 KiB of zeros)."""
    import time

    from s3encfs.crypto.slots import meaningful_len

    seg = bytearray(SEG)
    seg[:1000] = b"x" * 1000
    timings = []
    for data in (bytes(seg), memoryview(seg)):
        assert meaningful_len(data) == 1000
        t = time.process_time()
        for _ in range(300):
            meaningful_len(data)
        timings.append(time.process_time() - t)
    assert timings[1] < 4 * timings[0] + 0.01, timings


def test_a_run_of_segments_is_written_at_once_and_reads_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`StagingFile.write_segments`: whole segments sealed side by side and written with one
    pwrite per 16 of them; each slot holds what `write_segment` would have written (a short
    slot's unused rest is zeros), reads back, and only whole slots of the version's key count
    as the object's segments (`segments_of`, what a file-range part relies on)."""
    import os

    codec = ClientCodec({"k1": K1}, "k1")
    cipher, _meta = codec.new_object()
    slots = StagingSlots(K1).for_content(cipher)
    segs = [os.urandom(SEG) for _ in range(20)]
    segs[3] = b"tail" + bytes(SEG - 4)  # a short slot inside the run
    staging = StagingFile(str(tmp_path / "s"), "f1", SEG, slots)
    writes: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data: Any, off: int) -> int:
        writes.append(len(data))
        return real(fd, data, off)

    monkeypatch.setattr(os, "pwrite", pwrite)
    staging.write_segments(2, b"".join(segs))
    monkeypatch.setattr(os, "pwrite", real)
    slot = SEG + env.SEGMENT_OVERHEAD
    assert writes == [16 * slot, 4 * slot]
    for j, seg in enumerate(segs):
        assert staging.read_segment(2 + j) == seg
    raw = os.pread(staging.fd, slot, (2 + 3) * slot)
    assert raw[32 + 4:] == bytes(slot - 36)  # the short slot: be32 + nonce + 4 + tag, zeros
    assert staging.segments_of(cipher, 2, 5) and staging.segments_of(cipher, 6, 22)
    assert not staging.segments_of(cipher, 2, 6)  # the short slot
    assert not staging.segments_of(cipher, 1, 3)  # never written
    other, _ = codec.new_object()
    assert not staging.segments_of(other, 6, 22)
    staging.write_segment(5, b"x" * SEG)
    assert staging.segments_of(cipher, 2, 22)
    staging.truncate_segments(10)
    assert staging.segments_of(cipher, 2, 10) and not staging.segments_of(cipher, 9, 11)
    staging.cipher = slots.for_content(other, slots)  # the next version's key
    assert not staging.segments_of(cipher, 2, 10) and not staging.segments_of(other, 2, 10)
    staging.close()


@pytest.mark.parametrize("object_slots", [False, True])
def test_a_short_write_is_sealed_from_its_own_bytes_never_padded(
        tmp_path: Path, fixed_nonce: None, object_slots: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A small file's one write (fs/content._write_segments of a new segment) reaches
    `write_segment` as its own bytes: the short slot is sealed from them, the same bytes as
    sealing the zero-padded segment, with no 64 KiB padded copy made and scanned (session 14);
    a segment whose zeros do not leave room for the short form is padded and sealed whole."""
    codec = ClientCodec({"k": K1}, "k")
    slots: Any = codec.slot_cipher(str(tmp_path))
    if object_slots:
        slots = slots.for_content(codec.new_object()[0])
    seen: list[int] = []
    inner = slots.seal_into

    def recording(file_id: str, index: int, plaintext: Any, out: Any, *a: Any) -> int:
        seen.append(len(plaintext))
        return inner(file_id, index, plaintext, out, *a)

    monkeypatch.setattr(slots, "seal_into", recording)
    st = StagingFile(str(tmp_path / "s"), "f1", SEG, slots)
    data = b"#include <stdio.h>\n" * 700 + bytes(5)  # 13,305 bytes, 5 of them zeros
    st.write_segment(0, memoryview(data))
    assert seen == []  # not padded to 64 KiB and handed to seal_into
    expected = bytearray(SEG + 100)
    n = inner("f1", 0, data + bytes(SEG - len(data)), expected)  # the padded segment's slot
    assert (tmp_path / "s").read_bytes() == bytes(expected[:n])
    assert n == len(data) - 5 + 32
    assert st.read_segment(0) == data + bytes(SEG - len(data))
    out = bytearray(SEG)
    assert bytes(st.read_segment_into(0, out)) == data + bytes(SEG - len(data))
    near_full = bytes(range(1, 256)) * (SEG // 255)  # 65,535 bytes: no room for a short slot
    st.write_segment(1, near_full)
    assert seen == [SEG]
    assert st.read_segment(1) == near_full + bytes(1)
    st.close()


def test_a_slot_subkey_is_derived_once_per_file_across_hundreds_of_files(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A first backup seals each small file at its write and opens it at its upload, hundreds
    of files later: past the 256 AES contexts kept, the file's subkey is remembered (32 bytes),
    so the reopening takes no second HKDF (session 14); the slots still open, and a file id
    never seen still gets its own key."""
    from s3encfs.crypto import slots as slots_mod

    derived: list[bytes] = []
    real = env.hkdf

    def counting(master: bytes, info: bytes, *a: Any, **kw: Any) -> bytes:
        derived.append(info)
        return real(master, info, *a, **kw)

    monkeypatch.setattr(slots_mod.env, "hkdf", counting)
    slots = StagingSlots(K1)
    data = b"x" * 1000 + bytes(SEG - 1000)
    sealed = [slots.seal(f"f{i}", 0, data) for i in range(600)]
    assert len(derived) == 600
    out = bytearray(SEG)
    for i in range(600):  # the first 344 AES contexts are gone by now
        assert slots.open_into(f"f{i}", 0, sealed[i], out) == 1000 and out[:1000] == data[:1000]
    assert len(derived) == 600
    with pytest.raises(IntegrityError):
        slots.open_whole("f600", 0, sealed[0], out)
    assert len(derived) == 601
    assert StagingSlots(K1).open_into("f3", 0, sealed[3], out) == 1000  # the same subkey
