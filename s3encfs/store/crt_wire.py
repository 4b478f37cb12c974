"""S3's REST wire format for the CRT data plane: boto3-style parameters to HTTP, and back.

`store/s3.py`'s `ObjectStore` speaks boto3 (keyword parameters in, response dicts out), and so do
`SsePolicy.verify`, the canary and the error mapping. The CRT client (`store/crt.py`) keeps that
contract, so this module translates: `request_headers` turns the parameters of one call into
headers, `response_fields` turns response headers into the dict botocore would have parsed, and
`parse_xml` / `error_from_xml` read the few XML bodies the data plane gets back.

An unknown parameter is refused (TypeError), never dropped: a dropped SSE or If-Match parameter
would silently change what the server does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_plus

from botocore.exceptions import ParamValidationError
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

from .sse import key_md5

# boto3 parameter -> request header, for parameters whose value is sent as is.
_PLAIN_HEADERS = {
    "ContentType": "Content-Type",
    "IfMatch": "If-Match",
    "IfNoneMatch": "If-None-Match",
    "Range": "Range",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
    "CopySourceSSECustomerAlgorithm": "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "CopySourceRange": "x-amz-copy-source-range",
    "CopySourceIfMatch": "x-amz-copy-source-if-match",
    "MetadataDirective": "x-amz-metadata-directive",
}
_SSEC_KEYS = {
    "SSECustomerKey": "x-amz-server-side-encryption-customer-key",
    "CopySourceSSECustomerKey": "x-amz-copy-source-server-side-encryption-customer-key",
}
# Parameters consumed elsewhere (path, query, body), never headers.
_STRUCTURAL = frozenset({"Bucket", "Key", "Body", "UploadId", "PartNumber", "MultipartUpload",
                         "Delete"})

# response header (lowercase) -> boto3 response field
_RESPONSE_FIELDS = {
    "etag": "ETag",
    "content-type": "ContentType",
    "content-range": "ContentRange",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
    "x-amz-server-side-encryption-customer-key-md5": "SSECustomerKeyMD5",
    "x-amz-version-id": "VersionId",
}
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def quote_key(key: str) -> str:
    """URI-encode an object key for the request path (S3 keeps "/" literal in paths)."""
    return quote(key, safe="/~")


def request_headers(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Headers for one call's boto3-style parameters (SSE-C keys encoded with their MD5)."""
    out: list[tuple[str, str]] = []
    for name, value in params.items():
        if name in _STRUCTURAL:
            continue
        if name in _PLAIN_HEADERS:
            out.append((_PLAIN_HEADERS[name], str(value)))
        elif name in _SSEC_KEYS:
            secret = value if isinstance(value, bytes) else str(value).encode()
            header = _SSEC_KEYS[name]
            out.append((header, b64(secret)))
            out.append((header + "-MD5", key_md5(secret)))
        elif name == "Metadata":
            for k, v in value.items():
                if not (str(k).isascii() and str(v).isascii()):
                    # as botocore: S3 would sign/store non-ASCII metadata inconsistently
                    raise ParamValidationError(
                        report=f"Non ascii characters found in S3 metadata for key {k!r}")
                out.append((f"x-amz-meta-{k}", str(v)))
        elif name == "BucketKeyEnabled":
            out.append(("x-amz-server-side-encryption-bucket-key-enabled",
                        "true" if value else "false"))
        elif name == "CopySource":
            src = value if isinstance(value, dict) else {"Bucket": "", "Key": str(value)}
            source = quote_key(f"/{src['Bucket']}/{src['Key']}")
            if src.get("VersionId"):  # restore copies an old version onto the live key
                source += "?versionId=" + quote(str(src["VersionId"]), safe="")
            out.append(("x-amz-copy-source", source))
        elif name == "ObjectLockMode":  # --object-lock: retention on what the mount writes
            out.append(("x-amz-object-lock-mode", str(value)))
        elif name == "ObjectLockRetainUntilDate":
            when = value.astimezone(UTC) if isinstance(value, datetime) else value
            out.append(("x-amz-object-lock-retain-until-date",
                        when.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(when, datetime)
                        else str(when)))
        else:
            raise TypeError(f"the CRT S3 client does not handle parameter {name!r}")
    return out


def version_query(params: dict[str, Any]) -> str:
    """Pop a GET/HEAD's VersionId into its query string (`--as-of` views read old versions)."""
    vid = params.pop("VersionId", None)
    return f"versionId={quote(str(vid), safe='')}" if vid else ""


def body_checksum(params: dict[str, Any], body: bytes) -> list[tuple[str, str]]:
    """Pop ChecksumAlgorithm (only CRC32 is asked for: Object Lock PUTs need a checksum on
    AWS) and return the headers that carry the body's checksum."""
    alg = params.pop("ChecksumAlgorithm", None)
    if alg is None:
        return []
    if str(alg).upper() != "CRC32":
        raise TypeError(f"the CRT S3 client does not compute {alg!r} checksums")
    digest = zlib.crc32(body).to_bytes(4, "big")
    return [("x-amz-checksum-crc32", b64(digest)), ("x-amz-sdk-checksum-algorithm", "CRC32")]


def range_length(params: dict[str, Any]) -> int:
    """Length of a closed ``Range: bytes=A-B`` parameter (0 when there is none)."""
    spec = str(params.get("Range") or "")
    if not spec.startswith("bytes="):
        return 0
    first, _, last = spec[6:].partition("-")
    if not (first.isdigit() and last.isdigit()):
        return 0
    return int(last) - int(first) + 1


