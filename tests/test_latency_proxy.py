"""bench/latency.py: bytes pass unchanged, a round trip costs the RTT, the delay is pipelined,
and S3 requests are counted by kind from the request framing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.latency import LatencyProxy, RequestScanner, request_kind

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


class _Upstream:
    """A threaded TCP server on loopback; `handler(conn)` serves one connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            self.handler(conn)

    def close(self) -> None:
        self.sock.close()


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(min(1 << 20, n - len(buf)))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


@pytest.fixture
def echo() -> Iterator[_Upstream]:
    up = _Upstream(_echo)
    yield up
    up.close()


def _connect(proxy: LatencyProxy) -> socket.socket:
    port = int(proxy.endpoint.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize("rtt_ms", [0, 10])
def test_bytes_pass_unchanged_with_many_connections(echo: _Upstream, rtt_ms: float) -> None:
    n_conn, size = 48, 512 * 1024
    errors: list[str] = []

    def one(i: int) -> None:
        payload = os.urandom(size)
        try:
            with _connect(proxy) as s:
                sender = threading.Thread(target=s.sendall, args=(payload,))
                sender.start()
                got = _recv_exactly(s, size)
                sender.join()
                s.shutdown(socket.SHUT_WR)
                tail = s.recv(1)  # the echo server closes once it saw our EOF
            if got != payload or tail:
                errors.append(f"connection {i}: bytes differ")
        except OSError as e:
            errors.append(f"connection {i}: {e}")

    with LatencyProxy(f"127.0.0.1:{echo.port}", rtt_ms) as proxy:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n_conn)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = proxy.stats()
    assert errors == []
    assert stats["connections"] == n_conn
    assert stats["bytes_up"] == stats["bytes_down"] == n_conn * size


def test_round_trip_takes_at_least_the_rtt(echo: _Upstream) -> None:
    rtt = 0.060
    with LatencyProxy(f"127.0.0.1:{echo.port}", rtt * 1000) as proxy:
        t0 = time.monotonic()
        with _connect(proxy) as s:
            s.sendall(b"ping")
            assert _recv_exactly(s, 4) == b"ping"
            first = time.monotonic() - t0
            warm = []
            for _ in range(3):
                t1 = time.monotonic()
                s.sendall(b"ping")
                assert _recv_exactly(s, 4) == b"ping"
                warm.append(time.monotonic() - t1)
    assert first >= 2 * rtt  # the handshake round trip, then the request's
    assert min(warm) >= rtt


