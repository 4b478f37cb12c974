"""S3EC multipart uploads against SeaweedFS (store/s3ec_upload.py): parts are encrypted and sent
in order while later ones still arrive, and whatever happens the object is one valid GCM stream
that the tests' independent decoder reads byte-exact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_s3ec_format import KEK, ref_decrypt

from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.store.s3ec import S3ECStore

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest non-final part


@pytest.fixture
def st(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3ECStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    keys = S3ECKeys([AesKeyring("k", KEK, {})])
    return S3ECStore(bucket, s3ec=keys, spool_dir=str(tmp_path / "spool"),
                     endpoint_url=s3server.endpoint, region="us-east-1")


def _read(s3: Any, bucket: str, key: str) -> tuple[dict[str, str], bytes]:
    r = s3.get_object(Bucket=bucket, Key=key)
    return r["Metadata"], r["Body"].read()


def _sent(s3: Any, bucket: str, key: str, upload_id: str) -> list[int]:
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])
    return sorted(p["PartNumber"] for p in parts)


def test_parts_go_to_s3_before_completion(st: S3ECStore, s3: Any, bucket: str) -> None:
    data = [os.urandom(PART) for _ in range(3)] + [os.urandom(1000)]
    uid = st.create_multipart("f", {"mode": "33188"})
    tags = [st.upload_part("f", uid, n, d) for n, d in enumerate(data, start=1)]
    assert _sent(s3, bucket, "f", uid) == [1, 2, 3]  # each once the next one arrived
    st.complete_multipart("f", uid, list(enumerate(tags, start=1)))
    meta, body = _read(s3, bucket, "f")
    assert ref_decrypt(meta, body) == b"".join(data)
    assert st.get("f")[0] == b"".join(data)


def test_out_of_order_parts_wait_for_their_turn(st: S3ECStore, s3: Any, bucket: str) -> None:
    data = [os.urandom(PART) for _ in range(3)]
    uid = st.create_multipart("f", {})
    st.upload_part("f", uid, 3, data[2])
    st.upload_part("f", uid, 2, data[1])
    assert _sent(s3, bucket, "f", uid) == []  # part 1 is missing: nothing can be encrypted
    st.upload_part("f", uid, 1, data[0])
    assert _sent(s3, bucket, "f", uid) == [1, 2]
    st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data)


def test_a_part_sent_again_restarts_under_a_fresh_data_key(st: S3ECStore, s3: Any,
                                                           bucket: str) -> None:
    """A write into a part that was encrypted already: never two plaintexts under one
    (data key, message id); the upload starts again under a fresh one."""
    data = [os.urandom(PART) for _ in range(3)]
    uid = st.create_multipart("f", {})
    first = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    for n, d in enumerate(data, start=1):
        st.upload_part("f", uid, n, d)
    data[0] = os.urandom(PART)
    st.upload_part("f", uid, 1, data[0])  # part 1 went to S3 with its old contents
    st.complete_multipart("f", uid, [(1, ""), (2, ""), (3, "")])
    meta, body = _read(s3, bucket, "f")
    assert ref_decrypt(meta, body) == b"".join(data)
    assert len(first) == 1 and not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_every_part_sent_early_then_the_tag_alone(st: S3ECStore, s3: Any, bucket: str) -> None:
    """Part 3 was sent, then the file shrank to 2 parts: part 2 went as a non-final part, so
    the tag is the last part on its own."""
    data = [os.urandom(PART) for _ in range(3)]
    uid = st.create_multipart("f", {})
    for n, d in enumerate(data, start=1):
        st.upload_part("f", uid, n, d)
    st.complete_multipart("f", uid, [(1, ""), (2, "")])
    assert ref_decrypt(*_read(s3, bucket, "f")) == b"".join(data[:2])
