"""`s3encfs info`: bucket default encryption, replication, replica encryption by S3's rules.

moto_server answers GetBucketEncryption / GetBucketReplication like AWS (SeaweedFS has no
replication), so most cases run against it; one case runs against SeaweedFS.
"""

from __future__ import annotations

import contextlib
import json
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

from s3encfs.info import build_report, replica_encryption

S3ENCFS = [sys.executable, "-m", "s3encfs.cli"]
MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server not installed")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def mc(moto: str) -> Any:
    return boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


_seq = iter(range(10_000))


@pytest.fixture
def mbucket(mc: Any) -> str:
    name = f"info-{next(_seq)}-{int(time.time() * 1000) % 100000}"
    mc.create_bucket(Bucket=name)
    return name


def info(endpoint: str, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    proc = subprocess.run([*S3ENCFS, "info", *args, "--endpoint-url", endpoint],
                          env={**os.environ, **(env or MOTO_ENV)}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def info_json(endpoint: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(info(endpoint, *args, "--json", env=env))
    return data


def test_nothing_configured(moto: str, mbucket: str) -> None:
    rep = info_json(moto, f"s3://{mbucket}", "--encryption", "sse-c:k")
    assert rep["default_encryption"]["status"] == "none"
    assert rep["replication"]["status"] == "none"
    assert rep["mount"]["sse"] == "sse-c" and rep["mount"]["objects_stored_with"] == "sse-c"
    text = info(moto, f"s3://{mbucket}", "--encryption", "sse-c:k")
    assert "bucket default:          none configured" in text
    assert "replication:             none configured" in text
    # plain mode with no bucket default: warned
    plain = info_json(moto, f"s3://{mbucket}", "--encryption", "none")
    assert any("stored unencrypted" in w for w in plain["warnings"])


def test_bucket_default_kms_and_disagreements(moto: str, mc: Any, mbucket: str) -> None:
    mc.put_bucket_encryption(Bucket=mbucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                               "KMSMasterKeyID": "arn:aws:kms:r:1:key/bucketkey"},
        "BucketKeyEnabled": True}]})
    rep = info_json(moto, f"s3://{mbucket}", "--encryption", "sse-kms:otherkey")
    enc = rep["default_encryption"]
    assert enc["status"] == "configured" and enc["mode"] == "sse-kms"
    assert enc["kms_key_id"].endswith("key/bucketkey") and enc["bucket_key_enabled"] is True
    assert any("bucket default key is arn:aws:kms:r:1:key/bucketkey" in w
               for w in rep["warnings"]), rep["warnings"]
    assert any("Bucket Key on but the mount asks for it off" in w for w in rep["warnings"])
    # the matching mount: no warnings
    ok = info_json(moto, f"s3://{mbucket}", "--encryption", "sse-kms:bucketkey", "--bucket-key")
    assert ok["warnings"] == []
    # another type: the mount's headers win, other tools get the default
    s3m = info_json(moto, f"s3://{mbucket}", "--encryption", "sse-s3")
    assert any("mount writes sse-s3 but the bucket default is sse-kms" in w
               for w in s3m["warnings"])
    # client mode sends no SSE: objects get the bucket default
    cl = info_json(moto, f"s3://{mbucket}", "--encryption", "client")
    assert cl["mount"]["objects_stored_with"] == "sse-kms" and cl["warnings"] == []
    text = info(moto, f"s3://{mbucket}", "--encryption", "client")
    assert "aws:kms (sse-kms, KMS key arn:aws:kms:r:1:key/bucketkey), Bucket Key enabled" in text


def _replicate(mc: Any, src: str, dst: str, **dest_extra: Any) -> None:
    for b in (src, dst):
        mc.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    mc.put_bucket_replication(Bucket=src, ReplicationConfiguration={
        "Role": "arn:aws:iam::123456789012:role/repl",
        "Rules": [{"ID": "to-dr", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
                   "DeleteMarkerReplication": {"Status": "Disabled"},
                   "Destination": {"Bucket": f"arn:aws:s3:::{dst}", **dest_extra}}]})


