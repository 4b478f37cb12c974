"""The fault proxy forwards real S3 traffic, counts it exactly and injects each fault kind."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from faultproxy import Fault, FaultProxy, classify, faults

MiB = 1 << 20


@pytest.fixture
def proxy(s3server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3server.endpoint, seed=1234) as p:
        yield p


@pytest.fixture
def client_via(s3server: Any) -> Any:
    """Factory: a boto3 client for ``endpoint`` with the test server's credentials."""
    key, secret = s3server.access_key, s3server.secret_key

    def make(endpoint: str, attempts: int = 1, read_timeout: float = 20.0) -> Any:
        cfg = Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            read_timeout=read_timeout,
            connect_timeout=5,
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=cfg,
        )

    return make


def test_classify_operations() -> None:
    cases = [
        ("GET", "/", False, "ListBuckets"),
        ("GET", "/b?list-type=2&prefix=a%2F", False, "ListObjectsV2"),
        ("GET", "/b", False, "ListObjects"),
        ("GET", "/b?uploads", False, "ListMultipartUploads"),
        ("HEAD", "/b", False, "HeadBucket"),
        ("PUT", "/b", False, "CreateBucket"),
        ("PUT", "/b?encryption", False, "PutBucketEncryption"),
        ("POST", "/b?delete", False, "DeleteObjects"),
        ("GET", "/b/dir/k", False, "GetObject"),
        ("HEAD", "/b/dir/", False, "HeadObject"),
        ("PUT", "/b/k", False, "PutObject"),
        ("PUT", "/b/k", True, "CopyObject"),
        ("PUT", "/b/k?tagging", False, "PutObjectTagging"),
        ("POST", "/b/k?uploads", False, "CreateMultipartUpload"),
        ("PUT", "/b/k?partNumber=1&uploadId=x", False, "UploadPart"),
        ("PUT", "/b/k?partNumber=2&uploadId=x", True, "UploadPartCopy"),
        ("POST", "/b/k?uploadId=x", False, "CompleteMultipartUpload"),
        ("GET", "/b/k?uploadId=x", False, "ListParts"),
        ("DELETE", "/b/k?uploadId=x", False, "AbortMultipartUpload"),
        ("DELETE", "/b/k", False, "DeleteObject"),
    ]
    for method, target, copy, want in cases:
        assert classify(method, target, copy) == want, (method, target)


def test_s3_calls_through_proxy_are_signed_and_counted_exactly(
    proxy: FaultProxy, client_via: Any, bucket: str
) -> None:
    c = client_via(proxy.endpoint)
    body = os.urandom(MiB)
    c.put_object(Bucket=bucket, Key="dir/one", Body=body)
    assert c.get_object(Bucket=bucket, Key="dir/one")["Body"].read() == body
    assert c.head_object(Bucket=bucket, Key="dir/one")["ContentLength"] == MiB
    listed = c.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/one"]
    c.copy_object(Bucket=bucket, Key="dir/two", CopySource={"Bucket": bucket, "Key": "dir/one"})

    part = os.urandom(5 * MiB)
    up = c.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    p1 = c.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=1, Body=part)
    p2 = c.upload_part_copy(
        Bucket=bucket,
        Key="big",
        UploadId=up,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "dir/one"},
    )
    parts = [
        {"PartNumber": 1, "ETag": p1["ETag"]},
        {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
    ]
    c.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=up, MultipartUpload={"Parts": parts}
    )
    got = c.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert got == part + body
    c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dir/two"}]})
    c.delete_object(Bucket=bucket, Key="dir/one")

    st = proxy.stats()
    assert st["requests"] == {
        "PutObject": 1,
        "GetObject": 2,
        "HeadObject": 1,
        "ListObjectsV2": 1,
        "CopyObject": 1,
        "CreateMultipartUpload": 1,
        "UploadPart": 1,
        "UploadPartCopy": 1,
        "CompleteMultipartUpload": 1,
        "DeleteObjects": 1,
        "DeleteObject": 1,
    }
    assert st["total"] == 12
    assert st["status"].get(200, 0) + st["status"].get(204, 0) == 12
    assert MiB <= st["by_op_bytes_up"]["PutObject"] < MiB + 64 * 1024
    assert 5 * MiB <= st["by_op_bytes_up"]["UploadPart"] < 5 * MiB + 64 * 1024
    assert st["by_op_bytes_down"]["GetObject"] == MiB + 6 * MiB
    assert st["by_op_bytes_up"].get("GetObject", 0) == 0
    assert st["bytes_up"] >= 6 * MiB
    assert st["connections"] == 1  # keep-alive towards the client

    hist = proxy.history()
    assert [(r.op, r.key) for r in hist[:3]] == [
        ("PutObject", "dir/one"),
        ("GetObject", "dir/one"),
        ("HeadObject", "dir/one"),
    ]
    assert hist[1].bytes_down == MiB and hist[1].status == 200

    proxy.reset_stats()
    assert proxy.stats()["total"] == 0 and proxy.history() == []