def test_large_transfer_is_pipelined_not_stop_and_wait() -> None:
    """64 MiB at 100 ms RTT: stop-and-wait with even a 256 KiB window needs 256 RTTs (25.6 s)."""
    size, rtt = 64 * MiB, 0.100
    received: list[int] = []

    def sink(conn: socket.socket) -> None:
        n = 0
        while n < size and (data := conn.recv(1 << 20)):
            n += len(data)
        received.append(n)
        conn.sendall(b"done")

    up = _Upstream(sink)
    chunk = os.urandom(MiB)
    try:
        with LatencyProxy(f"127.0.0.1:{up.port}", rtt * 1000) as proxy, _connect(proxy) as s:
            t0 = time.monotonic()
            for _ in range(size // MiB):
                s.sendall(chunk)
            assert _recv_exactly(s, 4) == b"done"
            elapsed = time.monotonic() - t0
    finally:
        up.close()
    assert received == [size]
    assert elapsed >= rtt  # at least one (handshake) RTT
    assert elapsed < 256 * rtt / 3, f"{elapsed:.1f}s: the delay is not pipelined"


def _http(method: str, target: str, body: bytes = b"", chunked: bool = False, **hdr: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in hdr.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        payload = b"".join(
            f"{len(p):x};chunk-signature=ab\r\n".encode() + p + b"\r\n"
            for p in (body[:half], body[half:])
            if p
        )
        payload += b"0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n"
    else:
        payload = body
        if body:
            lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def test_scanner_follows_framing_byte_by_byte() -> None:
    # bodies that look like request heads must not be counted
    trap = b"GET /b/x HTTP/1.1\r\nHost: y\r\n\r\n" * 3
    stream = b"".join(
        [
            _http("PUT", "/b/k", trap),
            _http("PUT", "/b/k2", trap, chunked=True),
            _http("GET", "/b/k"),
            _http("HEAD", "/b/k"),
            _http("GET", "/b?list-type=2&prefix=a%2F"),
            _http("GET", "/b?delimiter=%2F&max-keys=1000&prefix="),  # ListObjects v1
            _http("GET", "/b?versioning"),
            _http("PUT", "/b/k3", x_amz_copy_source="/b/k"),
            _http("POST", "/b/big?uploads"),
            _http("PUT", "/b/big?partNumber=1&uploadId=u", trap),
            _http("POST", "/b/big?uploadId=u", b"<Complete/>"),
            _http("DELETE", "/b/k"),
            _http("POST", "/b?delete", b"<Delete/>"),
            _http("PUT", "/b"),
        ]
    )
    for step in (1, 7, len(stream)):
        seen: list[str] = []

        def on_request(m: str, t: str, h: dict[str, str], seen: list[str] = seen) -> None:
            seen.append(request_kind(m, t, "x-amz-copy-source" in h))

        scanner = RequestScanner(on_request)
        for i in range(0, len(stream), step):
            scanner.feed(stream[i : i + step])
        assert scanner.state == "head"
        assert seen == [
            "PUT", "PUT", "GET", "HEAD", "LIST", "LIST", "OTHER", "COPY",
            "MULTIPART", "MULTIPART", "MULTIPART", "DELETE", "DELETE", "OTHER",
        ]  # fmt: skip


def test_scanner_gives_up_on_garbage() -> None:
    seen: list[str] = []
    scanner = RequestScanner(lambda m, t, h: seen.append(m))
    scanner.feed(b"\x16\x03\x01 not http at all\r\n\r\nGET /b/k HTTP/1.1\r\n\r\n")
    assert scanner.state == "broken"
    assert seen == []


def test_command_line_prints_endpoint_and_serves(echo: _Upstream) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.latency", "--upstream", f"127.0.0.1:{echo.port}",
         "--rtt-ms", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split()
        control = proc.stdout.readline().split()
        assert endpoint[0] == "endpoint" and control[0] == "control"
        port = int(endpoint[1].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"hello")
            assert _recv_exactly(s, 5) == b"hello"
        import json
        import urllib.request

        with urllib.request.urlopen(control[1] + "/stats", timeout=30) as r:
            stats = json.load(r)
        assert stats["connections"] == 1 and stats["bytes_up"] == 5
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_counts_real_s3_requests_by_kind(s3server: Any, s3: Any) -> None:
    """boto3 and awscrt against SeaweedFS through the proxy: every request counted, by kind."""
    import boto3
    from botocore.config import Config

    from bench.clients import _crt_request, crt_client

    bucket = f"latency-count-{os.getpid()}"
    with LatencyProxy(s3server.endpoint, 2) as proxy:
        c = boto3.client(
            "s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
            aws_access_key_id=s3server.access_key, aws_secret_access_key=s3server.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip
        c.create_bucket(Bucket=bucket)  # OTHER
        body = os.urandom(300_000)
        c.put_object(Bucket=bucket, Key="a", Body=body)
        assert c.get_object(Bucket=bucket, Key="a")["Body"].read() == body
        c.head_object(Bucket=bucket, Key="a")
        c.list_objects_v2(Bucket=bucket)
        c.copy_object(Bucket=bucket, Key="b", CopySource={"Bucket": bucket, "Key": "a"})
        up = c.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
        etag = c.upload_part(Bucket=bucket, Key="m", UploadId=up, PartNumber=1, Body=body)["ETag"]
        c.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=up,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        c.delete_object(Bucket=bucket, Key="b")
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "m"}]})
        host = proxy.endpoint.split("://", 1)[1]
        crt = crt_client(proxy.endpoint, s3server.access_key, s3server.secret_key)
        _crt_request(crt, host, "PUT", f"/{bucket}/crt", body=body).finished_future.result(60)
        _crt_request(crt, host, "GET", f"/{bucket}/crt").finished_future.result(60)
        stats = proxy.stats()
    assert stats["unparsed"] == 0
    assert stats["requests"] == {
        "GET": 2, "PUT": 2, "HEAD": 1, "LIST": 1, "MULTIPART": 3, "COPY": 1, "DELETE": 2,
        "OTHER": 1,
    }  # fmt: skip
    assert stats["bytes_up"] > 3 * len(body) and stats["bytes_down"] > 2 * len(body)
    assert s3.get_object(Bucket=bucket, Key="crt")["Body"].read() == body
