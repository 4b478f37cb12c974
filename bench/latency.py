"""A loopback TCP proxy that adds WAN latency (the kernel here has no netem) and counts S3 requests.

    python -m bench.latency --upstream 127.0.0.1:PORT --rtt-ms 20 [--listen PORT] [--control PORT]

prints ``endpoint http://127.0.0.1:P`` and ``control http://127.0.0.1:C`` and runs until SIGTERM or
Ctrl-C.  ``GET /stats`` on the control port returns the counters as JSON, ``POST /reset`` zeroes
them.  Importable: ``LatencyProxy(upstream, rtt_ms).start()`` / ``.stats()`` / ``.stop()``.

Each client connection gets its own upstream connection.  Every byte read from one side at time t
is delivered to the other side at t + RTT/2: the delay is *pipelined* (a queue per direction, not
stop-and-wait), so throughput is not capped by the delay, as on a real long fat link.  A new
connection also pays one RTT before its first byte is read (the TCP handshake a real link costs;
TLS handshakes are not modelled).  With ``rtt_ms == 0`` bytes are relayed by the reading thread
directly, without a queue.

The client-to-server stream is parsed as HTTP/1.1 (heads, Content-Length and chunked bodies; the
bytes themselves pass unchanged) to count requests by kind: GET, PUT, HEAD, LIST, MULTIPART
(create, part, part copy, complete, abort, list parts), COPY, DELETE (one object or a batch) and
OTHER (bucket calls).  Path-style addressing is assumed, as every client on loopback uses.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from bench.httpscan import KINDS, RequestScanner, request_kind

__all__ = ["KINDS", "LatencyProxy", "RequestScanner", "request_kind"]

_RECV = 256 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_QUEUE_LIMIT = 64 * 1024 * 1024  # bytes in flight per direction before the reader waits


class _DelayQueue:
    """Chunks stamped with their delivery time; bounded by bytes so a slow side pushes back."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.cond = threading.Condition()

    def put(self, due: float, data: bytes | None) -> None:
        with self.cond:
            while self.queued > _QUEUE_LIMIT:
                self.cond.wait()
            self.items.append((due, data))
            self.queued += len(data) if data else 0
            self.cond.notify_all()

    def take(self) -> tuple[float, list[bytes], bool]:
        """Wait for the next chunk; return it with every later chunk already due at its time."""
        with self.cond:
            while not self.items:
                self.cond.wait()
            due, data = self.items.popleft()
            out = [] if data is None else [data]
            eof = data is None
            while not eof and self.items and self.items[0][0] <= due:
                nxt = self.items.popleft()[1]
                if nxt is None:
                    eof = True
                else:
                    out.append(nxt)
            return due, out, eof

    def done(self, n: int) -> None:
        with self.cond:
            self.queued -= n
            self.cond.notify_all()


