"""S3EC small PUTs awaited on trio (`S3ECStore.aput`, store/s3ec.py), against SeaweedFS: the
same objects as the blocking `put` (an independent decoder reads them), no worker thread, and a
view of each small body kept in memory (`sealed_spool.BodyView`), not in a spool file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import trio
from inprocess import run_core, write_file
from test_s3ec_format import KEK, ref_decrypt

from s3encfs.crypto.s3ec_codec import S3ECCodec
from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store import sealed_spool
from s3encfs.store.s3ec import S3ECStore


def _store(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, spool: Path
           ) -> S3ECStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("k", KEK, {})]), spool_dir=str(spool),
                     endpoint_url=s3server.endpoint, region="us-east-1", s3_client="crt")


def _no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a worker thread was used")

    monkeypatch.setattr(trio.to_thread, "run_sync", refuse)


def _no_spool_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, directory: str) -> None:
        raise AssertionError("a spool file was made")

    monkeypatch.setattr(sealed_spool.Spool, "__init__", refuse)


def test_aput_writes_s3ec_objects_with_no_thread_and_no_spool_file(
        s3server: Any, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    st = _store(s3server, bucket, monkeypatch, tmp_path / "spool")
    assert st.stats.client == "crt"  # (S3EC's own stats once said boto3: no fast paths)
    assert st.awaitable_puts
    bodies = {f"a/{i}": secrets.token_bytes(n) for i, n in
              enumerate([0, 1, 15, 16, 17, 4095, 14_000, sealed_spool.MEM_VIEW])}
    _no_threads(monkeypatch)
    _no_spool_files(monkeypatch)

    async def main() -> dict[str, str]:
        etags: dict[str, str] = {}

        async def one(key: str) -> None:
            etags[key] = await st.aput(key, bodies[key], {"s3encfs-mode": "33188"},
                                       if_none_match=True)

        async with trio.open_nursery() as n:
            for key in bodies:
                n.start_soon(one, key)
        etags["d/"] = await st.aput("d/", b"", {"s3encfs-mode": "16877"})
        return etags

    etags = trio.run(main)
    monkeypatch.undo()
    for key, body in bodies.items():
        raw = s3.get_object(Bucket=bucket, Key=key)
        meta = raw["Metadata"]
        assert ref_decrypt(meta, raw["Body"].read()) == body  # an independent decoder
        assert meta["x-amz-c"] and meta["x-amz-3"]  # V3 (key-committing), the default
        view = st.views.get(key, etags[key])
        assert isinstance(view, sealed_spool.BodyView) and view.read(0, len(body) + 9) == body
        out = bytearray()
        assert st.read_verified(key, etags[key], out.extend) == len(body)
        assert out == body
    assert "GetObject" not in st.stats.as_dict()["requests"]  # views: verified by construction
    assert s3.head_object(Bucket=bucket, Key="d/")["Metadata"] == {}  # markers stay plain
    fresh = _store(s3server, bucket, monkeypatch, tmp_path / "spool2")
    for key, body in bodies.items():  # a mount with no views reads them back, tag checked
        assert fresh.get(key)[0] == body
    big = os.urandom(sealed_spool.MEM_VIEW + 1)  # past MEM_VIEW: a spool file, as before
    etag = st.put("big", big, {})
    view = st.views.get("big", etag)
    assert view is not None and not isinstance(view, sealed_spool.BodyView)
    assert view.read(0, len(big)) == big


def test_a_small_file_through_the_filesystem_is_an_awaited_put(
        s3server: Any, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    st = _store(s3server, bucket, monkeypatch, tmp_path / "spool")
    blocking: list[str] = []
    real_put = S3ECStore.put

    def counted(self: S3ECStore, key: str, *a: Any, **k: Any) -> str:
        blocking.append(key)
        return real_put(self, key, *a, **k)

    monkeypatch.setattr(S3ECStore, "put", counted)
    core = FsCore(st, S3ECCodec(), "", FsConfig(cache_dir=str(tmp_path / "c"), upload_delay=0))
    data = os.urandom(20_000)
    run_core(core, lambda c: write_file(c, "small", data))
    assert blocking == []  # the PUT was awaited (aput), not a worker thread's blocking put
    raw = s3.get_object(Bucket=bucket, Key="small")
    assert ref_decrypt(raw["Metadata"], raw["Body"].read()) == data
