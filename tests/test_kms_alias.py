"""SSE-KMS aliases (issue 10, item 11): resolved to the key ARN once at mount with KMS
DescribeKey (moto's server stands in for AWS KMS: SeaweedFS has no KMS API), and every response
is compared against that key — before, an alias accepted any key id a response named."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from s3encfs.store.errors import SseMismatch
from s3encfs.store.kms import resolve_alias
from s3encfs.store.sse import parse_policy

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER = "arn:aws:kms:us-east-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab"


def resp(key_id: str) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_id}


def test_resolved_alias_refuses_another_key() -> None:
    pol = parse_policy("sse-kms:alias/backup")
    pol.resolved_key = ARN  # type: ignore[attr-defined]
    pol.verify(resp(ARN), "put", "k")
    pol.verify(resp("1234abcd-12ab-34cd-56ef-1234567890ab"), "head", "k")  # bare key id
    with pytest.raises(SseMismatch):
        pol.verify(resp(OTHER), "put", "k")


def test_unresolved_alias_pins_the_first_key() -> None:
    pol = parse_policy("sse-kms:alias/backup")
    pol.verify(resp(ARN), "put", "canary")  # the canary's answer pins the key
    pol.verify(resp(ARN), "head", "canary")
    with pytest.raises(SseMismatch):
        pol.verify(resp(OTHER), "put", "k")


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
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                            1):
                    break
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_alias_resolved_with_describe_key(moto_endpoint: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                 ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    for k in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(k)
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/s3encfs-backup", TargetKeyId=arn)
    pol = parse_policy("sse-kms:alias/s3encfs-backup")
    assert resolve_alias(pol, endpoint_url=moto_endpoint, region="us-east-1") == arn
    pol.verify(resp(arn), "put", "k")
    with pytest.raises(SseMismatch):
        pol.verify(resp(OTHER), "put", "k")  # the old code accepted any key id here
    # a server without DescribeKey: logged, and the policy falls back to pinning
    pol2 = parse_policy("sse-kms:alias/nowhere")
    assert resolve_alias(pol2, endpoint_url="http://127.0.0.1:9", region="us-east-1") is None
    assert pol2.resolved_key is None  # type: ignore[attr-defined]
