"""Header-level SSE tests against tests/recording_s3.py (no real S3).

DSSE-KMS and S3 Bucket Keys cannot be exercised on SeaweedFS (it ignores DSSE and hides the
bucket-key flag on HEAD), so these tests check, per call type, the exact request headers AWS
expects, and that a response missing the promised SSE headers raises SseMismatch.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from recording_s3 import RecordingS3

from s3encfs.store import ObjectStore, SseMismatch, parse_policy
from s3encfs.store.sse import SsePolicy, key_md5

SSE = "x-amz-server-side-encryption"
KID = "x-amz-server-side-encryption-aws-kms-key-id"
BK = "x-amz-server-side-encryption-bucket-key-enabled"
C_ALG = "x-amz-server-side-encryption-customer-algorithm"
C_MD5 = "x-amz-server-side-encryption-customer-key-md5"
CS_MD5 = "x-amz-copy-source-server-side-encryption-customer-key-md5"
WRITES = ("PutObject", "CreateMultipartUpload", "CopyObject")
NO_KMS_HEADERS = (
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "HeadObject",
    "GetObject",
)
K1 = ("k1", secrets.token_bytes(32))
K2 = ("k2", secrets.token_bytes(32))


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch, s3_client: str) -> Iterator[RecordingS3]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rec")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rec-secret")
    with RecordingS3() as r:
        r.s3_client = s3_client  # type: ignore[attr-defined]
        yield r


def _store(rec: RecordingS3, policy: SsePolicy) -> ObjectStore:
    return ObjectStore(
        "b", endpoint_url=rec.endpoint, region="us-east-1", sse=policy, max_attempts=1,
        s3_client=rec.s3_client,  # type: ignore[attr-defined]
    )


def _every_call(st: ObjectStore) -> None:
    st.put("src", b"0123456789" * 10, {"mode": "1"})
    uid = st.create_multipart("mp", {"mode": "2"})
    p1 = st.upload_part("mp", uid, 1, b"abc")
    p2 = st.upload_part_copy("mp", uid, 2, "src", 10, 20)
    st.complete_multipart("mp", uid, [(1, p1), (2, p2)])
    st.copy("src", "cp", metadata={"mode": "3"})
    st.head("cp")
    assert st.get("mp")[0] == b"abc" + b"0123456789"


def _one(rec: RecordingS3, op: str) -> dict[str, str]:
    reqs = rec.ops(op)
    assert reqs, op
    return reqs[0].headers


def test_dsse_kms_headers_every_call_type(rec: RecordingS3) -> None:
    """DSSE-KMS (header level): writes name aws:kms:dsse + key id; parts/reads carry none."""
    _every_call(_store(rec, parse_policy("dsse-kms:alias/dsse-key")))
    for op in WRITES:
        h = _one(rec, op)
        assert (h.get(SSE), h.get(KID)) == ("aws:kms:dsse", "alias/dsse-key"), op
        assert BK not in h, op
    for op in NO_KMS_HEADERS:
        assert not any(k.startswith(SSE) for k in _one(rec, op)), op


def test_bucket_key_headers_every_call_type(rec: RecordingS3) -> None:
    """SSE-KMS with S3 Bucket Keys (header level): every write asks for the bucket key."""
    _every_call(_store(rec, parse_policy("sse-kms:alias/bk", bucket_key=True)))
    for op in WRITES:
        h = _one(rec, op)
        assert (h.get(SSE), h.get(KID), h.get(BK)) == ("aws:kms", "alias/bk", "true"), op
    for op in NO_KMS_HEADERS:
        assert not any(k.startswith(SSE) for k in _one(rec, op)), op


def test_ssec_headers_every_call_type(rec: RecordingS3) -> None:
    """SSE-C: the key (by MD5) on every call, and on the source side of both copy kinds."""
    _every_call(_store(rec, parse_policy("sse-c", ssec_keys=[K2, K1])))
    md5 = key_md5(K2[1])
    for op in (
        *WRITES,
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "HeadObject",
        "GetObject",
    ):
        h = _one(rec, op)
        assert (h.get(C_ALG), h.get(C_MD5)) == ("AES256", md5), op
        assert SSE not in h, op
    for op in ("CopyObject", "UploadPartCopy"):
        assert _one(rec, op).get(CS_MD5) == md5, op
    assert _one(rec, "PutObject").get("x-amz-meta-s3encfs-ssec") == "k2"
    assert _one(rec, "CopyObject").get("x-amz-meta-s3encfs-ssec") == "k2"


@pytest.mark.parametrize("spec", ["dsse-kms:alias/dsse-key", "sse-kms:alias/bk", "sse-s3", "sse-c"])
@pytest.mark.parametrize("strip", ["PutObject", "CopyObject", "CompleteMultipartUpload"])
def test_missing_sse_in_response_raises(rec: RecordingS3, spec: str, strip: str) -> None:
    """A server that answers without the SSE headers is caught on put, copy and multipart."""
    st = _store(rec, parse_policy(spec, bucket_key="bk" in spec, ssec_keys=[K1]))
    st.put("src", b"x" * 10, {})
    rec.strip_ops = {strip, "HeadObject"}
    with pytest.raises(SseMismatch) as ei:
        if strip == "PutObject":
            st.put("k", b"y", {})
        elif strip == "CopyObject":
            st.copy("src", "k", metadata={})
        else:
            uid = st.create_multipart("k", {})
            st.complete_multipart("k", uid, [(1, st.upload_part("k", uid, 1, b"z"))])
    assert "s3://b/k" in str(ei.value) and "lacks promised SSE" in str(ei.value)


def test_silent_complete_confirmed_by_head(rec: RecordingS3) -> None:
    """SeaweedFS-style: Complete says nothing about SSE; a HEAD that shows it is enough."""
    st = _store(rec, parse_policy("dsse-kms:alias/d"))
    rec.strip_ops = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
    uid = st.create_multipart("k", {})
    st.complete_multipart("k", uid, [(1, st.upload_part("k", uid, 1, b"z"))])
    assert [r.op for r in rec.requests][-2:] == ["CompleteMultipartUpload", "HeadObject"]


def test_plain_policy_sends_no_sse_and_skips_head(rec: RecordingS3) -> None:
    st = _store(rec, parse_policy("none"))
    _every_call(st)
    assert not any(k.startswith(SSE) for r in rec.requests for k in r.headers)
    assert len(rec.ops("HeadObject")) == 1  # only the explicit head(), no confirmation HEADs


def test_botocore_debug_logs_never_show_ssec_key(
    rec: RecordingS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    st = _store(rec, parse_policy("sse-c", ssec_keys=[K1]))
    st.put("k", b"x", {})
    st.get("k")
    text = "\n".join(r.getMessage() for r in caplog.records)
    if rec.s3_client == "boto3":  # type: ignore[attr-defined]
        assert "PutObject" in text  # botocore did log the calls...
    assert base64.b64encode(K1[1]).decode() not in text  # ...but never the key
    assert repr(K1[1]) not in text and K1[1].hex() not in text


# -- policy units ------------------------------------------------------------------------------


def test_parse_policy_and_args() -> None:
    assert parse_policy("none").write_args() == {}
    assert parse_policy("sse-s3").write_args() == {"ServerSideEncryption": "AES256"}
    kms = parse_policy("sse-kms:arn:aws:kms:eu-west-1:1:key/abc", bucket_key=True)
    assert kms.write_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "arn:aws:kms:eu-west-1:1:key/abc",
        "BucketKeyEnabled": True,
    }
    assert kms.part_args() == {} and kms.read_args(None) == {}
    assert parse_policy("dsse-kms").write_args() == {"ServerSideEncryption": "aws:kms:dsse"}
    for bad in ("sse-x", "sse-c:k", "sse-s3:k"):
        with pytest.raises(ValueError):
            parse_policy(bad, ssec_keys=[K1])
    with pytest.raises(ValueError):
        parse_policy("sse-c")
    with pytest.raises(ValueError):
        parse_policy("sse-c", ssec_keys=[("short", b"x" * 16)])
    c = parse_policy("sse-c", ssec_keys=[K2, K1])
    assert c.write_metadata() == {"s3encfs-ssec": "k2"}
    assert c.read_args("k1")["SSECustomerKey"] == K1[1]
    assert c.copy_source_args("k1")["CopySourceSSECustomerKey"] == K1[1]
    assert K1[1].hex() not in repr(c) and "k2" in repr(c)


def test_verify_rules() -> None:
    c = parse_policy("sse-c", ssec_keys=[K2, K1])
    m2, m1 = key_md5(K2[1]), key_md5(K1[1])
    ok: dict[str, Any] = {"SSECustomerAlgorithm": "AES256", "SSECustomerKeyMD5": f"{m2}, {m2}"}
    c.verify(ok, "put", "k")  # SeaweedFS repeats the MD5 after multipart
    c.verify({"SSECustomerAlgorithm": "AES256", "SSECustomerKeyMD5": m1}, "head", "k")
    with pytest.raises(SseMismatch):  # writes must use the newest key
        c.verify({"SSECustomerAlgorithm": "AES256", "SSECustomerKeyMD5": m1}, "put", "k")
    with pytest.raises(SseMismatch):
        c.verify({"SSECustomerAlgorithm": "AES256", "SSECustomerKeyMD5": f"{m2}, {m1}"}, "put", "k")
    kms = parse_policy("sse-kms:1234-abcd", bucket_key=True)
    arn = "arn:aws:kms:us-east-1:111:key/1234-abcd"
    kms.verify(
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn, "BucketKeyEnabled": True},
        "put",
        "k",
    )
    with pytest.raises(SseMismatch):
        kms.verify(
            {
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "arn:x:key/other",
                "BucketKeyEnabled": True,
            },
            "put",
            "k",
        )
    with pytest.raises(SseMismatch):  # bucket key asked for but not applied
        kms.verify({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn}, "put", "k")
    with pytest.raises(SseMismatch):
        parse_policy("sse-s3").verify({"ServerSideEncryption": "aws:kms"}, "head", "k")
    parse_policy("sse-s3").verify({}, "create_multipart", "k")  # silent: HEAD confirms later


def test_kms_errors_name_the_key_or_the_missing_feature() -> None:
    """SSE-KMS failures say which key (or which unsupported feature) is at fault."""
    from botocore.exceptions import ClientError

    from s3encfs.store.s3 import _kms_hint
    from s3encfs.store.sse import parse_policy

    def err(code: str, status: int, message: str = "") -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    kms = parse_policy("sse-kms:alias/backup", bucket_key=True)
    hint = _kms_hint(kms, err("KMS.DisabledException", 400))
    assert hint is not None and "alias/backup" in hint
    assert "alias/backup" in (_kms_hint(kms, err("AccessDenied", 403)) or "")
    bk = _kms_hint(kms, err("InvalidArgument", 400, "Bucket key is not supported"))
    assert bk is not None and "Bucket Keys" in bk
    dsse = parse_policy("dsse-kms")
    assert "DSSE-KMS" in (_kms_hint(dsse, err("NotImplemented", 501)) or "")
    assert _kms_hint(parse_policy("sse-s3"), err("AccessDenied", 403)) is None
