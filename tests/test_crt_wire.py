"""The CRT data plane's wire translation (store/crt_wire.py): boto3 parameters to S3 headers
and S3 responses back to the dicts botocore would parse. Pure functions, no server."""

from __future__ import annotations

import base64
import secrets

import pytest

from s3encfs.store import crt_wire as wire
from s3encfs.store.sse import key_md5, parse_policy


def test_unknown_parameter_is_refused_not_dropped() -> None:
    with pytest.raises(TypeError, match="ChecksumAlgorithm"):
        wire.request_headers({"ChecksumAlgorithm": "CRC32"})


def test_sse_parameters_become_the_headers_s3_expects() -> None:
    secret = secrets.token_bytes(32)
    policy = parse_policy("sse-c", ssec_keys=[("k1", secret)])
    h = dict(wire.request_headers({**policy.write_args(), **policy.copy_source_args("k1")}))
    assert h["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
    assert h["x-amz-server-side-encryption-customer-key"] == base64.b64encode(secret).decode()
    assert h["x-amz-server-side-encryption-customer-key-MD5"] == key_md5(secret)
    assert h["x-amz-copy-source-server-side-encryption-customer-key-MD5"] == key_md5(secret)
    kms = parse_policy("sse-kms:alias/k", bucket_key=True)
    h = dict(wire.request_headers(kms.write_args()))
    assert h == {"x-amz-server-side-encryption": "aws:kms",
                 "x-amz-server-side-encryption-aws-kms-key-id": "alias/k",
                 "x-amz-server-side-encryption-bucket-key-enabled": "true"}


def test_conditions_metadata_and_copy_source() -> None:
    h = wire.request_headers({"IfMatch": '"e"', "IfNoneMatch": "*", "Metadata": {"mode": "1"},
                              "CopySource": {"Bucket": "b", "Key": "a b/c+d"},
                              "CopySourceIfMatch": '"s"', "MetadataDirective": "REPLACE"})
    assert ("If-Match", '"e"') in h and ("If-None-Match", "*") in h
    assert ("x-amz-meta-mode", "1") in h
    assert ("x-amz-copy-source", "/b/a%20b/c%2Bd") in h
    assert ("x-amz-copy-source-if-match", '"s"') in h


def test_response_fields_match_botocore_shapes() -> None:
    r = wire.response_fields(200, [
        ("ETag", '"abc"'), ("Content-Length", "12"), ("X-Amz-Meta-Mode", "33188"),
        ("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT"),
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-server-side-encryption-customer-key-MD5", "M"),
        ("x-amz-server-side-encryption-customer-key-MD5", "M"),
        ("x-amz-server-side-encryption-bucket-key-enabled", "false"),
    ])
    assert r["ETag"] == '"abc"' and r["ContentLength"] == 12
    assert r["Metadata"] == {"mode": "33188"}
    assert r["LastModified"].timestamp() == 1735689600
    assert r["SSECustomerKeyMD5"] == "M, M"  # repeated headers joined, as http.client does
    assert r["BucketKeyEnabled"] is False
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_error_documents_and_ranges() -> None:
    body = (b'<?xml version="1.0"?><Error><Code>PreconditionFailed</Code>'
            b"<Message>nope</Message></Error>")
    assert wire.error_from_xml(body, 412) == {"Code": "PreconditionFailed", "Message": "nope"}
    assert wire.error_from_xml(b"<CopyObjectResult/>", 200) is None
    assert wire.error_from_xml(b"", 404) is None
    assert wire.range_length({"Range": "bytes=10-19"}) == 10
    assert wire.range_length({"Range": "bytes=10-"}) == 0
    assert wire.range_length({}) == 0
    xml = wire.delete_body([{"Key": "a&b<c"}], quiet=True).decode()
    assert "<Key>a&amp;b&lt;c</Key>" in xml and "<Quiet>true</Quiet>" in xml


def test_list_page_fields_decode_keys_only_when_s3_encoded_them() -> None:
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    body = (f'<ListBucketResult {ns}><Name>b</Name><Prefix>a%2F</Prefix>'
            '<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>'
            '<NextContinuationToken>t+1/=</NextContinuationToken>'
            '<Contents><Key>a/x+y%25%E6%97%A5</Key><LastModified>2026-11-27T03:44:01.123Z'
            '</LastModified><ETag>&quot;e1&quot;</ETag><Size>12</Size></Contents>'
            '<CommonPrefixes><Prefix>a/s%20d/</Prefix></CommonPrefixes></ListBucketResult>')
    page = wire.list_fields(wire.parse_xml(body.encode()))
    [obj] = page["Contents"]
    assert obj["Key"] == "a/x y%日" and obj["Size"] == 12 and obj["ETag"] == '"e1"'
    assert obj["LastModified"].timestamp() == 1795751041.123
    assert page["CommonPrefixes"] == [{"Prefix": "a/s d/"}]
    assert page["IsTruncated"] and page["NextContinuationToken"] == "t+1/="
    plain = wire.list_fields(wire.parse_xml(body.replace(
        "<EncodingType>url</EncodingType>", "").replace("<IsTruncated>true", "<IsTruncated>false")
        .encode()))
    assert plain["Contents"][0]["Key"] == "a/x+y%25%E6%97%A5" and not plain["IsTruncated"]
    q = wire.list_query({"Prefix": "a b/", "Delimiter": "/", "ContinuationToken": "t+1/="})
    assert q == ("continuation-token=t%2B1%2F%3D&delimiter=%2F&encoding-type=url"
                 "&list-type=2&prefix=a%20b%2F")
