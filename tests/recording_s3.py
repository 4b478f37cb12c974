"""A tiny loopback S3 stand-in that records request headers and returns canned answers.

For header-level tests of SSE modes SeaweedFS cannot honour (DSSE-KMS, Bucket Keys): it keeps
objects in memory, echoes the SSE headers a real S3 would return (never the SSE-C key itself),
and can be told to drop them from chosen operations to simulate a server that ignores SSE.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

SSE_ECHO = (
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key-md5",
)
DATE = "Wed, 01 Jan 2025 00:00:00 GMT"
ISO = "2025-01-01T00:00:00Z"


def _xml(tag: str, **fields: str) -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f"<{tag}>{inner}</{tag}>".encode()


@dataclass
class Recorded:
    op: str
    method: str
    key: str
    headers: dict[str, str]  # lowercase names


@dataclass
class _Obj:
    body: bytes
    sse: dict[str, str]
    meta: dict[str, str] = field(default_factory=dict)


class RecordingS3:
    """`with RecordingS3() as r:` -> r.endpoint, r.requests, r.strip_ops (op names or "*")."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.strip_ops: set[str] = set()
        self.objects: dict[str, _Obj] = {}
        self.uploads: dict[str, tuple[dict[str, str], dict[str, str], dict[int, bytes]]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers Expect: 100-continue at once

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                owner._handle(self, "HEAD")

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_PUT(self) -> None:
                owner._handle(self, "PUT")

            def do_POST(self) -> None:
                owner._handle(self, "POST")

            def do_DELETE(self) -> None:
                owner._handle(self, "DELETE")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> RecordingS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def ops(self, op: str) -> list[Recorded]:
        return [r for r in self.requests if r.op == op]

    # -- request handling --------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = unquote(url.path).lstrip("/").split("/", 1)
        key = parts[1] if len(parts) > 1 else ""
        headers = {k.lower(): v for k, v in h.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        body = h.rfile.read(length) if length else b""
        op = self._op(method, key, q, headers)
        with self.lock:
            self.requests.append(Recorded(op, method, key, headers))
            status, out_headers, payload = self._answer(op, key, q, headers, body)
        if op in self.strip_ops or "*" in self.strip_ops:
            out_headers = {k: v for k, v in out_headers.items() if k not in SSE_ECHO}
        h.send_response(status)
        for k, v in out_headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    @staticmethod
    def _op(method: str, key: str, q: dict[str, str], hd: dict[str, str]) -> str:
        copy = "x-amz-copy-source" in hd
        if not key:
            return {"HEAD": "HeadBucket", "GET": "ListObjectsV2", "POST": "DeleteObjects"}.get(
                method, "Bucket" + method
            )
        if method == "POST":
            return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
        if method == "PUT" and "partNumber" in q:
            return "UploadPartCopy" if copy else "UploadPart"
        if method == "PUT":
            return "CopyObject" if copy else "PutObject"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        return {"HEAD": "HeadObject", "GET": "GetObject"}[method]

    @staticmethod
    def _sse(hd: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in hd.items() if k in SSE_ECHO}

    @staticmethod
    def _meta(hd: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in hd.items() if k.startswith("x-amz-meta-")}

    def _answer(
        self, op: str, key: str, q: dict[str, str], hd: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        xml = {"Content-Type": "application/xml"}
        if op == "HeadBucket":
            return 200, {}, b""
        if op == "PutObject":
            etag = f"e{len(self.requests)}"
            self.objects[key] = _Obj(body, self._sse(hd), self._meta(hd))
            return 200, {"ETag": f'"{etag}"', **self._sse(hd)}, b""
        if op == "CopyObject":
            src = unquote(hd["x-amz-copy-source"]).lstrip("/").split("/", 1)[1]
            obj = self.objects[src]
            self.objects[key] = _Obj(obj.body, self._sse(hd), self._meta(hd) or obj.meta)
            res = _xml("CopyObjectResult", ETag='"c0ffee"', LastModified=ISO)
            return 200, {**xml, **self._sse(hd)}, res
        if op == "CreateMultipartUpload":
            uid = f"up{len(self.uploads)}"
            self.uploads[uid] = (self._sse(hd), self._meta(hd), {})
            res = _xml("InitiateMultipartUploadResult", Bucket="b", Key=key, UploadId=uid)
            return 200, {**xml, **self._sse(hd)}, res
        if op in ("UploadPart", "UploadPartCopy"):
            sse, _, parts = self.uploads[q["uploadId"]]
            if op == "UploadPartCopy":
                src = unquote(hd["x-amz-copy-source"]).lstrip("/").split("/", 1)[1]
                a, b = hd["x-amz-copy-source-range"].removeprefix("bytes=").split("-")
                body = self.objects[src].body[int(a) : int(b) + 1]
            parts[int(q["partNumber"])] = body
            etag = f'"p{q["partNumber"]}"'
            echo = {**sse, **self._sse(hd)}
            if op == "UploadPart":
                return 200, {"ETag": etag, **echo}, b""
            return 200, {**xml, **echo}, _xml("CopyPartResult", ETag=etag, LastModified=ISO)
        if op == "CompleteMultipartUpload":
            sse, meta, parts = self.uploads.pop(q["uploadId"])
            self.objects[key] = _Obj(b"".join(parts[n] for n in sorted(parts)), sse, meta)
            res = _xml("CompleteMultipartUploadResult", Key=key, ETag=f'"mp-{len(parts)}"')
            return 200, {**xml, **sse}, res
        if op in ("HeadObject", "GetObject"):
            found = self.objects.get(key)
            if found is None:
                return 404, {}, b""
            obj = found
            hdrs = {
                "ETag": '"e"',
                "Last-Modified": DATE,
                **{
                    k: v
                    for k, v in obj.sse.items()
                    if k != "x-amz-server-side-encryption-customer-key"
                },
                **obj.meta,
            }
            return 200, hdrs, obj.body  # HEAD: Content-Length only, body not sent
        if op in ("DeleteObject", "AbortMultipartUpload"):
            self.objects.pop(key, None)
            return 204, {}, b""
        return 501, xml, b"<Error><Code>NotImplemented</Code></Error>"
