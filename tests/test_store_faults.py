"""The store through the fault proxy, under each S3 client library: its request counters agree
with what the proxy saw, and 5xx, resets and held (timed-out) requests are retried until the
bytes land — the same for boto3 and awscrt."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from faultproxy import Fault, FaultProxy

from s3encfs.server import REGION
from s3encfs.store import ObjectStore, StoreError


@pytest.fixture
def proxy(s3server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3server.endpoint, seed=99) as p:
        yield p


def _store(s3server: Any, proxy: FaultProxy, bucket: str, client: str,
           monkeypatch: pytest.MonkeyPatch, **kw: Any) -> ObjectStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return ObjectStore(bucket, endpoint_url=proxy.endpoint, region=REGION, s3_client=client,
                       **kw)


def test_store_counters_match_the_wire(s3server, proxy, bucket, s3_client, monkeypatch):
    st = _store(s3server, proxy, bucket, s3_client, monkeypatch)
    body = secrets.token_bytes(50_000)
    etag = st.put("a/x", body, {"mode": "1"})
    st.head("a/x")
    assert st.get_range("a/x", 10, 1000, if_match=etag) == body[10:1000]
    st.copy("a/x", "a/y")
    uid = st.create_multipart("a/mp", {})
    p1 = st.upload_part("a/mp", uid, 1, body)
    st.complete_multipart("a/mp", uid, [(1, p1)])
    st.delete_many(["a/x", "a/y"])
    st.delete("a/mp")
    wire = proxy.stats()["requests"]
    ours = {op: n for op, n in st.stats.as_dict()["requests"].items() if op != "GetObjectBody"}
    assert ours == wire, (ours, wire)


def test_5xx_and_resets_are_retried(s3server, proxy, bucket, s3_client, monkeypatch):
    st = _store(s3server, proxy, bucket, s3_client, monkeypatch)
    body = secrets.token_bytes(20_000)
    proxy.add_fault(Fault(kind="status", op="PutObject", count=2, status=503, code="SlowDown"))
    proxy.add_fault(Fault(kind="reset", op="GetObject", count=1))
    etag = st.put("r/x", body, {})
    assert st.get("r/x", if_match=etag)[0] == body
    faults = proxy.stats()["faults"]
    assert faults.get("status") == 2 and faults.get("reset") == 1, faults
    assert proxy.count("PutObject") == 3


def test_permanent_503_gives_up_with_the_s3_error(s3server, proxy, bucket, s3_client,
                                                  monkeypatch):
    st = _store(s3server, proxy, bucket, s3_client, monkeypatch, max_attempts=2)
    proxy.add_fault(Fault(kind="status", op="PutObject", status=503, code="SlowDown"))
    with pytest.raises(StoreError) as ei:
        st.put("p/x", b"data", {})
    assert ei.value.status == 503 and ei.value.code == "SlowDown"
    assert proxy.count("PutObject") == 3  # botocore's max_attempts counts retries: 1 + 2


def test_held_requests_time_out_and_are_retried(s3server, proxy, bucket, s3_client,
                                                monkeypatch):
    st = _store(s3server, proxy, bucket, s3_client, monkeypatch, read_timeout=1,
                connect_timeout=2)
    body = secrets.token_bytes(10_000)
    proxy.add_fault(Fault(kind="timeout", op="PutObject", count=1, delay=20))
    proxy.add_fault(Fault(kind="timeout", op="GetObject", count=1, delay=20))
    st.put("t/x", body, {})
    assert st.get("t/x")[0] == body
    assert proxy.stats()["faults"].get("timeout") == 2


@pytest.mark.parametrize("ranged", [False, True])
def test_a_cut_body_is_an_error_never_a_short_result(s3server, proxy, bucket, s3_client,
                                                     monkeypatch, ranged):
    """docs/INTERNALS.md, "The CRT data plane": a body shorter than its Content-Length is an
    error, never a short result (every GET cut in half, retries and all)."""
    st = _store(s3server, proxy, bucket, s3_client, monkeypatch, max_attempts=1)
    body = secrets.token_bytes(300_000)
    etag = st.put("c/x", body, {})
    proxy.add_fault(Fault(kind="truncate", op="GetObject"))
    with pytest.raises(StoreError):
        if ranged:
            st.get_range("c/x", 1000, 250_000, if_match=etag)
        else:
            st.get("c/x", if_match=etag)
    assert proxy.stats()["faults"].get("truncate", 0) >= 1
