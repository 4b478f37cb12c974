"""Checked-in vectors of client formats v1 and v2 (tests/vectors/format_v*.json) still decrypt,
and the generator still produces exactly them: any change to a format or to a key schedule fails
here. If a change is intended, bump FORMAT_VERSION, keep reading the old ones, add new vectors."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from s3encfs.codec import IntegrityError
from s3encfs.crypto import ClientCodec
from s3encfs.crypto.envelope import decrypt_object

VECTORS = Path(__file__).with_name("vectors")
SETS: dict[int, dict[str, Any]] = {
    v: json.loads((VECTORS / f"format_v{v}.json").read_text()) for v in (1, 2)
}
DATA = SETS[1]
ALL_OBJECTS = [(v, o) for v, d in SETS.items() for o in d["objects"]]


def codec(current: str | None = None) -> ClientCodec:
    keys = {k: bytes.fromhex(v) for k, v in DATA["master_keys_hex"].items()}
    return ClientCodec(
        keys,
        current or DATA["current"],
        segment_size=DATA["segment_size"],
        name_key_id=DATA["current"],
    )


def test_vector_set_covers_the_cases() -> None:
    labels = {o["label"] for o in DATA["objects"]}
    assert {"empty", "one-byte", "one-segment", "several-segments", "long-name"} <= labels
    sizes = {o["label"]: len(o["plaintext_hex"]) // 2 for o in DATA["objects"]}
    seg = DATA["segment_size"]
    assert sizes["empty"] == 0 and sizes["one-byte"] == 1 and sizes["one-segment"] == seg
    assert sizes["several-segments"] > 2 * seg


@pytest.mark.parametrize(("version", "obj"), ALL_OBJECTS,
                         ids=[f"v{v}-{o['label']}" for v, o in ALL_OBJECTS])
def test_object_vectors_decrypt(version: int, obj: dict[str, Any]) -> None:
    c = codec("vec-key-2")  # the reader's current key (and written format) does not matter
    body = bytes.fromhex(obj["body_hex"])
    plain = bytes.fromhex(obj["plaintext_hex"])
    assert obj["metadata"]["s3encfs-v"] == str(version)
    assert c.geometry.plain_size(len(body)) == len(plain)
    assert decrypt_object(c.open_object(obj["metadata"]), body) == plain
    assert c.open_attrs(obj["metadata"], obj.get("path", "")) == obj["attrs"]
    if version >= 2:  # bound to its path
        with pytest.raises(IntegrityError):
            c.open_attrs(obj["metadata"], obj["path"] + "x")
    name = os.fsdecode(bytes.fromhex(obj["name_hex"]))
    assert c.decode_name(obj["parent"], obj["encoded_name"]) == name
    assert c.encode_name(obj["parent"], name) == obj["encoded_name"]
    bad = bytearray(body)
    bad[len(bad) // 2] ^= 0x80
    with pytest.raises(IntegrityError):
        decrypt_object(c.open_object(obj["metadata"]), bytes(bad))


def test_name_and_blob_vectors() -> None:
    c = codec()
    for n in DATA["names"]:
        name = os.fsdecode(bytes.fromhex(n["name_hex"]))
        assert c.decode_name(n["parent"], n["encoded"]) == name
        assert c.encode_name(n["parent"], name) == n["encoded"]
    for b in DATA["blobs"]:
        assert c.open_blob(b["purpose"], bytes.fromhex(b["blob_hex"])) == bytes.fromhex(
            b["data_hex"]
        )


@pytest.mark.parametrize("version", [1, 2])
def test_generator_reproduces_checked_in_bytes(version: int) -> None:
    spec = importlib.util.spec_from_file_location("vector_gen", VECTORS / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render(version) == (VECTORS / f"format_v{version}.json").read_text()
