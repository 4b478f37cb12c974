"""The boto3-named data-plane calls of `CrtClient` (store/crt.py), one S3 request each.

Each call turns boto3's parameters into one request for `_send` (query, headers, body: the
wire format lives in crt_wire.py) and the answer into the response dict boto3 would return, so
`ObjectStore` cannot tell the two clients apart. `_send` (signing, retries, timeouts) is the
transport's: this mixin only needs its signature.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from botocore.exceptions import ResponseStreamingError

from . import crt_wire as wire
from .bodies import FileRange
from .crt_exchange import Body, client_error

SPLIT_GET = 4 * 1024 * 1024  # ranges at least this long go through aws-c-s3's GET_OBJECT

# A split GET is cut into parts of this size.  It must hold one whole read-ahead run
# (fs/reader.py RA_GET blocks: 8 MiB of plaintext, plus the AEAD's per-segment overhead in
# client mode): with the CRT's default of 8 MiB parts and 16-block runs a plain run took 2 GETs
# and a client run 3-4, so client mode made twice plain's GETs (tests/test_read_gets.py).
GET_PART_BYTES = 32 * 1024 * 1024


class CrtCalls:
    """HEAD/GET/PUT, copies, deletes and multipart as boto3 names them, over `_send`."""

    def _send(self, op: str, method: str, bucket: str, key: str | None, *, query: str = "",
              headers: list[tuple[str, str]] | None = None,
              body: bytes | bytearray | FileRange | None = None,
              split: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
        raise NotImplementedError  # CrtClient._send

    def _checked_xml(self, op: str, status: int, headers: list[tuple[str, str]],
                     body: bytes) -> Any:
        """The XML root of a 200 response; S3 can answer 200 with an <Error> (copy, complete)."""
        err = wire.error_from_xml(body, status)
        if err is not None:
            raise client_error(op, status, headers, body)
        root = wire.parse_xml(body)
        if root is None:
            raise ResponseStreamingError(error=f"{op}: unreadable response body")
        return root

    @staticmethod
    def read_request(params: dict[str, Any], *, get: bool) -> dict[str, Any]:
        """`_send`'s keyword arguments for a HEAD (`get` False) or GET with boto3's params
        (shared with store/crt_async.py). A big range goes through aws-c-s3's GET_OBJECT
        (fewer, larger body callbacks into Python), in parts of GET_PART_BYTES (parallel only
        past one part); small ones and whole objects stay one plain request."""
        args: dict[str, Any] = {"query": wire.version_query(params),
                                "headers": wire.request_headers(params)}
        if get:
            args["split"] = wire.range_length(params) >= SPLIT_GET
        return args

    @staticmethod
    def get_response(status: int, headers: list[tuple[str, str]], data: bytes) -> dict[str, Any]:
        resp = wire.response_fields(status, headers)
        resp["Body"] = Body(data)
        return resp

    def head_object(self, *, Bucket: str, Key: str, **params: Any) -> dict[str, Any]:
        status, headers, _ = self._send("HeadObject", "HEAD", Bucket, Key,
                                        **self.read_request(params, get=False))
        return wire.response_fields(status, headers)

    def get_object(self, *, Bucket: str, Key: str, **params: Any) -> dict[str, Any]:
        status, headers, data = self._send("GetObject", "GET", Bucket, Key,
                                           **self.read_request(params, get=True))
        return self.get_response(status, headers, data)

    def list_objects_v2(self, *, Bucket: str, **params: Any) -> dict[str, Any]:
        """One page, as boto3's `list_objects_v2` (the fields `wire.list_fields` names)."""
        query = wire.list_query(params)
        extra = {k: v for k, v in params.items() if k not in wire.LIST_PARAMS}
        status, headers, body = self._send("ListObjectsV2", "GET", Bucket, None, query=query,
                                           headers=wire.request_headers(extra))
        root = wire.parse_xml(body)  # parsed once: _checked_xml parses it twice
        if root is None or not root.tag.endswith("ListBucketResult"):
            root = self._checked_xml("ListObjectsV2", status, headers, body)  # raises <Error>
        resp = wire.response_fields(status, headers)
        resp.update(wire.list_fields(root))
        return resp

    def put_object(self, *, Bucket: str, Key: str, Body: bytes = b"",
                   **params: Any) -> dict[str, Any]:
        body = bytes(Body)
        checksum = wire.body_checksum(params, body)
        status, headers, _ = self._send("PutObject", "PUT", Bucket, Key,
                                        headers=wire.request_headers(params) + checksum,
                                        body=body)
        return wire.response_fields(status, headers)

    def copy_object(self, *, Bucket: str, Key: str, **params: Any) -> dict[str, Any]:
        status, headers, body = self._send("CopyObject", "PUT", Bucket, Key,
                                           headers=wire.request_headers(params))
        root = self._checked_xml("CopyObject", status, headers, body)
        resp = wire.response_fields(status, headers)
        lm = wire.child_text(root, "LastModified")
        resp["CopyObjectResult"] = {"ETag": wire.child_text(root, "ETag") or ""}
        if lm:
            resp["CopyObjectResult"]["LastModified"] = lm
        return resp

    def delete_object(self, *, Bucket: str, Key: str, **params: Any) -> dict[str, Any]:
        status, headers, _ = self._send("DeleteObject", "DELETE", Bucket, Key,
                                        headers=wire.request_headers(params))
        return wire.response_fields(status, headers)

    def delete_objects(self, *, Bucket: str, Delete: dict[str, Any],
                       **params: Any) -> dict[str, Any]:
        body = wire.delete_body(Delete.get("Objects", []), bool(Delete.get("Quiet")))
        status, headers, data = self._send(
            "DeleteObjects", "POST", Bucket, None, query="delete",
            headers=[*wire.request_headers(params), ("Content-MD5", wire.content_md5(body)),
                     ("Content-Type", "application/xml")],
            body=body)
        root = self._checked_xml("DeleteObjects", status, headers, data)
        resp = wire.response_fields(status, headers)
        resp["Deleted"] = [{"Key": wire.child_text(d, "Key")}
                           for d in wire.children(root, "Deleted")]
        resp["Errors"] = [
            {"Key": wire.child_text(e, "Key"), "Code": wire.child_text(e, "Code"),
             "Message": wire.child_text(e, "Message")}
            for e in wire.children(root, "Error")
        ]
        return resp

    def create_multipart_upload(self, *, Bucket: str, Key: str,
                                **params: Any) -> dict[str, Any]:
        status, headers, body = self._send("CreateMultipartUpload", "POST", Bucket, Key,
                                           query="uploads",
                                           headers=wire.request_headers(params))
        root = self._checked_xml("CreateMultipartUpload", status, headers, body)
        resp = wire.response_fields(status, headers)
        upload_id = wire.child_text(root, "UploadId")
        if not upload_id:
            raise ResponseStreamingError(error="CreateMultipartUpload: no UploadId in response")
        resp["UploadId"] = upload_id
        return resp

    def upload_part(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                    Body: bytes | bytearray | FileRange = b"", **params: Any) -> dict[str, Any]:
        status, headers, _ = self._send(
            "UploadPart", "PUT", Bucket, Key,
            query=f"partNumber={int(PartNumber)}&uploadId={quote(UploadId, safe='')}",
            headers=wire.request_headers(params),
            body=Body if isinstance(Body, (bytes, bytearray, FileRange)) else bytes(Body))
        return wire.response_fields(status, headers)

    def upload_part_copy(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                         **params: Any) -> dict[str, Any]:
        status, headers, body = self._send(
            "UploadPartCopy", "PUT", Bucket, Key,
            query=f"partNumber={int(PartNumber)}&uploadId={quote(UploadId, safe='')}",
            headers=wire.request_headers(params))
        root = self._checked_xml("UploadPartCopy", status, headers, body)
        resp = wire.response_fields(status, headers)
        resp["CopyPartResult"] = {"ETag": wire.child_text(root, "ETag") or ""}
        return resp

    def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str,
                                  MultipartUpload: dict[str, Any],
                                  **params: Any) -> dict[str, Any]:
        body = wire.complete_body(MultipartUpload.get("Parts", []))
        status, headers, data = self._send(
            "CompleteMultipartUpload", "POST", Bucket, Key,
            query=f"uploadId={quote(UploadId, safe='')}",
            headers=[*wire.request_headers(params), ("Content-Type", "application/xml")],
            body=body)
        root = self._checked_xml("CompleteMultipartUpload", status, headers, data)
        resp = wire.response_fields(status, headers)
        resp["ETag"] = wire.child_text(root, "ETag") or resp.get("ETag", "")
        return resp

    def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str,
                               **params: Any) -> dict[str, Any]:
        status, headers, _ = self._send(
            "AbortMultipartUpload", "DELETE", Bucket, Key,
            query=f"uploadId={quote(UploadId, safe='')}",
            headers=wire.request_headers(params))
        return wire.response_fields(status, headers)
