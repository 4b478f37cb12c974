"""Shared fixtures: one loopback SeaweedFS S3 server per test session (under pytest-xdist: per
worker, on its own free ports), a fresh bucket per test.

Fixtures: `s3server` (SeaweedS3), `s3` (boto3 client), `bucket` (fresh bucket name, deleted
afterwards), `s3env` (AWS_* environment for subprocesses), `s3_client` (each data-plane client
library in turn). Tests marked `slow` are skipped
unless `--runslow` is given or S3ENCFS_SLOW=1.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from s3encfs.server import SeaweedS3, ServerError, find_weed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_bucket_seq = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (run with --runslow)")


# The longest files (the most mounts; measured with --durations), started first. Under
# `--dist loadfile` xdist hands whole files to workers in collection order: a long file collected
# last would run alone at the end while the other workers idle (make test passes
# --no-loadscope-reorder: xdist would otherwise order files by test count). Order inside a file
# is kept.
LONGEST_FILES_FIRST = (
    "test_operator.py", "test_core_durability.py", "test_posix.py", "test_upload_identity.py",
    "test_keycheck.py", "test_client_mount.py", "test_pitr.py", "test_bad_input.py",
    "test_s3ec_mount.py", "test_sse_mount.py", "test_hardening.py", "test_model.py",
    "test_faults_mount.py", "test_rekey.py", "test_bound_objects.py", "test_kill_soak.py",
    "test_faults_bounded.py",
)


def _longest_first(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _longest_first(items)
    if config.getoption("--runslow") or os.environ.get("S3ENCFS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: use --runslow or S3ENCFS_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# The S3 client libraries under test: store-level tests run under each (S3ENCFS_S3_CLIENTS
# narrows the list); mount-level tests use S3ENCFS_S3_CLIENT (tests/mounting.py).
S3_CLIENTS = [c for c in os.environ.get("S3ENCFS_S3_CLIENTS", "boto3,crt").split(",") if c]


@pytest.fixture(params=S3_CLIENTS)
def s3_client(request: pytest.FixtureRequest) -> str:
    """"boto3" or "crt": the `ObjectStore(s3_client=...)` data plane a store test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS (master+volume+filer+S3) on loopback for the whole test session."""
    try:
        find_weed()
    except ServerError as e:
        pytest.skip(str(e))
    server = SeaweedS3(tmp_path_factory.mktemp("s3server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3server: SeaweedS3) -> S3Client:
    return s3server.client()


@pytest.fixture(scope="session")
def s3env(s3server: SeaweedS3) -> dict[str, str]:
    """os.environ plus the AWS_* variables pointing at the test server."""
    return {**os.environ, **s3server.env()}


def _bucket_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t{os.getpid()}-{next(_bucket_seq)}-{stem or 'x'}"[:63].rstrip("-")


def _delete_bucket(s3: S3Client, name: str) -> None:
    """Empty (objects + pending multipart uploads) and delete a bucket; best effort."""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            contents = page.get("Contents", [])
            if contents:
                s3.delete_objects(
                    Bucket=name,
                    Delete={"Objects": [{"Key": o["Key"]} for o in contents], "Quiet": True},
                )
        uploads = s3.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for u in uploads:
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
        s3.delete_bucket(Bucket=name)
    except Exception:  # teardown must not mask the test's own result
        pass


@pytest.fixture
def bucket(s3: S3Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; deleted (with its contents) after the test."""
    name = _bucket_name(request.node.name)
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        _delete_bucket(s3, name)
