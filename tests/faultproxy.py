"""A counting, fault-injecting HTTP/1.1 proxy between an S3 client and a loopback S3 endpoint.

Point boto3 (or the mount) at ``FaultProxy(upstream).endpoint``.  Requests are forwarded byte for
byte, Host header included: the client signs SigV4 for the proxy's ``host:port`` and the upstream
verifies over the Host header it receives, so signatures stay valid.

One thread per client connection, each paired with its own keep-alive upstream connection; bodies
are streamed (never held in memory).  Faults are chosen per request when its head arrives:

* ``status``   answer with an S3 XML error (``status`` / ``code``) without contacting upstream;
* ``reset``    abort the client connection with a TCP RST after reading the request head;
* ``timeout``  hold the request for ``delay`` seconds without answering, then close it (the
               request never reaches upstream);
* ``slow``     forward normally but trickle the response body at ``bytes_per_s``;
* ``truncate`` forward the response head (full Content-Length) and half the body, then close
               (only observable on responses that have a body, e.g. GetObject);
* ``hold``     forward normally, then keep the upstream's answer for ``delay`` seconds before
               relaying it (the request is done upstream but still in flight for the client).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Self
from urllib.parse import parse_qsl, unquote, urlsplit

_BUF = 1 << 20
_MAX_HEAD = 1 << 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_KINDS = ("status", "reset", "timeout", "slow", "truncate", "hold")


@dataclass
class Fault:
    """One fault rule; ``injected`` counts how often it fired."""

    kind: str
    op: str | None = None
    key_contains: str | None = None
    rate: float = 1.0
    count: int | None = None
    status: int = 503
    code: str = "SlowDown"
    delay: float = 30.0
    bytes_per_s: int = 65536
    injected: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_KINDS}")


@dataclass
class RequestRecord:
    """What one request did (kept in `FaultProxy.history`)."""

    method: str
    op: str
    bucket: str
    key: str
    # None when no response was sent (reset/timeout/upstream error)
    status: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    fault: str | None = None
    started: float = 0.0  # time.monotonic() when the request head arrived
    answered: float = 0.0  # ... when the response head was sent to the client (0: never)


# --- S3 operation classification -------------------------------------------------------------

_BUCKET_SUB = {
    "acl": "Acl", "cors": "Cors", "encryption": "Encryption", "lifecycle": "LifecycleConfiguration",
    "location": "Location", "logging": "Logging", "notification": "NotificationConfiguration",
    "object-lock": "ObjectLockConfiguration", "ownershipControls": "OwnershipControls",
    "policy": "Policy", "publicAccessBlock": "PublicAccessBlock", "tagging": "Tagging",
    "versioning": "Versioning", "website": "Website",
}  # fmt: skip
_OBJECT_SUB = {"acl": "Acl", "tagging": "Tagging", "retention": "Retention",
               "legal-hold": "LegalHold"}  # fmt: skip
_VERB = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


def split_target(target: str) -> tuple[str, str, set[str]]:
    """Return (bucket, key, query parameter names) of a path-style request target."""
    parts = urlsplit(target)
    path = parts.path.lstrip("/")
    bucket, _, key = path.partition("/")
    params = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    return unquote(bucket), unquote(key), params


def classify(method: str, target: str, copy_source: bool = False) -> str:
    """Name the S3 API operation of a path-style request (``"Unknown"`` if unsure)."""
    bucket, key, q = split_target(target)
    if not bucket:
        return "ListBuckets" if method == "GET" else "Unknown"
    if not key:
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST":
            return "DeleteObjects" if "delete" in q else "Unknown"
        if method == "GET":
            if "list-type" in q:
                return "ListObjectsV2"
            if "uploads" in q:
                return "ListMultipartUploads"
            if "versions" in q:
                return "ListObjectVersions"
        for sub, name in _BUCKET_SUB.items():
            if sub in q and method in _VERB:
                return f"{_VERB[method]}Bucket{name}"
        return {
            "GET": "ListObjects",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
        }.get(method, "Unknown")
    if method == "HEAD":
        return "HeadObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return "RestoreObject" if "restore" in q else "Unknown"
    if "uploadId" in q:
        if method == "PUT":
            return "UploadPartCopy" if copy_source else "UploadPart"
        return {"GET": "ListParts", "DELETE": "AbortMultipartUpload"}.get(method, "Unknown")
    for sub, name in _OBJECT_SUB.items():
        if sub in q and method in _VERB:
            return f"{_VERB[method]}Object{name}"
    if method == "PUT":
        return "CopyObject" if copy_source else "PutObject"
    if method == "GET":
        return "GetObjectAttributes" if "attributes" in q else "GetObject"
    return "DeleteObject" if method == "DELETE" else "Unknown"


# --- minimal HTTP/1.1 plumbing ---------------------------------------------------------------


class _Closed(Exception):
    """The peer went away (or the proxy is stopping)."""


class _Head:
    """A parsed request or response head; ``raw`` is what goes on the wire."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0].split(" ", 2)
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()

    def get(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def chunked(self) -> bool:
        return "chunked" in self.get("transfer-encoding").lower()

    @property
    def length(self) -> int | None:
        value = self.get("content-length")
        return int(value.split(",")[0]) if value else None

    def keep_alive(self, version: str) -> bool:
        conn = self.get("connection").lower()
        if version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class _Sock:
    """A socket with a read-ahead buffer: heads are parsed from it, bodies bypass it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def read_head(self) -> bytes | None:
        """The next head, or None on a clean EOF between messages."""
        start = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", start)
            if i >= 0:
                head = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _Closed("head too large")
            start = max(0, len(self.buf) - 3)
            data = self._recv(65536)
            if not data:
                if self.buf:
                    raise _Closed("EOF inside a head")
                return None
            self.buf += data

    def read_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[: i + 2])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise _Closed("line too long")
            data = self._recv(65536)
            if not data:
                raise _Closed("EOF inside a chunk header")
            self.buf += data

    def read_into(self, view: memoryview) -> int:
        """Read at least one byte into ``view``; raise `_Closed` on EOF."""
        if self.buf:
            n = min(len(view), len(self.buf))
            view[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        try:
            n = self.sock.recv_into(view)
        except OSError as e:
            raise _Closed(str(e)) from e
        if not n:
            raise _Closed("EOF inside a body")
        return n

    def _recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except OSError as e:
            raise _Closed(str(e)) from e

    def send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise _Closed(str(e)) from e

    def stale(self) -> bool:
        """True if the (idle) peer closed this connection or sent something unexpected."""
        if self.buf:
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


class _Scratch:
    """Per-connection copy buffer, plus a pipe for splice(2) where the OS has it."""

    def __init__(self) -> None:
        self.mem = memoryview(bytearray(_BUF))
        self.pipe: tuple[int, int] | None = None
        self.size = _BUF
        if hasattr(os, "splice"):
            self.pipe = os.pipe()
            with contextlib.suppress(OSError):
                self.size = fcntl.fcntl(self.pipe[1], _F_SETPIPE_SZ, _BUF)

    def splice(
        self, src: socket.socket, dst: socket.socket, n: int, counted: Callable[[int], None]
    ) -> int:
        """Move 1..n bytes from ``src`` to ``dst`` through the pipe, calling ``counted`` before
        they go out; raise `_Closed` on EOF."""
        assert self.pipe is not None
        r, w = self.pipe
        try:
            k = os.splice(src.fileno(), w, min(n, self.size))
            if not k:
                raise _Closed("EOF inside a body")
            counted(k)
            left = k
            while left:
                left -= os.splice(r, dst.fileno(), left)
        except OSError as e:
            # bytes stuck in the pipe would corrupt the next body: drop the pipe
            self.close()
            raise _Closed(str(e)) from e
        return k

    def close(self) -> None:
        if self.pipe is not None:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _error_body(code: str, resource: str, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>Injected by FaultProxy</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


# --- the proxy -------------------------------------------------------------------------------


class FaultProxy:
    """Loopback proxy that counts S3 requests and injects `Fault`s; see the module docstring."""

    def __init__(self, upstream: str, seed: int | None = None, history: int = 100_000) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise ValueError(f"upstream must look like http://127.0.0.1:PORT, not {upstream!r}")
        self.upstream = (u.hostname, u.port)
        self.endpoint = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._listener: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._socks: set[socket.socket] = set()
        self._history: deque[RequestRecord] = deque(maxlen=history)
        self.reset_stats()

    # lifecycle

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self.endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._spawn(self._accept_loop, listener)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults and counters

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self._requests: Counter[str] = Counter()
            self._up: Counter[str] = Counter()
            self._down: Counter[str] = Counter()
            self._status: Counter[int] = Counter()
            self._injected: Counter[str] = Counter()
            self._connections = 0
            self._history.clear()

    def stats(self) -> dict:
        """Snapshot: request counts per operation, body bytes up/down, statuses, faults fired."""
        with self._lock:
            return {
                "total": sum(self._requests.values()),
                "requests": dict(self._requests),
                "bytes_up": sum(self._up.values()),
                "bytes_down": sum(self._down.values()),
                "by_op_bytes_up": dict(self._up),
                "by_op_bytes_down": dict(self._down),
                "status": dict(self._status),
                "faults": dict(self._injected),
                "connections": self._connections,
            }

    def count(self, op: str | None = None) -> int:
        """Requests seen for ``op`` (all operations if None) since the last `reset_stats`."""
        with self._lock:
            return self._requests[op] if op else sum(self._requests.values())

    def history(self) -> list[RequestRecord]:
        """Every request since the last `reset_stats` (oldest first; records of in-flight
        requests are still being filled in)."""
        with self._lock:
            return list(self._history)

    def _pick(self, op: str, key: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.op is not None and f.op != op:
                    continue
                if f.key_contains is not None and f.key_contains not in key:
                    continue
                if f.count is not None and f.injected >= f.count:
                    continue
                if f.rate < 1.0 and self._rng.random() >= f.rate:
                    continue
                f.injected += 1
                self._injected[f.kind] += 1
                return f
        return None

    def _count_dir(self, rec: RequestRecord, up_dir: bool, n: int) -> None:
        if up_dir:
            self._count(rec, up=n)
        else:
            self._count(rec, down=n)

    def _count(self, rec: RequestRecord, up: int = 0, down: int = 0) -> None:
        with self._lock:
            rec.bytes_up += up
            rec.bytes_down += down
            self._up[rec.op] += up
            self._down[rec.op] += down

    # threads

    def _spawn(self, target: object, sock: socket.socket) -> None:
        t = threading.Thread(target=self._run, args=(target, sock), daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _run(self, target: object, sock: socket.socket) -> None:
        try:
            target(sock)  # type: ignore[operator]
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections += 1
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        """Handle one client connection (keep-alive) with its own upstream connection."""
        self._track(sock)
        client = _Sock(sock)
        up: _Sock | None = None
        buf = _Scratch()
        try:
            while not self._stopping.is_set():
                keep, up = self._exchange(client, up, buf)
                if not keep:
                    break
        except _Closed:
            pass
        finally:
            buf.close()
            for s in (sock, up.sock if up else None):
                if s is not None:
                    self._untrack(s)
                    with contextlib.suppress(OSError):
                        s.close()

    def _upstream(self, up: _Sock | None) -> _Sock:
        if up is not None and not up.stale():
            return up
        if up is not None:
            self._untrack(up.sock)
            up.sock.close()
        try:
            sock = _connect(*self.upstream)
        except OSError as e:
            raise _Closed(f"upstream: {e}") from e
        self._track(sock)
        return _Sock(sock)

    def _exchange(
        self, client: _Sock, up: _Sock | None, buf: _Scratch
    ) -> tuple[bool, _Sock | None]:
        """Relay one request/response; return (keep the client connection, upstream conn)."""
        raw = client.read_head()
        if raw is None:
            return False, up
        req = _Head(raw)
        if len(req.start) != 3:
            raise _Closed("bad request line")
        method, target, version = req.start
        bucket, key, _ = split_target(target)
        op = classify(method, target, bool(req.get("x-amz-copy-source")))
        rec = RequestRecord(method, op, bucket, key, started=time.monotonic())
        with self._lock:
            self._requests[op] += 1
            self._history.append(rec)
        fault = self._pick(op, key)
        rec.fault = fault.kind if fault else None
        keep = req.keep_alive(version)
        expect = "100-continue" in req.get("expect").lower()

        if fault is not None and fault.kind == "reset":
            _reset(client.sock)
            raise _Closed("reset injected")
        if fault is not None and fault.kind == "timeout":
            self._stopping.wait(fault.delay)
            raise _Closed("timeout injected")
        if fault is not None and fault.kind == "status":
            # the client has not sent the body and never will: answer and hang up
            if expect:
                keep = False
            else:
                self._relay_body(client, None, req, rec, buf, up_dir=True)
            self._send_error(client, rec, method, target, fault, keep)
            return keep, up

        up = self._upstream(up)
        up.send(raw)
        resp = None
        if expect:
            resp = self._interim(up, client)
        if resp is None:
            self._relay_body(client, up, req, rec, buf, up_dir=True)
            resp = self._response_head(up, client)
        else:  # a final answer before the body: the request body was never sent
            keep = False
        status = int(resp.start[1])
        rec.status = status
        with self._lock:
            self._status[status] += 1
        has_body = method != "HEAD" and status not in (204, 304)
        resp_keep = resp.keep_alive(resp.start[0])
        if fault is not None and fault.kind == "hold":
            self._stopping.wait(fault.delay)
        rec.answered = time.monotonic()
        if fault is not None and fault.kind == "truncate":
            client.send(resp.raw)
            if has_body:
                self._truncate(up, client, resp, rec, buf)
            raise _Closed("truncate injected")
        client.send(resp.raw)
        pace = fault.bytes_per_s if fault is not None and fault.kind == "slow" else None
        if has_body:
            if not resp.chunked and resp.length is None:  # delimited by close
                self._relay_until_close(up, client, rec, buf, pace)
                return False, up
            self._relay_body(up, client, resp, rec, buf, up_dir=False, pace=pace)
        if not resp_keep:
            self._untrack(up.sock)
            up.sock.close()
            up = None
        return keep and resp_keep, up

    def _interim(self, up: _Sock, client: _Sock) -> _Head | None:
        """After an ``Expect: 100-continue`` head: relay a 100 and return None, or return the
        final response the upstream sent instead; after 1 s of silence send the body anyway."""
        if not up.buf:
            readable, _, _ = select.select([up.sock], [], [], 1.0)
            if not readable:
                return None
        raw = up.read_head()
        if raw is None:
            raise _Closed("upstream closed")
        head = _Head(raw)
        if head.start[1] == "100":
            client.send(raw)
            return None
        return head

    def _response_head(self, up: _Sock, client: _Sock) -> _Head:
        while True:
            raw = up.read_head()
            if raw is None:
                raise _Closed("upstream closed before answering")
            head = _Head(raw)
            if not head.start[1].startswith("1"):
                return head
            client.send(raw)  # other interim responses pass through

    def _send_error(
        self,
        client: _Sock,
        rec: RequestRecord,
        method: str,
        target: str,
        f: Fault,
        keep: bool,
    ) -> None:
        with self._lock:
            self._status[f.status] += 1
            n = sum(self._injected.values())
        rec.status = f.status
        body = _error_body(f.code, urlsplit(target).path, f"faultproxy-{n}")
        head = (
            f"HTTP/1.1 {f.status} {f.code}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {0 if method == 'HEAD' else len(body)}\r\n"
            f"x-amz-request-id: faultproxy-{n}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        if method != "HEAD":
            self._count(rec, down=len(body))
        client.send(head if method == "HEAD" else head + body)

    def _relay_body(
        self,
        src: _Sock,
        dst: _Sock | None,
        head: _Head,
        rec: RequestRecord,
        buf: _Scratch,
        up_dir: bool,
        pace: int | None = None,
    ) -> None:
        """Copy one message body (Content-Length or chunked); ``dst=None`` discards it."""
        if head.chunked:
            while True:
                line = src.read_line()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                self._emit(dst, line, rec, up_dir, pace)
                if size == 0:
                    while True:  # trailers up to the empty line
                        trailer = src.read_line()
                        self._emit(dst, trailer, rec, up_dir, pace)
                        if trailer == b"\r\n":
                            return
                self._copy(src, dst, size + 2, rec, buf, up_dir, pace)
        else:
            self._copy(src, dst, head.length or 0, rec, buf, up_dir, pace)

    def _copy(
        self,
        src: _Sock,
        dst: _Sock | None,
        n: int,
        rec: RequestRecord,
        buf: _Scratch,
        up_dir: bool,
        pace: int | None,
    ) -> None:
        if n and src.buf:  # bytes already read ahead go first
            k = min(n, len(src.buf))
            self._emit(dst, bytes(src.buf[:k]), rec, up_dir, pace)
            del src.buf[:k]
            n -= k
        if pace is None and dst is not None and buf.pipe is not None:
            while n > 0:  # zero-copy: socket -> pipe -> socket
                n -= buf.splice(src.sock, dst.sock, n, partial(self._count_dir, rec, up_dir))
            return
        limit = len(buf.mem) if pace is None else max(1, pace // 20)
        while n > 0:
            k = src.read_into(buf.mem[: min(n, limit)])
            self._emit(dst, buf.mem[:k], rec, up_dir, pace)
            n -= k

    def _emit(
        self,
        dst: _Sock | None,
        data: bytes | memoryview,
        rec: RequestRecord,
        up_dir: bool,
        pace: int | None,
    ) -> None:
        # count first: a client may read the stats as soon as it has the bytes
        if up_dir:
            self._count(rec, up=len(data))
        else:
            self._count(rec, down=len(data))
        if dst is not None:
            dst.send(data)
        if pace is not None and self._stopping.wait(len(data) / pace):
            raise _Closed("stopping")

    def _relay_until_close(
        self,
        up: _Sock,
        client: _Sock,
        rec: RequestRecord,
        buf: _Scratch,
        pace: int | None,
    ) -> None:
        limit = len(buf.mem) if pace is None else max(1, pace // 20)
        while True:
            try:
                k = up.read_into(buf.mem[:limit])
            except _Closed:
                return
            self._emit(client, buf.mem[:k], rec, False, pace)

    def _truncate(
        self, up: _Sock, client: _Sock, resp: _Head, rec: RequestRecord, buf: _Scratch
    ) -> None:
        """Send half of a Content-Length body (nothing of a chunked one), then stop."""
        if resp.chunked or resp.length is None:
            return
        self._copy(up, client, resp.length // 2, rec, buf, False, None)


@contextlib.contextmanager
def faults(proxy: FaultProxy, *rules: Fault) -> Iterator[FaultProxy]:
    """Install ``rules`` for the duration of a ``with`` block, then clear all faults."""
    for rule in rules:
        proxy.add_fault(rule)
    try:
        yield proxy
    finally:
        proxy.clear_faults()


__all__ = ["Fault", "FaultProxy", "RequestRecord", "classify", "faults", "split_target"]


if __name__ == "__main__":  # manual use: python tests/faultproxy.py http://127.0.0.1:PORT
    import sys

    with FaultProxy(sys.argv[1]) as _proxy:
        print(_proxy.endpoint, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(_proxy.stats())
