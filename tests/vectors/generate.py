"""Regenerate the client-format test vectors (format_v1.json, format_v2.json, and names_v2.json
for name scheme 2): `python tests/vectors/generate.py`.

Randomness (object ids, data keys, nonces, salts) comes from a seeded SHA-256 counter stream, so
the output is reproducible; tests/test_crypto_vectors.py checks that the checked-in JSON still
decrypts AND that regenerating gives the same bytes (any format change shows up as a diff).
The keys here are public test keys; never use them for data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from s3encfs.crypto import ClientCodec
from s3encfs.crypto import envelope as env
from s3encfs.store.layout import Layout

VERSIONS = (1, 2)


def out_path(version: int) -> Path:
    return Path(__file__).with_name(f"format_v{version}.json")


SEGMENT_SIZE = 4096
KEYS = {
    "vec-key-1": hashlib.sha256(b"s3encfs test vector key 1").digest(),
    "vec-key-2": hashlib.sha256(b"s3encfs test vector key 2").digest(),
}


def _stream(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def take(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return take


@contextmanager
def deterministic(seed: bytes) -> Iterator[None]:
    saved = env.random_bytes
    env.random_bytes = _stream(seed)
    try:
        yield
    finally:
        env.random_bytes = saved


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(n))


CASES = [
    ("empty", 0, "", "empty"),
    ("one-byte", 1, "docs", "a"),
    ("one-segment", SEGMENT_SIZE, "docs/sub", "exact segment.bin"),
    ("several-segments", 3 * SEGMENT_SIZE + 100, "", "several"),
    ("long-name", 5, "deep/dir", "n" * 140 + "é"),  # 142 bytes of UTF-8
]


def build(version: int = 1) -> dict[str, object]:
    codec = ClientCodec(KEYS, "vec-key-1", segment_size=SEGMENT_SIZE, format_version=version)
    layout = Layout("", codec)
    objects: list[dict[str, Any]] = []
    with deterministic(f"s3encfs vectors v{version}".encode()):
        for label, size, parent, name in CASES:
            plain = pattern(size)
            cipher, meta = codec.new_object()
            body = env.encrypt_object(cipher, plain)
            attrs = {"mode": "33188", "uid": "1000", "gid": "1000", "mtime": "1700000000.5"}
            # v2 binds the attrs to the object's key relative to the prefix (v1 ignores it)
            path = layout.encode_rel((*(parent.split("/") if parent else ()), name))
            meta = {**meta, **codec.seal_attrs(meta, attrs, path if version >= 2 else "")}
            extra = {"path": path} if version >= 2 else {}
            objects.append(
                {
                    **extra,
                    "label": label,
                    "plaintext_hex": plain.hex(),
                    "metadata": meta,
                    "body_hex": body.hex(),
                    "attrs": attrs,
                    "parent": parent,
                    "name_hex": os.fsencode(name).hex(),
                    "encoded_name": codec.encode_name(parent, name),
                }
            )
        rotated: dict[str, str] = dict(objects[1]["metadata"])
        rotated.update(codec.rewrap(rotated, "vec-key-2"))
        objects.append({**objects[1], "label": "one-byte-rewrapped-key-2", "metadata": rotated})
        raw_name = os.fsdecode(b"latin1-caf\xe9")
        names = [
            {
                "parent": p,
                "name_hex": os.fsencode(raw_name).hex(),
                "encoded": codec.encode_name(p, raw_name),
            }
            for p in ("", "x/y")
        ]
        blobs = [
            {
                "purpose": purpose,
                "data_hex": data.hex(),
                "blob_hex": codec.seal_blob(purpose, data).hex(),
            }
            for purpose, data in (("canary", b"s3encfs canary"), ("dir-index", b""))
        ]
    return {
        "format_version": version,
        "segment_size": SEGMENT_SIZE,
        "master_keys_hex": {k: v.hex() for k, v in KEYS.items()},
        "current": "vec-key-1",
        "objects": objects,
        "names": names,
        "blobs": blobs,
    }


def render(version: int = 1) -> str:
    return json.dumps(build(version), indent=1, sort_keys=True) + "\n"


NAMES2_PATH = Path(__file__).with_name("names_v2.json")
# (parent, name): every padding class boundary around 32 bytes, the longest inline name (95),
# the shortest hashed one (96), 255 bytes of ASCII and of UTF-8, a non-UTF-8 name
NAMES2_CASES = [
    ("", "a"), ("", "b" * 31), ("", "c" * 32), ("docs", "report.pdf"), ("docs", "n" * 95),
    ("docs", "n" * 96), ("deep/dir", "L" * 255), ("deep/dir", "é" * 127 + "x"),
    ("", os.fsdecode(b"latin1-caf\xe9")),
]


def build_names2() -> dict[str, object]:
    """Name scheme 2 (deterministic: no randomness involved)."""
    codec = ClientCodec(KEYS, "vec-key-1", name_scheme=2)
    names = []
    for parent, name in NAMES2_CASES:
        encoded = codec.encode_name(parent, name)
        side = codec.long_body(encoded)
        names.append({"parent": parent, "name_hex": os.fsencode(name).hex(),
                      "encoded": encoded, "side_object_hex": side.hex() if side else None})
    return {"name_scheme": 2, "master_keys_hex": {k: v.hex() for k, v in KEYS.items()},
            "name_key_id": "vec-key-1", "names": names}


def render_names2() -> str:
    return json.dumps(build_names2(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    for v in VERSIONS:
        out_path(v).write_text(render(v))
        print(f"wrote {out_path(v)}")
    NAMES2_PATH.write_text(render_names2())
    print(f"wrote {NAMES2_PATH}")
