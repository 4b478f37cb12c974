"""Server-side encryption end to end through a real mount on SeaweedFS (issue 4).

For each SSE mode: rsync a small tree and a 40 MiB file (multipart upload) through the mount,
read it back through a fresh mount, HEAD every object raw and check its SSE, and search the
server's data files for a plaintext marker written through the mount (found only in the
`--encryption none` control). The canary refuses moto_server (serves SSE-C objects without the
key) and SeaweedFS's DSSE-KMS (silently ignored).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

from s3encfs.keys.keyring import Keyring
from s3encfs.store.sse import key_md5

KMS_KEY = "alias/s3encfs-test"
BIG = 40 * 1024 * 1024


def create_key(env: dict[str, str], name: str, kind: str = "sse-c") -> tuple[str, bytes]:
    """Create a keyring key; returns (key id, secret) for raw checks (never printed)."""
    subprocess.run([*S3ENCFS, "key", "create", name, "--kind", kind], env=env, check=True,
                   capture_output=True)
    key = Keyring(env["S3ENCFS_KEYRING_DIR"], environ=env).get(name)
    return key.info.key_id, key.secret


def make_tree(root: Path, marker: bytes) -> None:
    """Small files (one with the marker inside random bytes), a symlink, a 40 MiB file with the
    marker in each 16 MiB part. Random padding: SeaweedFS must have nothing to compress."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "small.bin").write_bytes(os.urandom(3000) + marker + os.urandom(1000))
    (root / "sub" / "deeper" / "note.txt").write_text("hello sse\n")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("sub/small.bin")
    big = bytearray(os.urandom(BIG))
    for off in (5, 17 * 1024 * 1024, BIG - 4096):
        big[off : off + len(marker)] = marker
    (root / "big.bin").write_bytes(bytes(big))
    os.chmod(root / "sub" / "small.bin", 0o640)


def data_files_containing(data_dir: Path, marker: bytes) -> list[str]:
    proc = subprocess.run(["grep", "-rlaF", marker.decode(), str(data_dir)],
                          capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.decode().split()


def all_keys(s3: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def rsync_round_trip(m: Any, src: Path) -> None:
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    shutil.rmtree(m.cache_dir)  # read back from S3, not from the local cache
    m.start()
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m.mountpoint)], check=True)
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{m.mountpoint}/"],
                         check=True, capture_output=True, text=True).stdout
    assert out == ""
    m.umount()


MODES = ["sse-c", "sse-s3", "sse-kms", "client+sse-c"]


@pytest.mark.parametrize("mode", MODES)
def test_sse_mode_round_trip_heads_and_no_plaintext(mode: str, bucket: str, s3: Any,
                                                   s3server: Any, keyenv: dict[str, str],  # noqa: F811
                                                   mount_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    marker = b"S3ENCFS-MARKER-" + secrets.token_hex(12).encode()
    src = tmp_path / "src"
    make_tree(src, marker)
    extra: list[str] = []
    ssec: tuple[str, bytes] | None = None
    if "sse-c" in mode:
        ssec = create_key(keyenv, "ck")
        enc = mode.replace("sse-c", "sse-c:ck")
    elif mode == "sse-kms":
        enc = f"sse-kms:{KMS_KEY}"
        extra = ["--bucket-key"]
    else:
        enc = mode
    m = mount_factory(bucket, enc, extra=extra)
    rsync_round_trip(m, src)

    keys = all_keys(s3, bucket)
    assert any(k.endswith("big.bin") for k in keys) or mode.startswith("client")
    multipart = 0
    for key in keys:
        if key.endswith("/"):
            # SeaweedFS keeps "dir/" markers as filer directories: no body, no SSE, no metadata
            # (NOTES.md). Nothing to protect; just check it really is empty.
            assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 0, key
            continue
        if ssec is not None:
            kid, secret = ssec
            head = s3.head_object(Bucket=bucket, Key=key, SSECustomerAlgorithm="AES256",
                                  SSECustomerKey=secret)
            assert head["SSECustomerAlgorithm"] == "AES256", key
            md5s = {v.strip() for v in head["SSECustomerKeyMD5"].split(",")}
            assert md5s == {key_md5(secret)}, key
            assert head["Metadata"].get("s3encfs-ssec") == kid, key
            with pytest.raises(ClientError) as ei:
                s3.head_object(Bucket=bucket, Key=key)
            assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403), key
            with pytest.raises(ClientError):
                s3.get_object(Bucket=bucket, Key=key)
        else:
            head = s3.head_object(Bucket=bucket, Key=key)
            want = "AES256" if mode == "sse-s3" else "aws:kms"
            assert head.get("ServerSideEncryption") == want, (key, head)
            if mode == "sse-kms":
                assert head.get("SSEKMSKeyId"), key
        if "-" in head["ETag"].strip('"'):
            multipart += 1
    assert multipart >= 1, "the 40 MiB file must have been a multipart upload"

    found = data_files_containing(s3server.state_dir / "data", marker)
    assert found == [], f"plaintext marker found in server data files {found}"


