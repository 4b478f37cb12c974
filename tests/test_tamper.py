"""Tamper suite on a real bucket in client mode (issue 3, "Done when").

Files are written through a real mount, the mount is unmounted, and the raw objects are then
tampered with through boto3: bit flips in bodies and in metadata, truncation at and inside a
segment boundary, swapped / duplicated segments, bodies swapped between objects, metadata copied
from another object.  A fresh mount (empty cache) must answer every read of a tampered file with
EIO — never wrong bytes — name the object key in its log, and keep serving the other files.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

from s3encfs.crypto.client_codec import ClientCodec
from s3encfs.keys.keyring import Keyring
from s3encfs.store.layout import Layout

SEG = 64 * 1024
OVERHEAD = 28
STRIDE = SEG + OVERHEAD
SMALL = 1000
ONE = SEG  # exactly one segment
MULTI = 300 * 1024  # 4 full segments + 45056 bytes


def content(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


def flip_b64(value: str, pos: int | None = None) -> str:
    """Change one character in the middle of a base64url value (stays valid base64url)."""
    i = len(value) // 2 if pos is None else pos
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    new = alphabet[(alphabet.index(value[i]) + 1) % 64]
    return value[:i] + new + value[i + 1:]


def flip_bit(body: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(body)
    b[pos] ^= 1 << bit
    return bytes(b)


class Raw:
    """Raw object access with the mount's key layout (names are encrypted)."""

    def __init__(self, s3: Any, bucket: str, env: dict[str, str]):
        self.s3 = s3
        self.bucket = bucket
        key = Keyring(environ=env).get("default")
        # name scheme 2: what a mount's keycheck records on a new bucket (docs/FORMAT.md)
        codec = ClientCodec({key.info.key_id: key.secret}, key.info.key_id, name_scheme=2)
        self.layout = Layout("", codec)

    def key(self, name: str) -> str:
        return self.layout.file_key((name,))

    def get(self, name: str) -> tuple[bytes, dict[str, str]]:
        r = self.s3.get_object(Bucket=self.bucket, Key=self.key(name))
        return r["Body"].read(), dict(r["Metadata"])

    def put_body(self, name: str, body: bytes, meta: dict[str, str] | None = None) -> None:
        if meta is None:
            meta = self.get(name)[1]
        self.s3.put_object(Bucket=self.bucket, Key=self.key(name), Body=body, Metadata=meta)

    def put_meta(self, name: str, meta: dict[str, str]) -> None:
        k = self.key(name)
        self.s3.copy_object(Bucket=self.bucket, Key=k, CopySource={"Bucket": self.bucket, "Key": k},
                            Metadata=meta, MetadataDirective="REPLACE")

    def snapshot(self) -> dict[str, str]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["ETag"]
        return out


# -- the tampering cases: name -> (size, action) ------------------------------------------------
Action = Callable[[Raw, str], None]


def body_flip(pos: Callable[[int], int], bit: int = 3) -> Action:
    def act(raw: Raw, name: str) -> None:
        body, meta = raw.get(name)
        raw.put_body(name, flip_bit(body, pos(len(body)), bit), meta)
    return act


def meta_flip(field: str) -> Action:
    def act(raw: Raw, name: str) -> None:
        _body, meta = raw.get(name)
        meta[field] = flip_b64(meta[field])
        raw.put_meta(name, meta)
    return act


def meta_set(field: str, value: str) -> Action:
    def act(raw: Raw, name: str) -> None:
        _body, meta = raw.get(name)
        assert field in meta
        meta[field] = value
        raw.put_meta(name, meta)
    return act


def truncate(length: Callable[[int], int]) -> Action:
    def act(raw: Raw, name: str) -> None:
        body, meta = raw.get(name)
        raw.put_body(name, body[:length(len(body))], meta)
    return act


def segments(body: bytes) -> list[bytes]:
    return [body[i:i + STRIDE] for i in range(0, len(body), STRIDE)]


def swap_segments(i: int, j: int) -> Action:
    def act(raw: Raw, name: str) -> None:
        body, meta = raw.get(name)
        segs = segments(body)
        segs[i], segs[j] = segs[j], segs[i]
        raw.put_body(name, b"".join(segs), meta)
    return act


def duplicate_segment(src: int, dst: int) -> Action:
    def act(raw: Raw, name: str) -> None:
        body, meta = raw.get(name)
        segs = segments(body)
        segs[dst] = segs[src]
        raw.put_body(name, b"".join(segs), meta)
    return act


def append_segment(raw: Raw, name: str) -> None:
    body, meta = raw.get(name)
    raw.put_body(name, body + segments(body)[0], meta)


