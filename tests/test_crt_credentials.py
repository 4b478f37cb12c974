"""Credentials reach the CRT data plane from botocore's chain: env, a profile file, and
refreshable credentials (refreshed when they expire), against the real SeaweedFS.

Each test first proves the good credentials work through `CrtClient`, then that wrong ones
from the same source are refused (AccessDenied): so the request really was signed with what
that source said, not with some other credentials lying around.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.credentials import RefreshableCredentials

from s3encfs.server import REGION, SeaweedS3
from s3encfs.store import AccessDenied, ObjectStore
from s3encfs.store.crt import CrtClient


def _crt_store(s3server: SeaweedS3, bucket: str, **kw: Any) -> ObjectStore:
    st = ObjectStore(bucket, endpoint_url=s3server.endpoint, region=REGION, s3_client="crt",
                     max_attempts=1, **kw)
    assert isinstance(st.client, CrtClient)
    return st


def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_env_credentials_reach_crt(s3server: SeaweedS3, bucket: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ambient_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3server.secret_key)
    st = _crt_store(s3server, bucket)
    st.put("env", b"from env", {})
    assert st.get("env")[0] == b"from env"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(AccessDenied):
        _crt_store(s3server, bucket).put("env2", b"x", {})


def test_profile_file_credentials_reach_crt(s3server: SeaweedS3, bucket: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _no_ambient_credentials(monkeypatch, tmp_path)
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[good]\naws_access_key_id = {s3server.access_key}\n"
        f"aws_secret_access_key = {s3server.secret_key}\n"
        f"[bad]\naws_access_key_id = {s3server.access_key}\n"
        "aws_secret_access_key = wrong-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    st = _crt_store(s3server, bucket, profile="good")
    st.put("prof", b"from a profile", {})
    assert st.head("prof").size == len(b"from a profile")
    with pytest.raises(AccessDenied):
        _crt_store(s3server, bucket, profile="bad").put("prof2", b"x", {})


def test_credential_process_profile_reaches_crt(s3server: SeaweedS3, bucket: str,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own refreshable provider (credential_process with an Expiration): the
    credentials it hands out are re-read as they expire, and the CRT path signs with them."""
    _no_ambient_credentials(monkeypatch, tmp_path)
    state = tmp_path / "process-creds.json"

    def issue(secret: str) -> None:
        soon = datetime.now(UTC) + timedelta(minutes=1)  # inside botocore's
        state.write_text(json.dumps({  # mandatory-refresh window: re-read on every signing
            "Version": 1, "AccessKeyId": s3server.access_key, "SecretAccessKey": secret,
            "Expiration": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}))

    config = tmp_path / "config"
    config.write_text(f"[profile proc]\ncredential_process = cat {state}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    issue(s3server.secret_key)
    st = _crt_store(s3server, bucket, profile="proc")
    st.put("p1", b"one", {})
    issue("revoked-secret")
    with pytest.raises(AccessDenied):
        st.put("p2", b"two", {})
    issue(s3server.secret_key)
    st.put("p3", b"three", {})
    assert st.get("p3")[0] == b"three"


def test_expired_credentials_are_refreshed_on_the_crt_path(
    s3server: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_ambient_credentials(monkeypatch, tmp_path)
    calls: list[str] = []
    secret = {"value": s3server.secret_key}

    def refresh() -> dict[str, Any]:
        calls.append(secret["value"])
        soon = datetime.now(UTC) + timedelta(minutes=1)
        return {"access_key": s3server.access_key, "secret_key": secret["value"],
                "token": None, "expiry_time": soon.isoformat()}

    past = datetime.now(UTC) - timedelta(hours=1)
    expired = RefreshableCredentials.create_from_metadata(
        {"access_key": s3server.access_key, "secret_key": "expired-secret", "token": None,
         "expiry_time": past.isoformat()},
        refresh_using=refresh, method="test-refresh")
    monkeypatch.setattr(boto3.session.Session, "get_credentials", lambda self: expired)
    st = _crt_store(s3server, bucket)

    st.put("r1", b"after refresh", {})  # the expired secret would be refused
    assert calls, "the expired credentials were never refreshed"
    assert st.get("r1")[0] == b"after refresh"

    before = len(calls)
    secret["value"] = "rotated-away"  # the next refresh hands out a secret S3 refuses
    with pytest.raises(AccessDenied):
        st.head("r1")
    assert len(calls) > before
    secret["value"] = s3server.secret_key
    assert st.head("r1").size == len(b"after refresh")


def test_control_plane_calls_fall_through_to_boto3(s3server: SeaweedS3, bucket: str,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/INTERNALS.md, "The CRT data plane": only the data-plane calls are CrtClient's; any
    other attribute (paginators, bucket calls, `meta`) is the boto3 client's."""
    _no_ambient_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3server.secret_key)
    st = _crt_store(s3server, bucket)
    crt, boto = st.client, st.client._fallback
    assert crt.put_object.__self__ is crt and crt.get_object.__self__ is crt  # data plane: CRT
    assert crt.get_paginator.__self__ is boto and crt.head_bucket.__self__ is boto
    assert crt.meta is boto.meta
    st.put("listed", b"x", {})  # through the CRT, listed through boto3's paginator
    keys = [o["Key"] for page in crt.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert "listed" in keys