def test_control_plain_mode_marker_is_found(bucket: str, s3server: Any,
                                            mount_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """The search above works: with `--encryption none` the marker is in the data files."""
    marker = b"S3ENCFS-MARKER-" + secrets.token_hex(12).encode()
    src = tmp_path / "src"
    make_tree(src, marker)
    m = mount_factory(bucket, "none")
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    found = data_files_containing(s3server.state_dir / "data", marker)
    assert found, "control: marker written in plain mode must be found in the data files"


def test_dsse_kms_refused_on_seaweedfs(bucket: str, mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, f"dsse-kms:{KMS_KEY}", start=False)
    with pytest.raises(RuntimeError) as ei:
        m.start()
    assert "does not enforce" in str(ei.value), str(ei.value)
    assert "dsse-kms" in str(ei.value)


def test_wrong_or_missing_ssec_key_cannot_read(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                               mount_factory: Any) -> None:  # noqa: F811
    """An SSE-C object written through the mount is unreadable without its key, also through a
    mount holding only another key."""
    create_key(keyenv, "ka")
    create_key(keyenv, "kb")
    m = mount_factory(bucket, "sse-c:ka")
    (m.mountpoint / "f.bin").write_bytes(b"secret data")
    m.umount()
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="f.bin")
    m2 = mount_factory(bucket, "sse-c:kb", name="m2")
    with pytest.raises(OSError):
        (m2.mountpoint / "f.bin").read_bytes()
    m2.umount()


# -- canary against moto_server (accepts SSE-C, then serves the object without the key) -------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def moto_endpoint(tmp_path: Path) -> Iterator[str]:
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server not installed")
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def moto_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_canary_refuses_moto_sse_c(moto_endpoint: str, keyenv: dict[str, str],  # noqa: F811
                                   mount_factory: Any) -> None:  # noqa: F811
    moto_client(moto_endpoint).create_bucket(Bucket="moto-sse")
    create_key(keyenv, "ck")
    env = dict(keyenv, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    m = mount_factory("moto-sse", "sse-c:ck", extra=["--endpoint-url", moto_endpoint], env=env,
                      start=False)
    with pytest.raises(RuntimeError) as ei:
        m.start()
    msg = str(ei.value)
    assert "does not enforce sse-c" in msg and "refusing to mount" in msg, msg
    # the override mounts anyway (reads work; see the xfail test below about writes)
    m2 = mount_factory("moto-sse", "sse-c:ck", name="m2", env=env,
                       extra=["--endpoint-url", moto_endpoint, "--allow-unverified-sse"])
    assert os.path.ismount(m2.mountpoint)
    assert sorted(os.listdir(m2.mountpoint)) == []
    m2.kill()


def test_override_lets_writes_through(moto_endpoint: str, keyenv: dict[str, str],  # noqa: F811
                                      mount_factory: Any) -> None:  # noqa: F811
    client = moto_client(moto_endpoint)
    client.create_bucket(Bucket="moto-sse")
    create_key(keyenv, "ck")
    env = dict(keyenv, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    m = mount_factory("moto-sse", "sse-c:ck", env=env,
                      extra=["--endpoint-url", moto_endpoint, "--allow-unverified-sse"])
    try:
        (m.mountpoint / "x").write_text("y")
        m.umount(timeout=20)  # returns once the upload is accepted as durable
    except subprocess.TimeoutExpired:
        pytest.fail("upload never accepted: umount timed out")
    finally:
        m.kill()
