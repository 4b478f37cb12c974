"""The local SeaweedFS launcher: SSE modes really enforced, restart keeps data, env works."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from s3encfs.server import SeaweedS3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _status(e: ClientError) -> int:
    return int(e.response["ResponseMetadata"]["HTTPStatusCode"])


def test_plain_roundtrip_and_fresh_bucket(s3: S3Client, bucket: str) -> None:
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_sse_c_is_enforced(s3: S3Client, bucket: str) -> None:
    key, other = os.urandom(32), os.urandom(32)
    s3.put_object(
        Bucket=bucket, Key="c", Body=b"secret", SSECustomerAlgorithm="AES256", SSECustomerKey=key
    )
    got = s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == b"secret"
    with pytest.raises(ClientError) as nokey:
        s3.get_object(Bucket=bucket, Key="c")
    assert _status(nokey.value) == 400
    with pytest.raises(ClientError) as wrong:
        s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert _status(wrong.value) == 403


def test_sse_s3_head_says_aes256(s3: S3Client, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="s", Body=b"x", ServerSideEncryption="AES256")
    assert put.get("ServerSideEncryption") == "AES256"
    assert s3.head_object(Bucket=bucket, Key="s").get("ServerSideEncryption") == "AES256"


def test_sse_kms_with_local_provider(s3: S3Client, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"kms",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId="alias/s3encfs-test",
    )
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head.get("ServerSideEncryption") == "aws:kms"
    assert "s3encfs-test" in head.get("SSEKMSKeyId", "")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kms"


def test_env_reaches_server_from_subprocess(s3env: dict[str, str], bucket: str) -> None:
    code = "import boto3; print([b['Name'] for b in boto3.client('s3').list_buckets()['Buckets']])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=s3env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert bucket in out.stdout


def test_state_files_are_private(s3server: SeaweedS3) -> None:
    for name in ("sse.kek", "s3.json"):
        mode = stat.S_IMODE((s3server.state_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert len((s3server.state_dir / "sse.kek").read_text().strip()) == 64
    cfg = json.loads((s3server.state_dir / "s3.json").read_text())
    assert cfg["kms"]["default_provider"] == "local-dev"


@pytest.mark.slow
def test_kill_and_restart_keeps_data_and_endpoint(tmp_path: Path) -> None:
    srv = SeaweedS3(tmp_path / "state")
    srv.start()
    try:
        c = srv.client()
        c.create_bucket(Bucket="keep")
        c.put_object(Bucket="keep", Key="p", Body=b"plain")
        c.put_object(Bucket="keep", Key="s", Body=b"sse", ServerSideEncryption="AES256")
        endpoint, kek = srv.endpoint, (srv.state_dir / "sse.kek").read_text()
        srv.kill()
        assert not srv.running
        srv.start()
        assert srv.endpoint == endpoint
        assert (srv.state_dir / "sse.kek").read_text() == kek
        c = srv.client()
        assert c.get_object(Bucket="keep", Key="p")["Body"].read() == b"plain"
        assert c.get_object(Bucket="keep", Key="s")["Body"].read() == b"sse"
    finally:
        srv.stop()
    assert not srv.running


@pytest.mark.slow
def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    """A test run killed mid-way must not leave weed running (PR_SET_PDEATHSIG)."""
    code = (
        "import os, sys; from s3encfs.server import SeaweedS3; "
        f"s = SeaweedS3({str(tmp_path / 'st')!r}); s.start(); "
        "assert s._proc is not None; print(s._proc.pid, flush=True); os._exit(0)"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.5)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive, "weed outlived its parent"


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
