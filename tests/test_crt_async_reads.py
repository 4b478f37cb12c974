"""`ObjectStore.ahead`/`aget_range`: reads on the CRT awaited from trio with no worker thread
(store/areads.py). Against SeaweedFS through the fault proxy: the same bytes, SSE-C key
candidates and verification, retries, read timeouts, counters, error mapping and circuit
breaker as the blocking `head`/`get_range`; and the filesystem's read path uses them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from faultproxy import Fault, FaultProxy

from s3encfs.server import REGION
from s3encfs.store import ObjectStore, errors
from s3encfs.store.sse import SseCPolicy


@pytest.fixture
def proxy(s3server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3server.endpoint, seed=11) as p:
        yield p


from test_crt_async import _no_threads, _store  # noqa: E402  (the same crt store and guard)


def test_awaited_reads_match_the_blocking_ones_with_no_worker_thread(
        s3server, proxy, bucket, monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch)
    assert st.awaitable_reads
    small = secrets.token_bytes(100_000)
    big = secrets.token_bytes(9 * 1024 * 1024 + 17)  # >= 4 MiB ranges: aws-c-s3 splits them
    e_small = st.put("r/small", small, {"mode": "33188"})
    e_big = st.put("r/big", big, {})
    ranges = [(0, 1), (5, 70_000), (99_999, 100_000), (0, 100_000)]
    _no_threads(monkeypatch)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}

        async def one(name: str, key: str, a: int, b: int, etag: str) -> None:
            out[name] = await st.aget_range(key, a, b, if_match=etag)

        async with trio.open_nursery() as n:
            for a, b in ranges:
                n.start_soon(one, f"s{a}-{b}", "r/small", a, b, e_small)
        out["past-end"] = await st.aget_range("r/small", 200_000, 300_000)
        out["empty"] = await st.aget_range("r/small", 7, 7)
        out["head"] = await st.ahead("r/small")
        out["whole"] = await st.aget("r/small")
        with pytest.raises(errors.NotFound):
            await st.aget("r/none")
        with pytest.raises(errors.PreconditionFailed):
            await st.aget_range("r/small", 0, 10, if_match="0" * 32)
        with pytest.raises(errors.NotFound):
            await st.aget_range("r/none", 0, 10)
        with pytest.raises(errors.NotFound):
            await st.ahead("r/none")
        return out

    out = trio.run(main)
    monkeypatch.undo()
    for a, b in ranges:
        assert out[f"s{a}-{b}"] == small[a:b] == st.get_range("r/small", a, b)
    assert out["past-end"] == b"" and out["empty"] == b""
    head = st.head("r/small")
    assert out["head"] == head and head.metadata == {"mode": "33188"} and head.etag == e_small
    data, info = out["whole"]
    assert (data, info) == st.get("r/small") and data == small and info.etag == e_small
    ours = {op: n for op, n in st.stats.as_dict()["requests"].items() if op != "GetObjectBody"}
    assert ours == proxy.stats()["requests"], (ours, proxy.stats()["requests"])
    # a long range goes out as aws-c-s3's parallel part GETs (the wire count differs)
    _no_threads(monkeypatch)
    got = trio.run(lambda: st.aget_range("r/big", 1000, len(big) - 5, if_match=e_big))
    assert got == big[1000:len(big) - 5]


def test_awaited_reads_retry_5xx_resets_and_held_requests(s3server, proxy, bucket,
                                                          monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch, read_timeout=1, connect_timeout=2)
    body = secrets.token_bytes(30_000)
    st.put("f/x", body, {})
    proxy.add_fault(Fault(kind="status", op="GetObject", count=2, status=503, code="SlowDown"))
    proxy.add_fault(Fault(kind="reset", op="HeadObject", count=1))

    async def main() -> float:
        assert await st.aget_range("f/x", 0, 30_000) == body
        assert (await st.ahead("f/x")).size == 30_000
        proxy.clear_faults()
        proxy.add_fault(Fault(kind="timeout", op="GetObject", count=1, delay=20))
        start = trio.current_time()
        assert await st.aget_range("f/x", 100, 200) == body[100:200]
        return trio.current_time() - start

    took = trio.run(main)
    faults = proxy.stats()["faults"]
    assert faults.get("status") == 2 and faults.get("reset") == 1 and faults.get("timeout") == 1
    assert took < 15  # the held GET was given up after ~1 s idle, not after 20 s


def test_awaited_read_gives_up_with_the_s3_error_and_opens_the_breaker(
        s3server, proxy, bucket, monkeypatch):
    st = _store(s3server, proxy, bucket, monkeypatch, max_attempts=1)
    st.put("b/x", b"data", {})
    proxy.add_fault(Fault(kind="status", op="GetObject", status=503, code="SlowDown"))

    async def fail_503() -> None:
        with pytest.raises(errors.StoreError) as ei:
            await st.aget_range("b/x", 0, 4)
        assert ei.value.status == 503 and ei.value.code == "SlowDown"

    trio.run(fail_503)
    assert proxy.count("GetObject") == 2  # 1 + 1 retry
    assert st.breaker.state()["state"] == "closed"  # a 5xx neither opens nor closes
    proxy.clear_faults()
    proxy.add_fault(Fault(kind="reset"))  # every request, the breaker's HeadBucket probe too

    async def fail_down() -> None:
        with pytest.raises(errors.EndpointUnreachable):
            await st.aget_range("b/x", 0, 4)
        sent = proxy.count("GetObject")
        with pytest.raises(errors.EndpointUnreachable) as ei:  # open: refused before sending
            await st.aget_range("b/x", 0, 4)
        assert ei.value.code == "CircuitOpen" and proxy.count("GetObject") == sent

    trio.run(fail_down)
    assert st.stats.unreachable_since is not None


def test_awaited_reads_try_each_ssec_key_and_refuse_an_unencrypted_object(
        s3server, proxy, bucket, s3, monkeypatch):
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    writer = _store(s3server, proxy, bucket, monkeypatch, sse=SseCPolicy([("old", old)]))
    body = secrets.token_bytes(5000)
    writer.put("c/x", body, {})
    s3.put_object(Bucket=bucket, Key="c/planted", Body=b"not encrypted")
    reader = _store(s3server, proxy, bucket, monkeypatch,
                    sse=SseCPolicy([("new", new), ("old", old)]))
    assert reader.awaitable_reads

    async def main() -> None:
        assert await reader.aget_range("c/x", 10, 20) == body[10:20]  # "new" refused, "old" opens
        gets = proxy.count("GetObject")
        assert await reader.aget_range("c/x", 0, 5) == body[:5]
        assert proxy.count("GetObject") == gets + 1  # the key that opened it is tried first
        assert (await reader.ahead("c/x")).size == 5000
        assert (await reader.aget("c/x"))[0] == body
        for call in (reader.aget_range("c/planted", 0, 5), reader.ahead("c/planted"),
                     reader.aget("c/planted")):
            with pytest.raises(errors.StoreError):
                await call

    trio.run(main)
    with pytest.raises(errors.StoreError):  # the blocking path agrees
        reader.get_range("c/planted", 0, 5)


def test_boto3_and_transforming_stores_keep_the_threaded_reads(s3server, proxy, bucket,
                                                                 monkeypatch):
    assert _store(s3server, proxy, bucket, monkeypatch).awaitable_reads
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    boto = ObjectStore(bucket, endpoint_url=proxy.endpoint, region=REGION, s3_client="boto3")
    assert not boto.awaitable_reads

    class Transforming(ObjectStore):
        def get_range(self, *a: Any, **k: Any) -> bytes:
            return b""

    t = Transforming(bucket, endpoint_url=proxy.endpoint, region=REGION, s3_client="crt")
    assert not t.awaitable_reads and not t.awaitable_gets

    class TransformingGets(ObjectStore):
        def get(self, *a: Any, **k: Any) -> Any:
            return b"", None

    g = TransformingGets(bucket, endpoint_url=proxy.endpoint, region=REGION, s3_client="crt")
    assert g.awaitable_reads and not g.awaitable_gets
    assert not boto.awaitable_gets


# -- the filesystem's read path ------------------------------------------------------------------
def _core(bucket: str, s3server: Any, monkeypatch: pytest.MonkeyPatch, cache: Any,
          mode: str) -> Any:
    from s3encfs.codec import IdentityCodec
    from s3encfs.crypto.client_codec import ClientCodec
    from s3encfs.fs.core import FsConfig, FsCore

    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=s3server.endpoint, region=REGION, s3_client="crt")
    codec = IdentityCodec() if mode == "plain" else \
        ClientCodec({"k1": bytes(range(32))}, "k1")
    return FsCore(store, codec, "", FsConfig(cache_dir=str(cache), upload_delay=0))


@pytest.mark.parametrize("mode", ["plain", "client"])
def test_cold_reads_fetch_blocks_awaited_on_the_crt(bucket, s3server, monkeypatch, tmp_path,
                                                    mode):
    """A cold sequential read (with its read-ahead), random reads and the lookup's HEAD of a
    provisional entry go through the awaited calls: the threaded fetch (`get_block`,
    `get_range`, `head`) is never used, and every byte read is the byte written."""
    data = secrets.token_bytes(40 * 1024 * 1024 + 4321)
    writer = _core(bucket, s3server, monkeypatch, tmp_path / "w", mode)

    async def write() -> None:
        async with trio.open_nursery() as nursery:
            writer.start(nursery)
            node = await writer.create_file(writer.root, "big", 0o100644, 0, 0)
            await writer.open(node, True)
            for off in range(0, len(data), 1 << 20):
                await writer.write(node, off, data[off:off + (1 << 20)])
            await writer.release(node, True)
            with trio.fail_after(120):
                await writer.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(write)
    writer.close()
    core = _core(bucket, s3server, monkeypatch, tmp_path / "r", mode)
    assert core.store.awaitable_reads

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a threaded S3 read was used")

    local = core.blocks.get_block

    def local_only(*a: Any, local_only: bool = False, **k: Any) -> Any:
        if not local_only:
            raise AssertionError("a threaded block fetch was used")
        return local(*a, local_only=True, **k)

    monkeypatch.setattr(core.blocks, "get_block", local_only)
    for name in ("get_range", "head"):
        monkeypatch.setattr(core.store, name, refuse)

    async def read() -> tuple[bytes, list[tuple[int, bytes]]]:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.lookup(core.root, "big")
            assert node is not None and node.attrs.size == len(data)
            out = []
            for off in range(0, len(data), 128 * 1024):
                out.append(await core.read(node, off, 128 * 1024))
            rnd = []
            for off in (5, 17 * 1024 * 1024 + 3, len(data) - 100, 33 * 1024 * 1024 - 2):
                core.blocks._mem.clear()  # memory tier gone: disk tier or S3 again
                rnd.append((off, await core.read(node, off, 4096)))
            nursery.cancel_scope.cancel()
        return b"".join(out), rnd

    got, rnd = trio.run(read)
    core.close()
    assert got == data
    for off, chunk in rnd:
        assert chunk == data[off:off + 4096]
    gets = core.store.stats.as_dict()["requests"]["GetObject"]
    assert gets <= 40 // 4 + 4, gets  # read-ahead: runs of blocks per GET, not one per block
