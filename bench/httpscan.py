"""Follow HTTP/1.1 request framing on a client-to-server byte stream (without changing or holding
the bytes) and name each S3 request's kind: what bench.latency counts."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

_MAX_HEAD = 64 * 1024
KINDS = ("GET", "PUT", "HEAD", "LIST", "MULTIPART", "COPY", "DELETE", "OTHER")
_BUCKET_SUB = {
    "accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
    "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "tagging", "versioning", "website",
}  # fmt: skip


def request_kind(method: str, target: str, copy_source: bool) -> str:
    """The request kind (one of `KINDS`) of a path-style S3 request."""
    parts = urlsplit(target)
    _bucket, _, key = parts.path.lstrip("/").partition("/")
    q = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if not key:
        # ListObjects v1 has only prefix/marker/delimiter/max-keys; bucket sub-resources are OTHER
        if method == "GET" and ({"uploads", "versions"} & q or not q & _BUCKET_SUB):
            return "LIST"
        if method == "HEAD":
            return "HEAD"
        return "DELETE" if method == "POST" and "delete" in q else "OTHER"
    if "uploads" in q or "uploadId" in q:
        return "MULTIPART"
    if q & {"acl", "tagging", "retention", "legal-hold", "attributes", "restore"}:
        return "OTHER"
    if method == "PUT":
        return "COPY" if copy_source else "PUT"
    return method if method in ("GET", "HEAD", "DELETE") else "OTHER"


class RequestScanner:
    """Follows HTTP/1.1 request framing on one client-to-server stream and reports each head."""

    def __init__(self, on_request: Any) -> None:
        self.on_request = on_request  # called with (method, target, headers)
        self.state = "head"  # head | body | chunk_line | chunk | trailer | broken
        self.buf = bytearray()
        self.remaining = 0

    def feed(self, data: bytes) -> None:
        d = memoryview(data)
        while d and self.state != "broken":
            if self.state in ("body", "chunk"):
                k = min(self.remaining, len(d))
                self.remaining -= k
                d = d[k:]
                if not self.remaining:
                    self.state = "head" if self.state == "body" else "chunk_line"
                continue
            sep = b"\r\n\r\n" if self.state == "head" else b"\r\n"
            before = len(self.buf)
            self.buf += d
            j = self.buf.find(sep, max(0, before - len(sep) + 1))
            if j < 0:
                if len(self.buf) > _MAX_HEAD:
                    self.state = "broken"
                return
            d = d[j + len(sep) - before :]
            text = bytes(self.buf[:j])
            self.buf.clear()
            self._on_text(text)

    def _on_text(self, text: bytes) -> None:
        if self.state == "head":
            self._on_head(text)
        elif self.state == "chunk_line":
            try:
                size = int(text.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.state = "broken"
                return
            self.state, self.remaining = ("trailer", 0) if size == 0 else ("chunk", size + 2)
        elif self.state == "trailer" and not text:
            self.state = "head"

    def _on_head(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        start = lines[0].split(" ")
        if len(start) != 3 or not start[2].startswith("HTTP/1."):
            self.state = "broken"
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.on_request(start[0], start[1], headers)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = "chunk_line"
            return
        try:
            length = int(headers.get("content-length", "0").split(",")[0] or 0)
        except ValueError:
            self.state = "broken"
            return
        self.state, self.remaining = ("body", length) if length else ("head", 0)