def test_status_fault_is_retried_by_standard_mode(
    proxy: FaultProxy, client_via: Any, bucket: str
) -> None:
    c = client_via(proxy.endpoint, attempts=5)
    rule = Fault("status", op="PutObject", count=2)
    with faults(proxy, rule):
        c.put_object(Bucket=bucket, Key="k", Body=b"x" * 300_000)
    st = proxy.stats()
    assert rule.injected == 2
    assert proxy.count("PutObject") == 3 and proxy.count() == 3
    assert st["status"] == {503: 2, 200: 1}
    assert st["faults"] == {"status": 2}
    assert client_via(proxy.endpoint).get_object(Bucket=bucket, Key="k")["Body"].read() == (
        b"x" * 300_000
    )
    # a body sent without Expect: 100-continue is drained and the connection kept
    with faults(proxy, Fault("status", op="DeleteObjects", count=1, status=500)):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
    assert proxy.count("DeleteObjects") == 2
    assert proxy.stats()["by_op_bytes_up"]["DeleteObjects"] > 0
    assert "Contents" not in c.list_objects_v2(Bucket=bucket)


def test_status_fault_without_retries_surfaces_the_s3_error(
    proxy: FaultProxy, client_via: Any, bucket: str
) -> None:
    c = client_via(proxy.endpoint)
    c.put_object(Bucket=bucket, Key="a/secret", Body=b"1")
    with faults(proxy, Fault("status", key_contains="secret", status=500, code="InternalError")):
        with pytest.raises(ClientError) as err:
            c.get_object(Bucket=bucket, Key="a/secret")
        assert err.value.response["Error"]["Code"] == "InternalError"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        with pytest.raises(ClientError) as err:
            c.head_object(Bucket=bucket, Key="a/secret")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        c.put_object(Bucket=bucket, Key="a/public", Body=b"2")  # key does not match
    assert c.get_object(Bucket=bucket, Key="a/secret")["Body"].read() == b"1"  # cleared


def test_reset_fault_fails_a_call_or_is_retried(
    proxy: FaultProxy, client_via: Any, bucket: str
) -> None:
    client_via(proxy.endpoint).put_object(Bucket=bucket, Key="k", Body=b"data")
    with (
        faults(proxy, Fault("reset", op="GetObject", count=1)),
        pytest.raises((ConnectionClosedError, EndpointConnectionError)),
    ):
        client_via(proxy.endpoint).get_object(Bucket=bucket, Key="k")
    retrying = client_via(proxy.endpoint, attempts=3)
    with faults(proxy, Fault("reset", op="PutObject", count=1)):
        retrying.put_object(Bucket=bucket, Key="k2", Body=b"y" * 2 * MiB)  # Expect: 100-continue
    assert proxy.stats()["requests"]["PutObject"] == 3  # 1 setup + reset + retry
    assert retrying.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"y" * 2 * MiB


def test_truncate_fault_breaks_the_body_and_download_file_recovers(
    proxy: FaultProxy, client_via: Any, bucket: str, tmp_path: Any
) -> None:
    body = os.urandom(3 * MiB)
    c = client_via(proxy.endpoint, attempts=3)
    c.put_object(Bucket=bucket, Key="t", Body=body)
    proxy.reset_stats()
    with faults(proxy, Fault("truncate", op="GetObject", count=1)):
        resp = c.get_object(Bucket=bucket, Key="t")
        assert resp["ContentLength"] == len(body)
        with pytest.raises((IncompleteReadError, ResponseStreamingError)):
            resp["Body"].read()
    assert proxy.stats()["bytes_down"] == len(body) // 2
    with faults(proxy, Fault("truncate", op="GetObject", count=1)) as p:
        c.download_file(bucket, "t", str(tmp_path / "t"))
        assert p.stats()["faults"] == {"truncate": 2}
    assert (tmp_path / "t").read_bytes() == body


def test_timeout_fault_trips_the_read_timeout(
    proxy: FaultProxy, client_via: Any, bucket: str
) -> None:
    client_via(proxy.endpoint).put_object(Bucket=bucket, Key="k", Body=b"v")
    c = client_via(proxy.endpoint, read_timeout=0.5)
    with faults(proxy, Fault("timeout", op="HeadObject", delay=5, count=1)):
        t0 = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            c.head_object(Bucket=bucket, Key="k")
        assert time.monotonic() - t0 < 3
        assert c.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1
    retrying = client_via(proxy.endpoint, attempts=3, read_timeout=0.5)
    with faults(proxy, Fault("timeout", op="GetObject", delay=5, count=1)):
        assert retrying.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


@pytest.mark.serial  # asserts an upper bound on wall time (< 5 s for 0.5 s of pacing)
def test_slow_fault_paces_the_response(proxy: FaultProxy, client_via: Any, bucket: str) -> None:
    c = client_via(proxy.endpoint)
    c.put_object(Bucket=bucket, Key="s", Body=b"z" * 200_000)
    with faults(proxy, Fault("slow", op="GetObject", bytes_per_s=400_000)):
        t0 = time.monotonic()
        assert c.get_object(Bucket=bucket, Key="s")["Body"].read() == b"z" * 200_000
        slow = time.monotonic() - t0
    t0 = time.monotonic()
    c.get_object(Bucket=bucket, Key="s")["Body"].read()
    fast = time.monotonic() - t0
    assert 0.45 <= slow < 5.0  # 200 kB at 400 kB/s
    assert fast < slow
    assert proxy.stats()["faults"] == {"slow": 1}


