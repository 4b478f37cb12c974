"""Filename encryption: round trip of any POSIX name, determinism, limits, foreign names."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3encfs.codec import NameTooLong, UndecodableName
from s3encfs.crypto import MAX_ENCRYPTED_NAME_BYTES, ClientCodec

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
ENC = ClientCodec({"k1": K1, "k2": K2}, "k1")

# any POSIX component: bytes without "/" and NUL, not "." or "..", via os.fsdecode
posix_names = (
    st.binary(min_size=1, max_size=MAX_ENCRYPTED_NAME_BYTES)
    .filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
    .map(os.fsdecode)
)


@settings(max_examples=300, deadline=None)
@given(name=posix_names, parent=st.sampled_from(["", "a", "a/b", "dir with space/ü"]))
def test_any_posix_name_round_trips(name: str, parent: str) -> None:
    enc = ENC.encode_name(parent, name)
    assert re.fullmatch(r"[a-z2-7]+", enc)
    assert len(enc) <= 255 and enc not in (".", "..")
    assert ENC.decode_name(parent, enc) == name
    assert os.fsencode(ENC.decode_name(parent, enc)) == os.fsencode(name)


def test_deterministic_per_directory() -> None:
    a = ENC.encode_name("x", "report.pdf")
    assert ENC.encode_name("x", "report.pdf") == a
    assert ENC.encode_name("/x/", "report.pdf") == a  # parent normalised
    b = ENC.encode_name("y", "report.pdf")
    assert a != b
    with pytest.raises(UndecodableName):
        ENC.decode_name("y", a)  # moved into another directory


def test_name_key_is_the_naming_master_key() -> None:
    rotated = ClientCodec({"k1": K1, "k2": K2}, "k2", name_key_id="k1")
    assert rotated.encode_name("", "f") == ENC.encode_name("", "f")
    other = ClientCodec({"k1": K1, "k2": K2}, "k2")
    assert other.encode_name("", "f") != ENC.encode_name("", "f")
    with pytest.raises(UndecodableName):
        other.decode_name("", ENC.encode_name("", "f"))


def test_length_limit() -> None:
    ok = "é" * (MAX_ENCRYPTED_NAME_BYTES // 2) + "a" * (MAX_ENCRYPTED_NAME_BYTES % 2)
    assert len(ok.encode()) == MAX_ENCRYPTED_NAME_BYTES == 143
    assert len(ENC.encode_name("", ok)) <= 255
    with pytest.raises(NameTooLong):
        ENC.encode_name("", ok + "a")
    with pytest.raises(NameTooLong):
        ENC.encode_name("", "a" * 255)


@pytest.mark.parametrize(
    "foreign",
    [
        "README.md",
        "",
        ".hidden",
        "abc",
        "a" * 300,
        "mfrgg===",
        "MFRGG",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_foreign_names_are_undecodable(foreign: str) -> None:
    with pytest.raises(UndecodableName):
        ENC.decode_name("", foreign)


def test_tampered_encoded_name() -> None:
    enc = ENC.encode_name("", "hello")
    flipped = ("b" if enc[0] != "b" else "c") + enc[1:]
    with pytest.raises(UndecodableName):
        ENC.decode_name("", flipped)
    with pytest.raises(UndecodableName):
        ENC.decode_name("", enc[:-1])


def test_invalid_components_rejected() -> None:
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(ValueError):
            ENC.encode_name("", bad)


def test_identity_names_when_disabled() -> None:
    plain = ClientCodec({"k1": K1}, "k1", encrypt_names=False)
    assert not plain.encrypts_names and ENC.encrypts_names
    name = os.fsdecode(b"caf\xe9 .txt")
    assert plain.encode_name("", name) == name
    assert plain.decode_name("", name) == name
    assert plain.encode_name("", "a" * 1024) == "a" * 1024
    with pytest.raises(NameTooLong):
        plain.encode_name("", "a" * 1025)
    with pytest.raises(NameTooLong):
        plain.encode_name("", "é" * 513)  # 1026 bytes