def swap_bodies_with(other: str) -> Action:
    def act(raw: Raw, name: str) -> None:
        body_a, meta_a = raw.get(name)
        body_b, meta_b = raw.get(other)
        raw.put_body(name, body_b, meta_a)
        raw.put_body(other, body_a, meta_b)
    return act


def copy_meta_from(other: str, fields: tuple[str, ...] | None = None) -> Action:
    def act(raw: Raw, name: str) -> None:
        _b, meta = raw.get(name)
        _b2, src = raw.get(other)
        if fields is None:
            meta = src
        else:
            meta.update({f: src[f] for f in fields})
        raw.put_meta(name, meta)
    return act


def _noop(raw: Raw, name: str) -> None:
    pass


# (size, action, body_changed) — body_changed: the object's ETag changes (the directory index
# cannot vouch for it); metadata-only tampering keeps the ETag.
CASES: dict[str, tuple[int, Action, bool]] = {
    "body-flip-small": (SMALL, body_flip(lambda n: n // 2), True),
    "body-flip-nonce": (ONE, body_flip(lambda n: 3), True),
    "body-flip-tag": (ONE, body_flip(lambda n: n - 1, 7), True),
    "body-flip-multi-seg2": (MULTI, body_flip(lambda n: 2 * STRIDE + 5000), True),
    "body-flip-multi-last": (MULTI, body_flip(lambda n: n - 100), True),
    "meta-attrs-flip": (SMALL, meta_flip("s3encfs-attrs"), False),
    "meta-key-flip": (ONE, meta_flip("s3encfs-key"), False),
    "meta-oid-flip": (MULTI, meta_flip("s3encfs-oid"), False),
    "meta-kid-other": (SMALL, meta_set("s3encfs-kid", "0123456789abcdef"), False),
    "meta-version": (SMALL, meta_set("s3encfs-v", "3"), False),
    "meta-version-downgrade": (SMALL, meta_set("s3encfs-v", "1"), False),
    "meta-commit-flip": (ONE, meta_flip("s3encfs-kc"), False),
    "trunc-boundary-2": (MULTI, truncate(lambda n: 2 * STRIDE), True),
    "trunc-boundary-4": (MULTI, truncate(lambda n: 4 * STRIDE), True),
    "trunc-inside-seg": (MULTI, truncate(lambda n: 2 * STRIDE + 5000), True),
    "trunc-inside-one": (ONE, truncate(lambda n: n - 10), True),
    "trunc-inside-tail": (MULTI, truncate(lambda n: 3 * STRIDE + 10), True),  # invalid size
    "trunc-small-zero": (SMALL, truncate(lambda n: 0), True),
    "swap-segs-0-1": (MULTI, swap_segments(0, 1), True),
    "swap-segs-2-3": (MULTI, swap_segments(2, 3), True),
    "dup-seg-0-to-1": (MULTI, duplicate_segment(0, 1), True),
    "append-seg": (MULTI, append_segment, True),
    "swap-body-one-a": (ONE, swap_bodies_with("swap-body-one-b"), True),
    "swap-body-one-b": (ONE, _noop, True),  # tampered by its partner
    "swap-body-multi-a": (MULTI, swap_bodies_with("swap-body-multi-b"), True),
    "swap-body-multi-b": (MULTI, _noop, True),
    "copy-meta-all": (MULTI, copy_meta_from("ok-multi"), False),
    "copy-meta-attrs": (SMALL, copy_meta_from("ok-small", ("s3encfs-attrs",)), False),
    "copy-meta-keys": (ONE, copy_meta_from("ok-one", ("s3encfs-oid", "s3encfs-key")), False),
}
UNTAMPERED = {"ok-small": SMALL, "ok-one": ONE, "ok-multi": MULTI, "ok-empty": 0,
              "ok-two-segs": 2 * SEG}


def _write_tree(root: Path) -> None:
    for name, (size, _a, _c) in CASES.items():
        (root / name).write_bytes(content(name, size))
    for name, size in UNTAMPERED.items():
        (root / name).write_bytes(content(name, size))


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("index", ["deleted", "kept"])
def test_tampered_objects_read_eio(index: str, bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                    mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    _write_tree(m.mountpoint)
    m.umount()

    raw = Raw(s3, bucket, keyenv)
    before = raw.snapshot()
    for name in [*CASES, *UNTAMPERED]:  # the test's key computation matches the mount's
        assert raw.key(name) in before, name
    ok_bodies = {n: raw.get(n) for n in UNTAMPERED}
    for name, (_size, action, _c) in CASES.items():
        action(raw, name)
    after = raw.snapshot()
    for name, (_size, _a, body_changed) in CASES.items():
        assert (after[raw.key(name)] != before[raw.key(name)]) == body_changed, name
    idx = [k for k in after if k.startswith(".s3encfs/idx/")]
    assert idx, "expected directory index objects"
    if index == "deleted":  # an attacker can always delete the index; then HEADs decide
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in idx]})

    m2 = mount_factory(bucket, "client", name="m2")  # fresh, empty cache dir
    names = sorted(os.listdir(m2.mountpoint))
    assert names == sorted([*CASES, *UNTAMPERED])
    wrong = {}
    served_ok = []
    for name, (_size, _a, body_changed) in CASES.items():
        try:
            data = _read(m2.mountpoint / name)
        except OSError as exc:
            assert exc.errno == errno.EIO, (name, exc)
            continue
        if index == "kept" and not body_changed and data == content(name, CASES[name][0]):
            # metadata-only tampering, body untouched: the sealed index (same ETag) still holds
            # the authentic metadata, so the original bytes are served — correct, not wrong.
            served_ok.append(name)
            continue
        wrong[name] = len(data)
    assert not wrong, f"tampered files read without EIO: {wrong}"
    if index == "deleted":
        assert not served_ok

    # partial reads: the untouched first segment of a file whose later segment was flipped may
    # be served (random access), the flipped segment never.
    with open(m2.mountpoint / "body-flip-multi-seg2", "rb") as f:
        assert os.pread(f.fileno(), 4096, 0) == content("body-flip-multi-seg2", MULTI)[:4096]
        with pytest.raises(OSError) as ei:
            os.pread(f.fileno(), 4096, 2 * SEG + 1000)
        assert ei.value.errno == errno.EIO

    log = m2.log_path.read_text(errors="replace")
    for name in CASES:
        if name in served_ok:
            continue
        assert raw.key(name) in log, f"log does not name the object key of {name}"

    # the mount keeps serving: untampered files, listing, new writes
    for name, size in UNTAMPERED.items():
        assert _read(m2.mountpoint / name) == content(name, size), name
    (m2.mountpoint / "new-after-tamper").write_bytes(b"still serving" * 1000)
    assert (m2.mountpoint / "new-after-tamper").read_bytes() == b"still serving" * 1000
    # a tampered file can be replaced by overwriting it (O_TRUNC), and then reads back
    (m2.mountpoint / "body-flip-small").write_bytes(b"replacement")
    assert (m2.mountpoint / "body-flip-small").read_bytes() == b"replacement"
    assert m2.proc is not None and m2.proc.poll() is None
    m2.umount()
    assert raw.get("body-flip-small")[0] != after[raw.key("body-flip-small")]
    assert s3.head_object(Bucket=bucket, Key=raw.key("body-flip-small"))["ContentLength"] == \
        len(b"replacement") + OVERHEAD
    for name in UNTAMPERED:  # untampered objects were not rewritten by the reading mount
        assert raw.get(name) == ok_bodies[name]


