"""Client mode's crypto work per small file stays bounded (issue 10: client ≥ 90 % of plain on W4).

What a mount does per file it writes: `new_object` (data key, wrap, commitment, cipher), then
`seal_attrs` for the upload, then `open_attrs` of the same metadata when a listing or a HEAD
shows the object; and per name: encode, then decode when a listing returns it. None of these
may unwrap the data key again or re-derive keys (each unwrap is an HKDF, an AES-GCM open, the
commitment HKDF and two more HKDFs for the cipher), nor decrypt a name this codec encoded.
Tampered or foreign metadata must still be refused (the memo is keyed by the exact entries).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import pytest

from s3encfs.codec import IntegrityError, UndecodableName
from s3encfs.crypto import envelope as env
from s3encfs.crypto.client_codec import ClientCodec

K1 = bytes(range(32))
ATTRS = {"mode": "33188", "uid": "0", "gid": "0", "mtime": "1700000000000000000"}
FILES = 40


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    c: collections.Counter[str] = collections.Counter()

    def counted(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            c[label] += 1
            return fn(*a, **kw)
        return wrapper

    for name in ("hkdf", "unwrap_data_key"):
        monkeypatch.setattr(env, name, counted(name, getattr(env, name)))
    return c


def _codec() -> ClientCodec:
    return ClientCodec({"k1": K1}, "k1", name_scheme=2)


def test_a_new_objects_attrs_are_sealed_and_opened_without_unwrapping(counts) -> None:
    codec = _codec()
    for i in range(FILES):
        _cipher, meta = codec.new_object()
        path = f"d/f{i}"
        meta = {**meta, **codec.seal_attrs(meta, ATTRS, path)}
        assert codec.open_attrs(meta, path) == ATTRS
    assert counts["unwrap_data_key"] == 0  # was 2 per file (seal, then open)
    # wrap key, commitment, content key, attrs key: 4 per file (was 14 with the two unwraps)
    assert counts["hkdf"] / FILES <= 4


def test_an_object_from_another_mount_is_unwrapped_once(counts) -> None:
    writer, reader = _codec(), _codec()
    _c, meta = writer.new_object()
    meta = {**meta, **writer.seal_attrs(meta, ATTRS, "f")}
    for _ in range(5):
        assert reader.open_attrs(meta, "f") == ATTRS
        reader.open_object(meta)
    assert counts["unwrap_data_key"] == 1


@pytest.mark.parametrize("entry", [env.META_WRAPPED, env.META_COMMIT, env.META_OID])
def test_tampered_key_entries_still_refused_after_the_object_was_opened(entry) -> None:
    codec = _codec()
    _c, meta = codec.new_object()
    meta = {**meta, **codec.seal_attrs(meta, ATTRS, "f")}
    assert codec.open_attrs(meta, "f") == ATTRS
    raw = bytearray(env.b64d(meta[entry], entry))
    raw[3] ^= 1
    bad = {**meta, entry: env.b64e(bytes(raw))}
    with pytest.raises(IntegrityError):
        codec.open_attrs(bad, "f")
    # and the attrs of one object never open under another's key entries
    _c2, other = codec.new_object()
    with pytest.raises(IntegrityError):
        codec.open_attrs({**other, env.META_ATTRS: meta[env.META_ATTRS]}, "f")


def test_the_cipher_memo_is_bounded() -> None:
    codec = _codec()
    for _ in range(1100):
        codec.new_object()
    assert len(codec._ciphers) <= 1024
    assert len(codec._live) <= 1024  # only those the memo holds: nothing else keeps them


def test_a_new_object_seals_without_unwrapping_after_many_others(counts) -> None:
    """A first backup makes more new objects than the memo holds before the first upload
    seals its attrs: the cipher its content still holds is used, not a second unwrap."""
    codec = _codec()
    held = [codec.new_object() for _ in range(FILES)]
    for _ in range(1100):
        codec.new_object()
    for i, (cipher, meta) in enumerate(held):
        sealed = {**meta, **codec.seal_attrs(meta, ATTRS, f"f{i}")}
        assert env.open_attrs(cipher, sealed[env.META_ATTRS], f"f{i}") == ATTRS
    assert counts["unwrap_data_key"] == 0  # was one per held file
    assert len(codec._live) <= FILES + 1024


class _CountingSiv:
    def __init__(self, siv: Any) -> None:
        self.siv, self.decrypts, self.encrypts = siv, 0, 0

    def encrypt(self, *a: Any) -> bytes:
        self.encrypts += 1
        return self.siv.encrypt(*a)

    def decrypt(self, *a: Any) -> bytes:
        self.decrypts += 1
        return self.siv.decrypt(*a)


@pytest.mark.parametrize("scheme", [1, 2])
def test_names_this_codec_encoded_decode_without_aes_siv(scheme: int) -> None:
    codec = ClientCodec({"k1": K1}, "k1", name_scheme=scheme)
    siv = _CountingSiv(codec._names._siv)  # type: ignore[union-attr]
    codec._names._siv = siv  # type: ignore[union-attr]
    encoded = [codec.encode_name("inc/linux", f"file{i}.h") for i in range(FILES)]
    assert [codec.decode_name("inc/linux", e) for e in encoded] == \
        [f"file{i}.h" for i in range(FILES)]
    assert siv.decrypts == 0
    # a name from another directory is still not accepted here, and a fresh codec (no memo)
    # decodes the same names with AES-SIV
    with pytest.raises(UndecodableName):
        codec.decode_name("inc/other", encoded[0])
    fresh = ClientCodec({"k1": K1}, "k1", name_scheme=scheme)
    assert fresh.decode_name("inc/linux", encoded[1]) == "file1.h"


# ------------------------------------------------------------------ staging slots

SEG = 64 * 1024


def _staging(tmp_path, slots) -> Any:
    from s3encfs.cache.staging import StagingFile

    return StagingFile(str(tmp_path / "st"), "f1", SEG, slots)


def test_a_small_files_slot_holds_its_bytes_not_a_whole_segment(tmp_path) -> None:
    from s3encfs.crypto.client_codec import StagingSlots

    st = _staging(tmp_path, StagingSlots(K1))
    body = bytes(range(256)) * 4 + b"\x00\x07"  # 1,026 bytes, a zero inside
    st.write_segment(0, body)  # padded to 64 KiB by the staging file, as _write_segments does
    assert (tmp_path / "st").stat().st_size == len(body) + 32  # was 64 KiB + 28
    assert st.read_segment(0) == body + bytes(SEG - len(body))
    st.write_segment(1, b"z" * SEG)  # a whole segment: a whole slot
    st.write_segment(0, b"q" * SEG)  # the short slot grows to a whole one...
    assert st.read_segment(0) == b"q" * SEG and st.read_segment(1) == b"z" * SEG
    st.write_segment(0, b"s" * 10)  # ...and back: stale bytes behind a short slot are ignored
    assert st.read_segment(0) == b"s" * 10 + bytes(SEG - 10)
    st.write_segment(2, bytes(SEG))  # all zeros: 32 bytes
    assert st.read_segment(2) == bytes(SEG)
    st.remove()


def test_short_slots_are_bound_to_index_length_and_file(tmp_path) -> None:
    import struct

    from s3encfs.crypto.client_codec import StagingSlots

    slots = StagingSlots(K1)
    sealed = slots.seal("f1", 3, b"secret" + bytes(SEG - 6))
    assert len(sealed) == 6 + 32 and b"secret" not in sealed
    assert slots.open("f1", 3, sealed) == b"secret"
    for fid, idx, data in [("f1", 4, sealed), ("f2", 3, sealed),
                           ("f1", 3, struct.pack(">I", 5) + sealed[4:]),  # shorter length
                           ("f1", 3, sealed[:-1]), ("f1", 3, sealed[:20])]:
        with pytest.raises(IntegrityError):
            slots.open(fid, idx, data)


def test_whole_slots_sealed_the_earlier_way_still_open(tmp_path) -> None:
    import os
    import struct

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from s3encfs.crypto.client_codec import StagingSlots

    slots = StagingSlots(K1)
    plain = b"old" + bytes(SEG - 3)
    for i in range(50):  # nonces that read as a length that fits: tried short, then whole
        nonce = struct.pack(">I", i * 1300) + os.urandom(8)
        key = env.hkdf(K1, b"s3encfs/v1/slot\x00f1")  # docs/FORMAT.md, "Local staging slots"
        old = nonce + AESGCM(key).encrypt(nonce, plain, struct.pack(">Q", i))
        assert slots.open("f1", i, old) == plain


class _CountingNames:
    """A codec wrapper that counts `encode_name` calls (Layout's memo is in front of it)."""

    def __init__(self, codec: ClientCodec) -> None:
        self.codec, self.encodes = codec, 0

    def encode_name(self, parent: str, name: str) -> str:
        self.encodes += 1
        return self.codec.encode_name(parent, name)


def test_a_paths_key_is_encoded_once_and_long_names_every_time() -> None:
    from s3encfs.codec import NameTooLong
    from s3encfs.store.layout import Layout

    names = _CountingNames(_codec())
    layout = Layout("pfx", names)  # type: ignore[arg-type]
    parts = ("inc", "linux", "f.h")
    key = layout.file_key(parts)
    assert names.encodes == 3
    for _ in range(5):  # create, rename, upload, index: one encoding of each component
        assert layout.file_key(parts) == key
        assert layout.encode_rel(parts[:2]) + "/" == layout.dir_prefix(parts[:2])[4:]
    assert names.encodes == 5  # ("inc", "linux") once more, nothing for the file
    assert key == "pfx/" + "/".join(_codec().encode_name("/".join(parts[:i]), n)
                                    for i, n in enumerate(parts))
    long = ("inc", "x" * 200)  # a hashed component: its side object's body must stay known
    layout.encode_rel(long)
    before = names.encodes
    layout.encode_rel(long)
    assert names.encodes == before + 2
    with pytest.raises(NameTooLong):  # never memoized, refused every time
        layout.encode_rel(("inc", "y" * 300))
    with pytest.raises(NameTooLong):
        layout.encode_rel(("inc", "y" * 300))


def test_attrs_this_codec_sealed_or_opened_open_again_without_aes(monkeypatch) -> None:
    """A directory listed again (after --dir-ttl, or after the kernel forgot one of its files)
    shows the objects this mount wrote: their attrs open from the memo, not by AES-GCM again.
    Any other bytes — another path, a flipped bit, other key entries — are still checked."""
    writer, reader = _codec(), _codec()
    opens = collections.Counter()
    real = env.open_attrs

    def counted(*a: Any, **kw: Any) -> Any:
        opens["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(env, "open_attrs", counted)
    metas = []
    for i in range(FILES):
        _c, meta = writer.new_object()
        metas.append({**meta, **writer.seal_attrs(meta, ATTRS, f"d/f{i}")})
    for _ in range(3):
        assert [writer.open_attrs(m, f"d/f{i}") for i, m in enumerate(metas)] == [ATTRS] * FILES
        assert [reader.open_attrs(m, f"d/f{i}") for i, m in enumerate(metas)] == [ATTRS] * FILES
    assert opens["n"] == FILES  # the reader's first listing; nothing after that, nor the writer
    got = writer.open_attrs(metas[0], "d/f0")
    got["mode"] = "0"  # a caller changing its copy does not change the memo
    assert writer.open_attrs(metas[0], "d/f0") == ATTRS
    for codec in (writer, reader):
        with pytest.raises(IntegrityError):
            codec.open_attrs(metas[0], "d/f1")  # moved to another name
        raw = bytearray(env.b64d(metas[0][env.META_ATTRS], env.META_ATTRS))
        raw[-1] ^= 1
        with pytest.raises(IntegrityError):
            codec.open_attrs({**metas[0], env.META_ATTRS: env.b64e(bytes(raw))}, "d/f0")
        with pytest.raises(IntegrityError):  # the attrs under another object's key entries
            codec.open_attrs({**metas[1], env.META_ATTRS: metas[0][env.META_ATTRS]}, "d/f0")


@pytest.mark.parametrize("scheme", [1, 2])
def test_a_new_names_limits_are_checked_without_encrypting_it(scheme: int) -> None:
    """`Layout.check_rel` (what create and rename check) refuses exactly what `encode_rel`
    refuses — a component too long, a key over S3's 1,024 bytes — and encrypts no new name."""
    from s3encfs.codec import NameTooLong
    from s3encfs.store.layout import Layout

    codec = ClientCodec({"k1": K1}, "k1", name_scheme=scheme)
    siv = _CountingSiv(codec._names._siv)  # type: ignore[union-attr]
    codec._names._siv = siv  # type: ignore[union-attr]
    for n in [*range(1, 300), 400]:
        for name in ("a" * n, "é" * (n // 2 + 1)):
            try:
                want = len(codec.encode_name("p", name))
            except NameTooLong:
                want = -1
            try:
                got = codec.encoded_len(name)
            except NameTooLong:
                got = -1
            assert got == want, (scheme, len(name.encode()))
    deep = tuple(f"dir{i:02d}" + "x" * 60 for i in range(12))
    siv.encrypts = 0
    checker = Layout("pfx", codec)
    encoder = Layout("pfx", ClientCodec({"k1": K1}, "k1", name_scheme=scheme))
    checked = 0
    for depth in range(1, 13):
        try:
            encoder.encode_rel(deep[:depth - 1])
        except NameTooLong:
            break  # no deeper directory can exist
        for n in (1, 20, 31, 32, 60, 95, 96, 120, 143, 144, 200, 255, 256):
            parts = (*deep[:depth - 1], "f" * n + str(depth))
            try:
                encoder.encode_rel(parts)
                refused = False
            except NameTooLong:
                refused = True
            encrypts = siv.encrypts
            if refused:
                with pytest.raises(NameTooLong):
                    checker.check_rel(parts)
            else:
                checker.check_rel(parts)
                checked += 1
            assert siv.encrypts - encrypts <= 1  # at most the new parent's own name, once
    assert checked > 50 and depth > 6
    assert siv.encrypts <= depth  # the parents (each once), never a name checked