def test_rate_injects_a_fraction(proxy: FaultProxy, client_via: Any, bucket: str) -> None:
    c = client_via(proxy.endpoint)
    c.put_object(Bucket=bucket, Key="r", Body=b"1")
    rule = Fault("status", op="HeadObject", rate=0.5, status=403, code="AccessDenied")
    failed = 0
    with faults(proxy, rule):
        for _ in range(40):
            try:
                c.head_object(Bucket=bucket, Key="r")
            except ClientError:
                failed += 1
    assert failed == rule.injected
    assert 8 <= failed <= 32


def test_stop_is_prompt_while_a_request_is_held(
    s3server: Any, client_via: Any, bucket: str
) -> None:
    p = FaultProxy(s3server.endpoint)
    p.start()
    p.add_fault(Fault("timeout", delay=60))
    c = client_via(p.endpoint, read_timeout=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.head_object(Bucket=bucket, Key="nope")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    p.stop()
    t.join(10)
    assert time.monotonic() - t0 < 3
    assert not t.is_alive() and errors


def _rate(n: int, seconds: float) -> float:
    return n / seconds / 1e6


def test_throughput_proxy_vs_direct(
    proxy: FaultProxy, client_via: Any, s3server: Any, bucket: str, tmp_path: Any
) -> None:
    """MB/s of one PUT and one GET (S3ENCFS_BENCH_MIB, default 32) through the proxy vs direct."""
    size = int(os.environ.get("S3ENCFS_BENCH_MIB", "32")) * MiB
    src = tmp_path / "src"
    src.write_bytes(os.urandom(size))
    results = {}
    for name, endpoint in (("direct", s3server.endpoint), ("proxy", proxy.endpoint)):
        c = client_via(endpoint)
        t0 = time.monotonic()
        c.upload_file(str(src), bucket, f"bench-{name}")
        put = time.monotonic() - t0
        t0 = time.monotonic()
        c.download_file(bucket, f"bench-{name}", str(tmp_path / f"dst-{name}"))
        get = time.monotonic() - t0
        results[name] = (_rate(size, put), _rate(size, get))
        assert (tmp_path / f"dst-{name}").read_bytes() == src.read_bytes()
        (tmp_path / f"dst-{name}").unlink()
    print(
        f"\n{size // MiB} MiB  PUT MB/s direct {results['direct'][0]:.0f} "
        f"proxy {results['proxy'][0]:.0f}  GET MB/s direct {results['direct'][1]:.0f} "
        f"proxy {results['proxy'][1]:.0f}"
    )
    assert proxy.stats()["bytes_up"] >= size
    assert proxy.stats()["by_op_bytes_down"]["GetObject"] == size
    # no speed floor here: under CI load the proxy's GET measured 43 MB/s (direct 424) on a run
    # whose code was fine, so a floor fails whole CI runs for the machine's load; the MB/s figures
    # printed above are for reading, and the proxy's speed is the benchmark's job


class _Upstream(BaseHTTPRequestHandler):
    """Odd-but-legal HTTP/1.1 framings that SeaweedFS does not produce."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        elif self.path == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 100_000)
            self.close_connection = True
        else:  # Content-Length, then hang up without saying so (an idle-timeout upstream)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = True

    def do_PUT(self) -> None:
        assert self.headers["Transfer-Encoding"] == "chunked"
        data = b""
        while size := int(self.rfile.readline().strip(), 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_http_framings_and_upstream_reconnect() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with FaultProxy(f"http://127.0.0.1:{server.server_address[1]}") as p:
            host, port = p.endpoint.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/chunked")
            assert conn.getresponse().read() == b"hello chunked world"
            for _ in range(3):  # upstream closes after each answer; the proxy reconnects
                conn.request("GET", "/b/plain")
                assert conn.getresponse().read() == b"ok"
                # the upstream hangs up without "Connection: close": a request that reaches the
                # proxy before that FIN does is lost (inherent to HTTP keep-alive; clients such
                # as botocore retry it). Give the FIN time to arrive: a CI run under load lost
                # the PUT below otherwise.
                time.sleep(0.05)
            conn.request("PUT", "/b/k", body=iter([b"abc", b"defg"]), encode_chunked=True)
            assert conn.getresponse().read() == b"abcdefg"
            conn.request("GET", "/until-close")
            resp = conn.getresponse()
            assert resp.read() == b"x" * 100_000 and resp.will_close
            conn.close()
            st = p.stats()
            assert st["total"] == 6 and st["connections"] == 1
            assert st["requests"] == {"GetObject": 3, "ListObjects": 2, "PutObject": 1}
            assert st["by_op_bytes_down"]["GetObject"] == 6
            assert st["by_op_bytes_down"]["ListObjects"] > 100_000 + len(b"hello chunked world")
            assert st["by_op_bytes_up"]["PutObject"] > 7  # chunk framing counted too
    finally:
        server.shutdown()
        server.server_close()
