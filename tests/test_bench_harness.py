"""The bench harness: one report with a table per network set, the S3/CPU/FUSE count tables, the
proxy's own cost, and a JSON with every set (the first also at the top for older readers)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from bench import report
from bench.run import parse_rtts, set_key, tree_failures


def _doc(rtt: float, fast: float) -> dict:
    ours = {"status": "ok", "seconds": 10.0 / fast, "items": 800, "s3_requests": 812,
            "s3": {"PUT": 800, "LIST": 12}, "cpu_s": 0.4, "cpu_ms_per_req": 0.49,
            "fuse_requests": 16_000}  # fmt: skip
    rclone = {"status": "ok", "seconds": 20.0, "s3_requests": 2400, "s3": {"PUT": 800,
              "HEAD": 1600}, "cpu_s": 2.4, "cpu_ms_per_req": 1.0}  # fmt: skip
    return {
        "rtt_ms": rtt,
        "proxy": True,
        "proxy_cpu_s": 12.0,
        "peers": ["s3encfs-plain", "rclone-tuned"],
        "results": {
            "W4": {"s3encfs-plain": ours, "rclone-tuned": rclone},
            "W7up": {"boto3": {"status": "ok", "seconds": 1.0, "mbps": 90.0},
                     "boto3-direct": {"status": "ok", "seconds": 1.0, "mbps": 100.0}},
        },
    }


def test_report_has_both_sets_counts_and_proxy_cost(tmp_path: Path) -> None:
    docs = {"rtt0": _doc(0, 2.0), "rtt20": _doc(20, 4.0)}
    text = report.render_sets(docs)
    assert "Loopback, through the counting proxy at 0 ms" in text
    assert "20 ms RTT" in text
    assert "812 P800 L12" in text and "2400 P800 H1600" in text
    assert "0.49" in text and "16000" in text
    assert "boto3 up 90 vs 100 MB/s (90%)" in text and "own CPU over this whole set: 12.0 s" in text
    out = tmp_path / "r.json"
    report.write_json(out, {"date": "now"}, docs)
    doc = json.loads(out.read_text())
    assert set(doc["sets"]) == {"rtt0", "rtt20"}
    assert doc["results"] == docs["rtt0"]["results"]  # the first set, for older readers
    # W4 at 20 ms: s3encfs 2.5 s against rclone-tuned 20 s
    assert abs(doc["sets"]["rtt20"]["ratios"]["W4"]["s3encfs-plain/best"] - 8.0) < 1e-9


def test_rtt_sets_and_tree_failures() -> None:
    assert parse_rtts("0,20") == [0.0, 20.0]
    assert parse_rtts("direct, 20") == [None, 20.0]
    assert [set_key(r) for r in (None, 0.0, 20.0, 2.5)] == ["direct", "rtt0", "rtt20", "rtt2.5"]

    done = SimpleNamespace(
        results={"W4": {"s3fs": {"status": "timeout"}, "rclone": {"status": "ok", "seconds": 30},
                        "slow": {"status": "ok", "seconds": 250}}}
    )  # fmt: skip
    assert tree_failures([done], 420) == {"s3fs", "slow"}  # type: ignore[list-item]


def test_meter_counts_one_workload_through_the_proxy_process(tmp_path: Path) -> None:
    """`ProxyProcess` (python -m bench.latency) + `Meter`: requests since `begin`, by kind, and the
    daemon CPU per request from the peer's session total."""
    import http.client
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from bench.netpath import Meter, ProxyProcess

    class Ok(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _ok(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_DELETE = _ok

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    Thread(target=server.serve_forever, daemon=True).start()
    proxy = ProxyProcess(f"127.0.0.1:{server.server_address[1]}", 0, tmp_path / "p.log").start()
    try:
        port = int(proxy.endpoint.rsplit(":", 1)[1])

        def send(*reqs: tuple[str, str, bytes]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for method, path, body in reqs:
                conn.request(method, path, body=body or None)
                conn.getresponse().read()
            conn.close()

        send(("PUT", "/b/before", b"x"))  # before `begin`: not counted
        peer = SimpleNamespace(cpu_total=1.0, fuse_total=0, counts_fuse=False)
        meter = Meter(proxy)
        meter.begin(peer)
        send(("PUT", "/b/k", b"y" * 1000), ("GET", "/b/k", b""), ("HEAD", "/b/k", b""),
             ("GET", "/b?prefix=", b""))  # fmt: skip
        send(("DELETE", "/b/k", b""))
        peer.cpu_total = 1.5  # the daemon used 0.5 s over the workload
        got = meter.end(peer)
    finally:
        proxy.stop()
        server.shutdown()
    assert got["s3"] == {"PUT": 1, "GET": 1, "HEAD": 1, "LIST": 1, "DELETE": 1}
    assert got["s3_requests"] == 5 and got["s3_connections"] == 2
    assert got["cpu_s"] == 0.5 and got["cpu_ms_per_req"] == 100.0
    assert "fuse_requests" not in got and got["proxy_cpu_s"] >= 0


def test_w4_runs_on_an_unversioned_bucket_and_w4v_on_its_own_versioned_one() -> None:
    """W4 is compared with peers whose buckets are not versioned, so ours is not either: W4v
    rsyncs into a versioned bucket of its own (the figure that keeps that cost visible) and
    W6a's --as-of view reads that bucket's history."""
    from bench.workloads import Result, Runner

    class S3:
        class exceptions:
            BucketAlreadyOwnedByYou = KeyError

        def __init__(self) -> None:
            self.versioned: list[str] = []
            self.created: list[str] = []

        def create_bucket(self, Bucket: str) -> None:
            self.created.append(Bucket)

        def put_bucket_versioning(self, Bucket: str, VersioningConfiguration: dict) -> None:
            assert VersioningConfiguration == {"Status": "Enabled"}
            self.versioned.append(Bucket)

    def runner(name: str) -> tuple[Runner, S3, list[tuple[str, str]]]:
        s3, calls = S3(), []
        peer = SimpleNamespace(name=name, bucket=f"bench-{name}", ctx=SimpleNamespace(s3=s3),
                               proc=None)
        r = Runner(peer, plan=None, log=lambda _m: None)  # type: ignore[arg-type]

        def rsync(bucket: str) -> Result:
            calls.append(("rsync", bucket))
            return Result(seconds=1.0)

        def walk(kind: str) -> Result:
            calls.append((kind, r.versioned_bucket if kind == "W6a" else peer.bucket))
            return Result(seconds=1.0)

        r._rsync_tree = rsync  # type: ignore[method-assign]
        r.w5 = lambda: walk("W5")  # type: ignore[method-assign]
        r.w6 = lambda: walk("W6")  # type: ignore[method-assign]
        r.w6a = lambda: walk("W6a")  # type: ignore[method-assign]
        return r, s3, calls

    r, s3, calls = runner("s3encfs-plain")
    out = r.run_all(["W4", "W5", "W6", "W4v", "W6a"])
    assert calls == [("rsync", "bench-s3encfs-plain"), ("W5", "bench-s3encfs-plain"),
                     ("W6", "bench-s3encfs-plain"), ("rsync", "bench-s3encfs-plain-ver"),
                     ("W6a", "bench-s3encfs-plain-ver")]
    assert s3.versioned == ["bench-s3encfs-plain-ver"]  # never W4's bucket
    assert {k: v.status for k, v in out.items()} == dict.fromkeys(
        ("W4", "W5", "W6", "W4v", "W6a"), "ok")

    r, s3, calls = runner("s3encfs-client")
    assert set(r.run_all(["W6a"])) == {"W6a"}  # W6a alone still builds its history first
    assert calls == [("rsync", "bench-s3encfs-client-ver"), ("W6a", "bench-s3encfs-client-ver")]

    r, s3, calls = runner("rclone")
    out = r.run_all(["W4", "W4v", "W6a"])
    assert calls == [("rsync", "bench-rclone")] and s3.versioned == []
    assert out["W4v"].status == out["W6a"].status == "skipped"


def test_meter_reports_the_servers_cpu_over_the_workload() -> None:
    """With the S3 server's pid, `Meter` reports that process's CPU since `begin` (SeaweedFS
    spends about as much CPU per small PUT as the daemon: W4 is bound by both); the report
    shows it as a table of its own."""
    import os
    import time

    from bench.netpath import Meter

    peer = SimpleNamespace(cpu_total=0.0, fuse_total=0, counts_fuse=False)
    meter = Meter(None, server_pid=os.getpid())  # this process stands in for the server
    meter.begin(peer)
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    got = meter.end(peer)
    assert 0.2 <= got["server_cpu_s"] <= 5
    meter = Meter(None)  # no server process known: no figure, never a made-up 0
    meter.begin(peer)
    assert "server_cpu_s" not in meter.end(peer)
    doc = _doc(0, 2.0)
    doc["results"]["W4"]["s3encfs-plain"]["server_cpu_s"] = 7.31
    text = report.render_sets({"rtt0": doc})
    assert "CPU seconds of the S3 server (SeaweedFS) over the workload:" in text
    assert "7.3" in text
