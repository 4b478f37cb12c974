"""``--encryption s3ec`` through real mounts against SeaweedFS (issue 12).

KMS is moto's server where a test needs it (SeaweedFS has no KMS API; the official Python client
has only a KMS keyring). Raw-AES objects are checked with the independent decoder of
test_s3ec_format.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kms_moto import create_key, moto_kms
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_s3ec_format import KEK, ref_decrypt, ref_encrypt

MiB = 1024 * 1024


def rsync(src: Path, dst: Path, *args: str) -> str:
    return subprocess.run(["rsync", "-a", *args, f"{src}/", f"{dst}/"], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def aesenv(keyenv: dict[str, str], tmp_path: Path) -> dict[str, str]:  # noqa: F811
    """keyenv plus keyring key "s3k" (kind s3ec-aes) imported from the 32 raw bytes KEK."""
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEK)
    subprocess.run([*S3ENCFS, "key", "create", "s3k", "--kind", "s3ec-aes", "--from-raw",
                    str(raw)], env=keyenv, check=True, capture_output=True)
    return keyenv


AES = ["--key", "s3k{}"]  # empty material description, as Java writes by default


def make_tree(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello s3ec\n")
    (src / "empty").write_bytes(b"")
    (src / "d" / "sub" / "deep.bin").write_bytes(random.Random(1).randbytes(300_000))
    (src / "big.bin").write_bytes(random.Random(2).randbytes(20 * MiB + 3))  # multipart
    (src / "link").symlink_to("a.txt")
    os.chmod(src / "a.txt", 0o640)
    os.utime(src / "d" / "sub" / "deep.bin", (1_600_000_000, 1_600_000_000))


def data_keys(s3: Any, bucket: str) -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(o["Key"] for o in page.get("Contents", []))
    return out


def files(s3: Any, bucket: str) -> list[str]:
    return [k for k in data_keys(s3, bucket) if not k.startswith(".s3encfs/")]


def test_rsync_remount_itemize_and_kill9(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                         aesenv: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    m = mount_factory(bucket, "s3ec", extra=AES, env=aesenv)
    rsync(src, m.mountpoint)
    m.umount()
    # every file object in the bucket is an S3EC V3 object the independent decoder reads
    for key in ("a.txt", "empty", "d/sub/deep.bin", "big.bin"):
        r = s3.get_object(Bucket=bucket, Key=key)
        meta, body = r["Metadata"], r["Body"].read()
        assert meta["x-amz-c"] == "115" and meta["x-amz-w"] == "02", meta
        assert "mode" not in meta and "s3encfs-s3ec-attrs" in meta  # attrs sealed
        assert ref_decrypt(meta, body) == (src / key).read_bytes(), key
    shutil.rmtree(m.cache_dir)
    m.start()
    assert rsync(src, m.mountpoint, "--itemize-changes") == ""
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m.mountpoint)], check=True)
    # chmod is metadata-only: the S3EC keys are carried over unchanged
    before = s3.head_object(Bucket=bucket, Key="a.txt")["Metadata"]
    os.chmod(m.mountpoint / "a.txt", 0o600)
    m.umount()
    after = s3.head_object(Bucket=bucket, Key="a.txt")["Metadata"]
    assert {k: v for k, v in after.items() if k.startswith("x-amz-")} == \
        {k: v for k, v in before.items() if k.startswith("x-amz-")}
    body = s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read()
    assert ref_decrypt(after, body) == b"hello s3ec\n"

    # kill -9 after close(): the journal replays from staging; a fresh data key per upload
    m.start()
    assert (m.mountpoint / "a.txt").stat().st_mode & 0o777 == 0o600
    data = random.Random(4).randbytes(3 * MiB + 5)
    (m.mountpoint / "after-kill.bin").write_bytes(data)
    (m.mountpoint / "a.txt").write_text("rewritten before the crash\n")
    m.kill()
    m.start()
    assert (m.mountpoint / "after-kill.bin").read_bytes() == data
    m.umount()
    m3 = mount_factory(bucket, "s3ec", name="m3", extra=AES, env=aesenv)
    assert (m3.mountpoint / "after-kill.bin").read_bytes() == data
    assert (m3.mountpoint / "a.txt").read_text() == "rewritten before the crash\n"
    m3.umount()
    meta = s3.head_object(Bucket=bucket, Key="a.txt")["Metadata"]
    assert meta["x-amz-i"] != before["x-amz-i"] and meta["x-amz-3"] != before["x-amz-3"]


def cbc_object(plaintext: bytes) -> tuple[dict[str, str], bytes]:
    """A legacy V2 AES-CBC object (no integrity), key wrapped AES/GCM under KEK."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dk, iv, wiv = os.urandom(32), os.urandom(16), os.urandom(12)
    p = padding.PKCS7(128).padder()
    e = Cipher(algorithms.AES(dk), modes.CBC(iv)).encryptor()
    body = e.update(p.update(plaintext) + p.finalize()) + e.finalize()
    edk = wiv + AESGCM(KEK).encrypt(wiv, dk, b"AES/GCM/NoPadding")
    return {"x-amz-key-v2": base64.b64encode(edk).decode(),
            "x-amz-iv": base64.b64encode(iv).decode(), "x-amz-cek-alg": "AES/CBC/PKCS5Padding",
            "x-amz-wrap-alg": "AES/GCM", "x-amz-matdesc": "{}"}, body