class LatencyProxy:
    """See the module docstring."""

    def __init__(
        self, upstream: str, rtt_ms: float = 0.0, listen_port: int = 0, handshake: bool = True
    ) -> None:
        u = urlsplit(upstream if "//" in upstream else f"//{upstream}")
        if not u.hostname or not u.port:
            raise ValueError(f"upstream must look like 127.0.0.1:PORT, not {upstream!r}")
        self.upstream = (u.hostname, u.port)
        self.rtt = rtt_ms / 1000.0
        self.delay = self.rtt / 2
        self.handshake = handshake and self.rtt > 0
        self.listen_port = listen_port
        self.endpoint = ""
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> LatencyProxy:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.listen_port))
        ls.listen(512)
        self._listener = ls
        self.endpoint = f"http://127.0.0.1:{ls.getsockname()[1]}"
        self._spawn(self._accept_loop, ls)
        return self

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

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters -------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.connections = 0
            self.bytes_up = 0  # client -> server
            self.bytes_down = 0
            self.unparsed = 0  # connections whose framing the scanner lost (counts undercount)
            self.requests: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rtt_ms": self.rtt * 1000,
                "connections": self.connections,
                "active": sum(1 for t in self._threads if t.name == "conn"),
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "unparsed": self.unparsed,
                "requests": {k: self.requests.get(k, 0) for k in KINDS},
                "requests_total": sum(self.requests.values()),
            }

    def _count_request(self, method: str, target: str, headers: dict[str, str]) -> None:
        kind = request_kind(method, target, "x-amz-copy-source" in headers)
        with self._lock:
            self.requests[kind] += 1

    def _count_bytes(self, up: bool, n: int) -> None:
        with self._lock:
            if up:
                self.bytes_up += n
            else:
                self.bytes_down += n

    # -- plumbing -------------------------------------------------------------------------
    def _spawn(self, fn: Any, *args: Any, name: str = "proxy") -> None:
        def run() -> None:
            try:
                fn(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        t = threading.Thread(target=run, daemon=True, name=name)
        with self._lock:
            self._threads.add(t)
        t.start()

    def _accept_loop(self, ls: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            self._spawn(self._serve, client, name="conn")

    def _serve(self, client: socket.socket) -> None:
        t0 = time.monotonic()
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._socks.update((client, upstream))
        try:
            if self.handshake:  # the SYN / SYN-ACK round trip a real link costs
                time.sleep(max(0.0, t0 + self.rtt - time.monotonic()))
            scanner = RequestScanner(self._count_request)
            done = threading.Event()
            self._spawn(self._direction, upstream, client, None, False, done)
            self._direction(client, upstream, scanner, True, None)
            done.wait()
            if scanner.state == "broken":
                with self._lock:
                    self.unparsed += 1
        finally:
            with self._lock:
                self._socks.difference_update((client, upstream))
            client.close()
            upstream.close()

    def _direction(
        self,
        src: socket.socket,
        dst: socket.socket,
        scanner: RequestScanner | None,
        up: bool,
        done: threading.Event | None,
    ) -> None:
        try:
            if self.delay > 0:
                queue = _DelayQueue()
                writer = threading.Thread(
                    target=self._writer, args=(queue, src, dst), daemon=True, name="writer"
                )
                writer.start()
                self._read(src, scanner, up, queue, None)
                writer.join()  # everything queued is delivered before the sockets close
            elif scanner is None and hasattr(os, "splice"):
                self._splice(src, dst, up)  # 0 ms, responses: zero-copy through a pipe
            else:
                self._read(src, scanner, up, None, dst)
        finally:
            if done is not None:
                done.set()

    def _read(
        self,
        src: socket.socket,
        scanner: RequestScanner | None,
        up: bool,
        queue: _DelayQueue | None,
        dst: socket.socket | None,
    ) -> None:
        """Read until EOF; relay directly (`dst`) or stamp and queue each chunk."""
        while True:
            try:
                data = src.recv(_RECV)
            except OSError:
                data = b""
            now = time.monotonic()
            if data:
                self._count_bytes(up, len(data))
                if scanner is not None:
                    scanner.feed(data)
            if queue is not None:
                queue.put(now + self.delay, data or None)
                if not data:
                    return
                continue
            assert dst is not None
            if not data:
                _shutdown(dst, socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                _shutdown(src, socket.SHUT_RDWR)
                return

    def _splice(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        """Relay src to dst with splice(2) until EOF (no delay, nothing to parse)."""
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, _F_SETPIPE_SZ, _RECV * 4)
            while True:
                try:
                    n = os.splice(src.fileno(), w, _RECV * 4)
                except OSError:
                    n = 0
                if not n:
                    _shutdown(dst, socket.SHUT_WR)
                    return
                self._count_bytes(up, n)
                left = n
                try:
                    while left:
                        left -= os.splice(r, dst.fileno(), left)
                except OSError:
                    _shutdown(src, socket.SHUT_RDWR)
                    return
        finally:
            os.close(r)
            os.close(w)

    def _writer(self, queue: _DelayQueue, src: socket.socket, dst: socket.socket) -> None:
        """Deliver each queued chunk at its due time; on a send error, tear both sides down."""
        while True:
            due, chunks, eof = queue.take()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            n = sum(len(c) for c in chunks)
            try:
                if chunks:
                    dst.sendall(b"".join(chunks) if len(chunks) > 1 else chunks[0])
            except OSError:
                _shutdown(src, socket.SHUT_RDWR)
                _shutdown(dst, socket.SHUT_RDWR)
                queue.done(n)
                _drain(queue)
                return
            queue.done(n)
            if eof:
                _shutdown(dst, socket.SHUT_WR)
                return


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _drain(queue: _DelayQueue) -> None:
    """After a failed send: discard until the reader's EOF so it never blocks on a full queue."""
    while True:
        _due, chunks, eof = queue.take()
        queue.done(sum(len(c) for c in chunks))
        if eof:
            return


def _control_server(proxy: LatencyProxy, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(proxy.stats())

        def do_POST(self) -> None:
            if self.path == "/reset":
                proxy.reset()
            self._reply(proxy.stats())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT (or http://HOST:PORT)")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time to add")
    ap.add_argument("--listen", type=int, default=0, help="port to listen on (default: any)")
    ap.add_argument("--control", type=int, default=0, help="stats port (default: any)")
    ap.add_argument("--no-handshake", action="store_true", help="no RTT for a new connection")
    args = ap.parse_args(argv)
    proxy = LatencyProxy(args.upstream, args.rtt_ms, args.listen, not args.no_handshake).start()
    control = _control_server(proxy, args.control)
    print(f"endpoint {proxy.endpoint}", flush=True)
    print(f"control http://127.0.0.1:{control.server_address[1]}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    control.shutdown()
    proxy.stop()
    print(json.dumps(proxy.stats()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