def http_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def response_fields(status: int, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """The dict botocore would parse from these response headers (repeated headers joined
    with ", ", as http.client does: SeaweedFS repeats the SSE-C key MD5 after multipart)."""
    resp: dict[str, Any] = {}
    meta: dict[str, str] = {}
    raw: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        raw[low] = f"{raw[low]}, {value}" if low in raw else value
    for low, value in raw.items():
        if low.startswith("x-amz-meta-"):
            meta[low[len("x-amz-meta-"):]] = value
        elif low in _RESPONSE_FIELDS:
            resp[_RESPONSE_FIELDS[low]] = value
        elif low == "content-length":
            resp["ContentLength"] = int(value)
        elif low == "last-modified":
            resp["LastModified"] = http_date(value)
        elif low == "x-amz-server-side-encryption-bucket-key-enabled":
            resp["BucketKeyEnabled"] = value.strip().lower() == "true"
    resp["Metadata"] = meta
    resp["ResponseMetadata"] = {"HTTPStatusCode": status, "HTTPHeaders": raw,
                                "RetryAttempts": 0}
    return resp


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_xml(body: bytes) -> ET.Element | None:
    if not body.strip():
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def child_text(elem: ET.Element, name: str) -> str | None:
    for c in elem:
        if _local(c.tag) == name:
            return c.text or ""
    return None


def children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in elem if _local(c.tag) == name]


def error_from_xml(body: bytes | None, status: int | None) -> dict[str, str] | None:
    """{"Code", "Message"} of an S3 <Error> document (None if the body is not one)."""
    root = parse_xml(body or b"")
    if root is None or _local(root.tag) != "Error":
        return None
    return {"Code": child_text(root, "Code") or str(status or ""),
            "Message": child_text(root, "Message") or ""}


def complete_body(parts: list[dict[str, Any]]) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{int(p['PartNumber'])}</PartNumber>"
        f"<ETag>{_xml_escape(str(p['ETag']))}</ETag></Part>" for p in parts
    )
    return (f'<CompleteMultipartUpload xmlns="{_S3_NS[1:-1]}">{items}'
            "</CompleteMultipartUpload>").encode()


def delete_body(objects: list[dict[str, Any]], quiet: bool) -> bytes:
    items = "".join(f"<Object><Key>{_xml_escape(str(o['Key']))}</Key></Object>" for o in objects)
    q = "<Quiet>true</Quiet>" if quiet else ""
    return f'<Delete xmlns="{_S3_NS[1:-1]}">{q}{items}</Delete>'.encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def content_md5(body: bytes) -> str:
    """Content-MD5 (DeleteObjects requires one): the same digest S3 echoes for SSE-C keys."""
    return key_md5(body)


_LIST_QUERY = (("Prefix", "prefix"), ("Delimiter", "delimiter"),
               ("ContinuationToken", "continuation-token"), ("StartAfter", "start-after"),
               ("MaxKeys", "max-keys"))
LIST_PARAMS = frozenset(name for name, _ in _LIST_QUERY)


def list_query(params: dict[str, Any]) -> str:
    """The query of a ListObjectsV2 call (keys come back URL-encoded, as boto3 asks)."""
    q = {"list-type": "2", "encoding-type": "url"}
    for name, field in _LIST_QUERY:
        if params.get(name) is not None:
            q[field] = str(params[name])
    return "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in sorted(q.items()))


def _list_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)  # ISO 8601, as S3 writes it
    except ValueError:
        parsed: datetime = DEFAULT_TIMESTAMP_PARSER(value)
        return parsed


def list_fields(root: ET.Element) -> dict[str, Any]:
    """The parts of boto3's ListObjectsV2 response the store reads, from the XML: Contents
    (Key, Size, ETag, LastModified), CommonPrefixes, IsTruncated, NextContinuationToken.
    Keys are URL-decoded when S3 says it encoded them (botocore's `decode_list_object_v2`).
    A third of the CPU of botocore's parser (~30 ms a 1,000-key page here)."""
    contents: list[dict[str, Any]] = []
    prefixes: list[dict[str, str]] = []
    top: dict[str, str] = {}
    for elem in root:
        tag = _local(elem.tag)
        if tag == "Contents":
            o = {_local(c.tag): c.text or "" for c in elem}
            lm = o.get("LastModified")
            contents.append({"Key": o.get("Key", ""), "Size": int(o.get("Size") or 0),
                             "ETag": o.get("ETag", ""),
                             "LastModified": _list_time(lm) if lm else None})
        elif tag == "CommonPrefixes":
            prefixes.append({"Prefix": child_text(elem, "Prefix") or ""})
        else:
            top[tag] = elem.text or ""
    if top.get("EncodingType") == "url":
        for o in contents:
            o["Key"] = unquote_plus(o["Key"])
        for p in prefixes:
            p["Prefix"] = unquote_plus(p["Prefix"])
    resp: dict[str, Any] = {"Contents": contents, "CommonPrefixes": prefixes,
                            "IsTruncated": top.get("IsTruncated", "").lower() == "true"}
    if top.get("NextContinuationToken"):
        resp["NextContinuationToken"] = top["NextContinuationToken"]
    return resp