def _put(s3: Any, bucket: str, key: str, meta: dict[str, str], body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def test_tampered_objects_are_eio(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                  aesenv: dict[str, str]) -> None:
    good = os.urandom(6 * MiB)  # several 1 MiB cache blocks: a first read does not reach the end
    meta, body = ref_encrypt(3, "AES/GCM", good)
    other_meta, _ = ref_encrypt(3, "AES/GCM", b"other")
    flipped = bytearray(body)
    flipped[-5] ^= 1  # in the tag
    _put(s3, bucket, "good", meta, body)
    _put(s3, bucket, "flip-end", meta, bytes(flipped))
    _put(s3, bucket, "truncated", meta, body[:-1])
    _put(s3, bucket, "swapped-key", {**meta, "x-amz-3": other_meta["x-amz-3"]}, body)
    _put(s3, bucket, "commitment", {**meta, "x-amz-d": other_meta["x-amz-d"]}, body)
    s3.put_object(Bucket=bucket, Key="plain", Body=b"not encrypted at all")
    _put(s3, bucket, "bad-length", {**meta, "x-amz-unencrypted-content-length": "7"}, body)
    _put(s3, bucket, "cbc", *cbc_object(b"legacy bytes"))
    m = mount_factory(bucket, "s3ec", extra=AES, env=aesenv)
    mp = m.mountpoint
    assert (mp / "good").stat().st_size == len(good)  # LIST size - 16
    assert (mp / "good").read_bytes() == good
    for name in ("flip-end", "truncated", "swapped-key", "commitment", "plain", "bad-length",
                 "cbc"):
        with pytest.raises(OSError) as ei, open(mp / name, "rb") as f:
            f.read(10)  # even the first bytes: the whole tag is checked first
        assert ei.value.errno == errno.EIO, name
    assert "refused" in m.read_log() or "failed verification" in m.read_log()
    m.umount()

    # opt-in unauthenticated ranges: the start is served, the damage shows when the end is read
    m2 = mount_factory(bucket, "s3ec", name="m2", env=aesenv,
                       extra=[*AES, "--s3ec-unauthenticated-ranges"])
    with open(m2.mountpoint / "flip-end", "rb") as f:
        assert f.read(4096) == good[:4096]
        f.seek(len(good) - 10)
        with pytest.raises(OSError) as ei:
            f.read(10)
        assert ei.value.errno == errno.EIO
    assert (m2.mountpoint / "good").read_bytes() == good


def test_instruction_files_hidden_and_moved(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                            aesenv: dict[str, str]) -> None:
    data = os.urandom(5000)
    meta, body = ref_encrypt(3, "AES/GCM", data, {})
    obj = {k: meta[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}
    inst = {k: meta[k] for k in ("x-amz-3", "x-amz-w")}
    _put(s3, bucket, "split", obj, body)
    s3.put_object(Bucket=bucket, Key="split.instruction", Body=json.dumps(inst).encode(),
                  Metadata={"x-amz-crypto-instr-file": ""})
    m = mount_factory(bucket, "s3ec", extra=AES, env=aesenv)
    mp = m.mountpoint
    assert sorted(os.listdir(mp)) == ["split"]
    assert (mp / "split").read_bytes() == data
    # one AES-GCM stream per object: nothing past 2^36 - 32 bytes (EFBIG, nothing uploaded)
    (mp / "huge").write_bytes(b"small")
    with pytest.raises(OSError) as ei:
        os.truncate(mp / "huge", 2**36)
    assert ei.value.errno == errno.EFBIG
    fd = os.open(mp / "huge", os.O_WRONLY)
    with pytest.raises(OSError) as ei:  # EFBIG, or EIO from the kernel's write-back cache
        os.pwrite(fd, b"x", 2**36 - 32)
        os.fsync(fd)
    assert ei.value.errno in (errno.EFBIG, errno.EIO)
    with contextlib.suppress(OSError):
        os.close(fd)
    os.unlink(mp / "huge")
    os.rename(mp / "split", mp / "moved")
    assert (mp / "moved").read_bytes() == data
    m.umount()
    assert set(files(s3, bucket)) == {"moved", "moved.instruction"}
    m.start()
    assert (mp / "moved").read_bytes() == data
    os.unlink(mp / "moved")
    m.umount()
    assert files(s3, bucket) == []


# -- interop with the official client through the mount -----------------------------------------
@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with moto_kms(tmp_path_factory.mktemp("kms")) as endpoint:
        yield endpoint, create_key(endpoint)


def test_official_client_objects_through_the_mount(
        s3server: Any, bucket: str, mount_factory: Any, keyenv: dict[str, str],  # noqa: F811
        kms: tuple[str, str]) -> None:
    from test_s3ec_interop import official

    endpoint, key_id = kms
    env = dict(keyenv, AWS_ENDPOINT_URL_KMS=endpoint)
    blobs: dict[str, bytes] = {}
    for version in (3, 2):
        client = official(s3server, kms, version)
        for n in (0, 1, 17, 100_000):
            blobs[f"v{version}/f{n}"] = os.urandom(n)
            client.put_object(Bucket=bucket, Key=f"v{version}/f{n}", Body=blobs[f"v{version}/f{n}"])
        big = os.urandom(17 * MiB)
        client.upload_fileobj(io.BytesIO(big), bucket, f"v{version}/big")
        blobs[f"v{version}/big"] = big
    m = mount_factory(bucket, "s3ec", extra=["--s3ec-kms-key", key_id], env=env)
    for key, data in blobs.items():
        assert (m.mountpoint / key).stat().st_size == len(data), key
        assert (m.mountpoint / key).read_bytes() == data, key
    for key in blobs:  # reopening costs no KMS call
        (m.mountpoint / key).read_bytes()
    from s3encfs.control import control_socket_path, query

    counts = query(control_socket_path(str(m.mountpoint)), "status")["s3"]["s3ec"]
    assert len(blobs) <= counts["kms_decrypt_calls"] <= len(blobs) + 3, counts
    nonempty = sum(1 for d in blobs.values() if d)  # an empty file needs no read at all
    assert counts["verified_objects"] == nonempty and counts["refused_objects"] == 0, counts
    ours = {"ours-small": os.urandom(1000), "ours-big": os.urandom(20 * MiB + 7)}
    for name, data in ours.items():
        (m.mountpoint / name).write_bytes(data)
    m.umount()
    client = official(s3server, kms, 3)
    for name, data in ours.items():
        assert client.get_object(Bucket=bucket, Key=name)["Body"].read() == data, name
    meta = s3server.client().head_object(Bucket=bucket, Key="ours-small")["Metadata"]
    assert meta["x-amz-w"] == "12" and json.loads(meta["x-amz-t"]) == {"aws:x-amz-cek-alg": "115"}
    assert base64.b64decode(meta["x-amz-i"])  # message id present


def test_rsa_public_key_host_writes_private_key_host_reads_v2(
        bucket: str, s3: Any, mount_factory: Any, keyenv: dict[str, str],  # noqa: F811
        tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from test_s3ec_format import RSA_KEY

    priv, pub = tmp_path / "priv.pem", tmp_path / "pub.pem"
    priv.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub.write_bytes(RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    data = os.urandom(200_000)
    w = mount_factory(bucket, "s3ec", name="w", env=keyenv,
                      extra=["--s3ec-rsa-key", str(pub), "--s3ec-version", "2"])
    (w.mountpoint / "backup.bin").write_bytes(data)
    w.umount()
    r = s3.get_object(Bucket=bucket, Key="backup.bin")
    meta = r["Metadata"]
    assert meta["x-amz-wrap-alg"] == "RSA-OAEP-SHA1" and "x-amz-key-v2" in meta
    assert ref_decrypt(meta, r["Body"].read()) == data  # the independent decoder agrees
    w.start()  # the public key cannot read what it wrote
    with pytest.raises(OSError) as ei:
        (w.mountpoint / "backup.bin").read_bytes()
    assert ei.value.errno == errno.EIO
    w.umount()
    rd = mount_factory(bucket, "s3ec", name="r", env=keyenv, extra=["--s3ec-rsa-key", str(priv)])
    assert (rd.mountpoint / "backup.bin").read_bytes() == data


def test_kill9_during_a_multipart_upload_loses_nothing(
        bucket: str, s3: Any, mount_factory: Any, aesenv: dict[str, str]) -> None:  # noqa: F811
    data = random.Random(9).randbytes(40 * MiB + 11)
    m = mount_factory(bucket, "s3ec", extra=AES, env=aesenv)
    (m.mountpoint / "big.bin").write_bytes(data)  # closed: journaled
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not s3.list_multipart_uploads(
            Bucket=bucket).get("Uploads"):
        time.sleep(0.05)  # the upload has started (a real multipart upload exists)
    m.kill()
    m.start()
    assert (m.mountpoint / "big.bin").read_bytes() == data
    m.umount()
    r = s3.get_object(Bucket=bucket, Key="big.bin")
    assert ref_decrypt(r["Metadata"], r["Body"].read()) == data
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # none orphaned
