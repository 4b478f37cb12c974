"""An S3EC copy (a rename) of an object too big for one CopyObject, against SeaweedFS through the
fault proxy: S3 refuses CopyObject past 5 GiB (here: the proxy answers as AWS does, and the
store's `max_copy` is lowered so a small object counts as big), so the copy goes through a
multipart upload whose parts are the source's verified plaintext re-encrypted in one GCM stream.
A part that fails to send cannot be encrypted again under that upload's key: the copy starts
over in a new upload (a fresh data key) instead of failing the rename; when S3 keeps failing,
it fails cleanly, the source intact and no upload left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import Fault, FaultProxy
from test_s3ec_format import KEK, ref_decrypt

from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.store.errors import StoreError
from s3encfs.store.s3ec import S3ECStore

MiB = 1024 * 1024
TOO_BIG = Fault(kind="status", op="CopyObject", status=400, code="InvalidRequest")


@pytest.fixture
def proxy(s3server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3server.endpoint, seed=7) as p:
        yield p


@pytest.fixture
def st(s3server: Any, proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch,
       tmp_path: Path) -> S3ECStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("k", KEK, {})]),
                      spool_dir=str(tmp_path / "spool"), endpoint_url=proxy.endpoint,
                      region="us-east-1", s3_client="crt", max_attempts=0)
    store.max_copy = 4 * MiB  # "larger than one CopyObject"
    store.copy_part = 5 * MiB  # S3's smallest non-final part
    return store


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or [])


def _obj(s3: Any, bucket: str, key: str) -> tuple[dict[str, str], bytes]:
    r = s3.get_object(Bucket=bucket, Key=key)
    return r["Metadata"], r["Body"].read()


def test_a_failed_part_starts_the_copy_over_in_a_new_upload(
        st: S3ECStore, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    plain = os.urandom(17 * MiB + 99)  # 4 parts
    st.put("src", plain, {"mode": "33188"})
    proxy.add_fault(TOO_BIG)
    proxy.add_fault(Fault(kind="status", op="UploadPart", count=1, status=500,
                          code="InternalError"))
    st.copy("src", "dst")
    assert proxy.count("CopyObject") == 1  # refused, then the multipart copy
    assert proxy.count("CreateMultipartUpload") == 2  # the first upload broke, the second went
    assert proxy.count("AbortMultipartUpload") == 1
    meta, body = _obj(s3, bucket, "dst")
    assert ref_decrypt(meta, body) == plain  # one valid GCM stream, byte-exact
    assert st.get("dst")[0] == plain
    src_meta, src_body = _obj(s3, bucket, "src")
    assert ref_decrypt(src_meta, src_body) == plain
    assert meta["x-amz-3"] != src_meta["x-amz-3"]  # re-encrypted under a fresh data key
    assert _uploads(s3, bucket) == []


def test_a_copy_that_keeps_failing_leaves_the_source_and_no_upload(
        st: S3ECStore, proxy: FaultProxy, s3: Any, bucket: str) -> None:
    plain = os.urandom(11 * MiB)
    st.put("src", plain, {"mode": "33188"})
    proxy.add_fault(TOO_BIG)
    proxy.add_fault(Fault(kind="status", op="UploadPart", status=500, code="InternalError"))
    with pytest.raises(StoreError):
        st.copy("src", "dst")
    assert _uploads(s3, bucket) == []  # every upload it created was aborted
    assert "dst" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    meta, body = _obj(s3, bucket, "src")
    assert ref_decrypt(meta, body) == plain