def test_wrong_master_key_refused_before_serving(bucket: str, s3: Any,
                                                 keyenv: dict[str, str],  # noqa: F811
                                                 mount_factory: Any,  # noqa: F811
                                                 tmp_path: Path) -> None:
    m = mount_factory(bucket, "client")
    (m.mountpoint / "a.txt").write_bytes(b"alpha" * 100)
    m.umount()
    raw = Raw(s3, bucket, keyenv)
    before = raw.snapshot()

    other_env = dict(keyenv, S3ENCFS_KEYRING_DIR=str(tmp_path / "other-keys"))
    subprocess.run([*S3ENCFS, "key", "create", "default"], env=other_env, check=True,
                   capture_output=True)
    bad = mount_factory(bucket, "client", name="bad", env=other_env, start=False)
    bad.mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(bad.argv(), env=other_env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "wrong master key" in out.lower(), out
    assert "Traceback" not in out, out
    assert not os.path.ismount(bad.mountpoint)
    assert raw.snapshot() == before, "a refused mount wrote to the bucket"

    # the right key still works afterwards
    m.start()
    assert (m.mountpoint / "a.txt").read_bytes() == b"alpha" * 100


def test_whole_object_swap_between_keys(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                        mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    (m.mountpoint / "a.txt").write_bytes(b"contents of A")
    (m.mountpoint / "b.txt").write_bytes(b"contents of B")
    m.umount()
    raw = Raw(s3, bucket, keyenv)
    body_a, meta_a = raw.get("a.txt")
    body_b, meta_b = raw.get("b.txt")
    raw.put_body("a.txt", body_b, meta_b)
    raw.put_body("b.txt", body_a, meta_a)
    m2 = mount_factory(bucket, "client", name="m2")
    with pytest.raises(OSError) as ei:
        (m2.mountpoint / "a.txt").read_bytes()
    assert ei.value.errno == errno.EIO
