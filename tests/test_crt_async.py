"""`ObjectStore.aput`: a PUT on the CRT awaited from trio through the CRT's completion callback,
with no worker thread (store/crt_async.py). Against SeaweedFS through the fault proxy: the same
bytes, metadata, conditions, retries, read timeouts and counters as the blocking `put`."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from faultproxy import Fault, FaultProxy

from s3encfs.server import REGION
from s3encfs.store import ObjectStore, errors


@pytest.fixture
def proxy(s3server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3server.endpoint, seed=7) as p:
        yield p


def _store(s3server: Any, proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch,
           **kw: Any) -> ObjectStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return ObjectStore(bucket, endpoint_url=proxy.endpoint, region=REGION, s3_client="crt", **kw)


def _no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a worker thread was used")

    monkeypatch.setattr(trio.to_thread, "run_sync", refuse)


def test_aput_lands_the_bytes_with_no_worker_thread(s3server, proxy, bucket, s3, monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch)
    assert st.awaitable_puts
    bodies = {f"a/{i}": secrets.token_bytes(100 + i * 997) for i in range(40)}
    _no_threads(monkeypatch)

    async def main() -> dict[str, str]:
        etags: dict[str, str] = {}

        async def one(key: str) -> None:
            etags[key] = await st.aput(key, bodies[key], {"mode": "33188"}, if_none_match=True)

        async with trio.open_nursery() as n:  # all 40 in flight at once
            for key in bodies:
                n.start_soon(one, key)
        return etags

    etags = trio.run(main)
    for key, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body
        assert got["Metadata"]["mode"] == "33188"
        assert got["ETag"].strip('"') == etags[key]
    assert st.stats.as_dict()["requests"] == {"PutObject": 40} == proxy.stats()["requests"]


def test_aput_conditions_and_errors_are_the_stores(s3server, proxy, bucket, monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch, max_attempts=2)
    etag = st.put("c/x", b"first", {})

    async def main() -> None:
        with pytest.raises(errors.PreconditionFailed):  # If-None-Match: * on an existing key
            await st.aput("c/x", b"second", {}, if_none_match=True)
        with pytest.raises(errors.PreconditionFailed):  # If-Match on a stale ETag
            await st.aput("c/x", b"second", {}, if_match="0" * 32)
        assert await st.aput("c/x", b"third", {}, if_match=etag)
        proxy.add_fault(Fault(kind="status", op="PutObject", count=5, status=503))
        with pytest.raises(errors.StoreError) as ei:  # retried 2 times, then the S3 error
            await st.aput("c/y", b"never", {})
        assert ei.value.status == 503

    trio.run(main)
    assert st.get("c/x")[0] == b"third"
    assert proxy.count("PutObject") == 1 + 3 + 3


def test_aput_held_request_times_out_and_is_retried(s3server, proxy, bucket, monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch, read_timeout=1, connect_timeout=2)
    body = secrets.token_bytes(10_000)
    proxy.add_fault(Fault(kind="timeout", op="PutObject", count=1, delay=20))

    async def main() -> float:
        start = trio.current_time()
        await st.aput("t/x", body, {})
        return trio.current_time() - start

    took = trio.run(main)
    assert st.get("t/x")[0] == body
    assert proxy.stats()["faults"].get("timeout") == 1
    assert took < 15  # the held request was given up after ~1 s idle, not after 20 s


def test_aput_sees_a_sent_request_through_when_its_caller_is_cancelled(s3server, proxy, bucket,
                                                                       monkeypatch):
    """Like a ``to_thread`` call, a PUT that was sent is waited for even when the caller's
    scope is cancelled meanwhile: nothing lands in S3 after its caller gave up on it."""
    st = _store(s3server, proxy, bucket, monkeypatch)
    body = secrets.token_bytes(5_000)
    proxy.add_fault(Fault(kind="hold", op="PutObject", count=1, delay=1.5))

    async def main() -> tuple[list[str], float]:
        got: list[str] = []
        start = trio.current_time()
        with trio.move_on_after(0.2):
            got.append(await st.aput("s/x", body, {}))
        return got, trio.current_time() - start

    got, took = trio.run(main)
    assert got and took >= 1.4  # the cancel at 0.2 s waited for S3's answer (held 1.5 s)
    assert st.get("s/x")[0] == body
    assert proxy.count("PutObject") == 1