def test_replication_by_s3_rules(moto: str, mc: Any, mbucket: str) -> None:
    dst = mbucket + "-dr"
    mc.create_bucket(Bucket=dst)
    mc.put_bucket_encryption(Bucket=dst, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    _replicate(mc, mbucket, dst,
               EncryptionConfiguration={"ReplicaKmsKeyID": "arn:aws:kms:r:1:key/drkey"})
    src = f"s3://{mbucket}/backups"
    # client mode, no SSE, no source default: replica gets the destination's default
    rep = info_json(moto, src, "--encryption", "client")
    assert rep["replication"]["status"] == "configured"
    (r,) = rep["replicas"]
    assert r["destination"] == dst and r["replica_encryption"].startswith("sse-s3")
    assert "destination bucket default" in r["replica_encryption"]
    text = info(moto, src, "--encryption", "client")
    assert f"replicas in {dst}: sse-s3" in text and "client-side encrypted" in text
    # SSE-S3 stays SSE-S3; SSE-C stays SSE-C with the same key
    assert info_json(moto, src, "--encryption", "sse-s3")["replicas"][0][
        "replica_encryption"].startswith("sse-s3 (same type")
    assert info_json(moto, src, "--encryption", "sse-c:k")["replicas"][0][
        "replica_encryption"].startswith("sse-c with the same customer key")
    # SSE-KMS without the SseKmsEncryptedObjects opt-in (moto does not keep it): not replicated
    kms = info_json(moto, src, "--encryption", "sse-kms:k1")
    assert kms["replicas"][0]["replica_encryption"] == "NOT replicated"
    assert any("will not be replicated" in w for w in kms["warnings"])


def test_replica_rules_table() -> None:
    rule = {"id": "r", "sse_kms_objects": True, "replica_kms_key_id": "arn:k/dst"}
    assert replica_encryption("sse-kms", None, rule, None)[0] == \
        "sse-kms with arn:k/dst (rule's ReplicaKmsKeyID)"
    assert replica_encryption("dsse-kms", None, rule, None)[0].startswith("dsse-kms with arn:k/dst")
    how, warn = replica_encryption("sse-kms", None, {"id": "r", "sse_kms_objects": True}, None)
    assert warn and "ReplicaKmsKeyID" in warn
    how, warn = replica_encryption("none", None, rule, {"status": "none"})
    assert "destination bucket's default" in how and warn is None
    how, _ = replica_encryption("none", None, rule, {"status": "configured", "mode": "sse-kms",
                                                     "kms_key_id": "kk"})
    assert how == "sse-kms with kk (destination bucket default)"


class _FakeClient:
    """Answers like AWS for a bucket that blocks SSE-C (BlockedEncryptionTypes, 2026)."""

    def get_bucket_encryption(self, Bucket: str) -> dict[str, Any]:
        return {"ServerSideEncryptionConfiguration": {"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
            "BucketKeyEnabled": False,
            "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]}}

    def get_bucket_replication(self, Bucket: str) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "ReplicationConfigurationNotFoundError",
                                     "Message": "none"}}, "GetBucketReplication")


def test_blocked_sse_c_is_explained() -> None:
    rep = build_report(_FakeClient(), "b", "", "sse-c:k", False)
    assert rep["default_encryption"]["blocked_encryption_types"] == ["SSE-C"]
    assert any("blocks SSE-C writes" in w and "bucket owner" in w for w in rep["warnings"])


def test_config_file_and_seaweedfs(bucket: str, s3env: dict[str, str], s3server: Any,
                                   tmp_path: Path) -> None:
    """Against SeaweedFS (no replication support): runs, reports what it can, mode from --config."""
    cfg = tmp_path / "backup.toml"
    cfg.write_text(f'source = "s3://{bucket}/data"\nencryption = "sse-kms:alias/k"\n'
                   f'bucket_key = true\nendpoint_url = "{s3server.endpoint}"\n')
    proc = subprocess.run([*S3ENCFS, "info", "--config", str(cfg), "--json"], env=s3env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["mount"]["sse"] == "sse-kms" and rep["mount"]["kms_key_id"] == "alias/k"
    assert rep["mount"]["bucket_key"] is True and rep["prefix"] == "data/"
    assert rep["default_encryption"]["status"] in ("none", "unsupported", "error", "configured")
    assert rep["replication"]["status"] in ("none", "unsupported", "error")
