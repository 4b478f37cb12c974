"""Name scheme 2 (crypto/names.py): padding before AES-SIV, long names as hashed components
with a sealed side record, and the checks a reader makes (docs/FORMAT.md, "Names")."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3encfs.codec import IntegrityError, NameTooLong, UndecodableName
from s3encfs.crypto import ClientCodec
from s3encfs.crypto.names import HASH_CHARS, INLINE_PADDED, NAME_MAX, is_long, pad, unpad

K1 = bytes(range(32))
V2 = ClientCodec({"k1": K1}, "k1", name_scheme=2)
V1 = ClientCodec({"k1": K1}, "k1")

posix_names = (
    st.binary(min_size=1, max_size=NAME_MAX)
    .filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
    .map(os.fsdecode)
)


def _fresh() -> ClientCodec:
    """A reader that has not encoded the names itself (a fresh mount)."""
    return ClientCodec({"k1": K1}, "k1", name_scheme=2)


@settings(max_examples=300, deadline=None)
@given(name=posix_names, parent=st.sampled_from(["", "a", "a/b", "dir with space/ü"]))
def test_any_posix_name_up_to_255_bytes_round_trips(name: str, parent: str) -> None:
    enc = V2.encode_name(parent, name)
    raw = os.fsencode(name)
    if len(pad(raw)) <= INLINE_PADDED:
        assert re.fullmatch(r"[a-z2-7]{1,180}", enc)
        assert _fresh().decode_name(parent, enc) == name  # needs nothing but the key
    else:
        assert is_long(enc) and len(enc) == 3 + HASH_CHARS
        reader = _fresh()
        with pytest.raises(UndecodableName):  # no side record seen yet
            reader.decode_name(parent, enc)
        body = V2.long_body(enc)
        assert body is not None and reader.learn_long(enc, body)
        assert reader.decode_name(parent, enc) == name
    assert os.fsencode(V2.decode_name(parent, enc)) == raw


def test_padding_hides_the_exact_length() -> None:
    lengths = {len(V2.encode_name("", "x" * n)) for n in range(1, 32)}
    assert lengths == {len(V2.encode_name("", "a"))} == {77}  # 32 + 16 bytes of base32
    assert len(V2.encode_name("", "x" * 32)) == 128  # the next class: 64 + 16 bytes
    assert len({len(V1.encode_name("", "x" * n)) for n in range(1, 32)}) > 1  # scheme 1 leaks


def test_padding_is_unambiguous() -> None:
    for n in range(1, 70):
        raw = bytes(range(n))
        assert unpad(pad(raw)) == raw and len(pad(raw)) % 32 == 0
    assert unpad(b"a" * 31 + b"\x02") is None  # bad padding bytes
    assert unpad(b"\x20" * 32) is None  # all padding: an empty name
    assert unpad(b"a" * 31 + b"\x00") is None


def test_inline_bound_and_limits() -> None:
    assert not is_long(V2.encode_name("", "n" * 95))
    assert len(V2.encode_name("", "n" * 95)) == 180
    assert is_long(V2.encode_name("", "n" * 96))
    assert is_long(V2.encode_name("", "é" * 127 + "a"))  # 255 bytes of UTF-8
    with pytest.raises(NameTooLong):
        V2.encode_name("", "n" * 256)
    with pytest.raises(NameTooLong):
        V2.encode_name("", "é" * 128)  # 256 bytes
    assert V2.name_max == 255 and V1.name_max == 143


def test_schemes_do_not_read_each_other() -> None:
    with pytest.raises(UndecodableName):
        V2.decode_name("", V1.encode_name("", "report.pdf"))
    with pytest.raises(UndecodableName):
        V1.decode_name("", V2.encode_name("", "report.pdf"))


def test_deterministic_per_directory() -> None:
    long = "L" * 200
    a = V2.encode_name("x", long)
    assert V2.encode_name("x", long) == a and V2.encode_name("y", long) != a
    with pytest.raises(UndecodableName):
        V2.decode_name("y", V2.encode_name("x", "short"))


def test_tampered_or_moved_long_names_fail() -> None:
    enc = V2.encode_name("d", "L" * 200)
    body = V2.long_body(enc)
    assert body is not None
    reader = _fresh()
    flipped = bytes([body[0] ^ 1]) + body[1:]
    assert not reader.learn_long(enc, flipped)  # HMAC of the side record
    other = V2.encode_name("d", "M" * 200)
    assert not reader.learn_long(other, body)  # the record of another name
    assert not reader.learn_long(enc[:-1] + ("a" if enc[-1] != "a" else "b"), body)
    assert reader.learn_long(enc, body)
    with pytest.raises(IntegrityError):  # the pair copied into another directory
        reader.decode_name("e", enc)
    assert reader.decode_name("d", enc) == "L" * 200


def test_a_second_spelling_of_the_same_hash_is_refused() -> None:
    """Base32 of 32 bytes leaves 4 unused bits in the last character: a hashed component with
    those bits changed decodes to the same HMAC, and must still be refused (it would list as a
    second, undecodable entry instead of failing the directory with EIO)."""
    import base64

    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    enc = V2.encode_name("d", "N" * 200)
    body = V2.long_body(enc)
    assert body is not None
    alt = enc[:-1] + alphabet[alphabet.index(enc[-1]) ^ 1]  # flip an unused low bit

    def raw(s: str) -> bytes:
        t = s[3:].upper()
        return base64.b32decode(t + "=" * (-len(t) % 8))

    assert alt != enc and raw(alt) == raw(enc)
    reader = _fresh()
    assert not reader.learn_long(alt, body)
    assert reader.learn_long(enc, body)


def test_a_short_name_smuggled_as_long_is_refused() -> None:
    """A hashed component must hold a name too long to be inline (one name, one key)."""
    import base64
    import hashlib
    import hmac

    from s3encfs.crypto.envelope import hkdf
    from s3encfs.crypto.names import LONG_INFO

    short = V2.encode_name("", "short")
    sealed = base64.b32decode(short.upper() + "=" * (-len(short) % 8))
    mac = hmac.new(hkdf(K1, LONG_INFO), sealed, hashlib.sha256).digest()
    fake = "gl-" + base64.b32encode(mac).decode().rstrip("=").lower()
    reader = _fresh()
    assert not reader.learn_long(fake, sealed)  # too short a record for a long name


def _vectors() -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "vectors" / "names_v2.json").read_text())


def test_checked_in_vectors_decode() -> None:
    vec = _vectors()
    keys = {k: bytes.fromhex(v) for k, v in vec["master_keys_hex"].items()}
    reader = ClientCodec(keys, vec["name_key_id"], name_scheme=2)
    for case in vec["names"]:
        name = os.fsdecode(bytes.fromhex(case["name_hex"]))
        if case["side_object_hex"]:
            assert is_long(case["encoded"])
            assert reader.learn_long(case["encoded"], bytes.fromhex(case["side_object_hex"]))
        assert reader.decode_name(case["parent"], case["encoded"]) == name


def test_generator_reproduces_checked_in_names() -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "vector_gen", Path(__file__).parent / "vectors" / "generate.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render_names2() == (Path(__file__).parent / "vectors" / "names_v2.json").read_text()


def test_encoded_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/INTERNALS.md, "Memory": the memo of encrypted names holds at most NAME_CACHE
    entries (then starts over), and a name encoded again after that is the same name."""
    from s3encfs.crypto import names

    monkeypatch.setattr(names, "NAME_CACHE", 50)
    nc = names.NameCipher(K1, scheme=2)
    first = nc.encode_name("", "f0")
    for i in range(200):
        nc.encode_name("", f"f{i}")
        assert len(nc._encoded) <= 50
    assert nc.encode_name("", "f0") == first
