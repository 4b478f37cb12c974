"""S3EC cold reads fill the block cache from one verified pass (cache/verified.py), against
SeaweedFS: every block of the object lands in the cache, none is visible before the whole
object's GCM tag checked, and a tampered object leaves nothing behind and fails every reader."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from test_s3ec_format import KEK, ref_encrypt

from s3encfs.cache.verified import VerifiedBlockCache
from s3encfs.codec import IntegrityError
from s3encfs.crypto.s3ec_codec import S3ECCodec
from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store.s3ec import S3ECStore

MiB = 1024 * 1024
SIZE = 19 * MiB + 1234  # 20 cache blocks, three 8 MiB GETs


@pytest.fixture
def st(s3server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3ECStore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("k", KEK, {})]),
                     spool_dir=str(tmp_path / "spool"), endpoint_url=s3server.endpoint,
                     region="us-east-1", s3_client="crt")


def _put(s3: Any, bucket: str, key: str, plain: bytes, *, flip: bool = False) -> str:
    meta, body = ref_encrypt(3, "AES/GCM", plain)
    if flip:
        body = body[:-5] + bytes([body[-5] ^ 1]) + body[-4:]  # a tag byte
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
    return str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def _files(cache_dir: Path) -> list[str]:
    return [n for _r, _d, names in os.walk(cache_dir / "blocks") for n in names]


def _gets(store: S3ECStore) -> int:
    return int(store.stats.as_dict()["requests"].get("GetObject", 0))


def test_a_cold_read_fills_every_block_once_verified(st: S3ECStore, s3: Any, bucket: str,
                                                     tmp_path: Path) -> None:
    plain = os.urandom(SIZE)
    etag = _put(s3, bucket, "big", plain)
    core = FsCore(st, S3ECCodec(), "", FsConfig(cache_dir=str(tmp_path / "c"), upload_delay=0))
    blocks = core.blocks
    assert isinstance(blocks, VerifiedBlockCache)
    nblocks = -(-SIZE // blocks.block_bytes)
    streamed: list[int] = []
    real = st.read_verified

    def watched(key: str, tag: str, write: Any) -> int:
        def write_and_look(data: memoryview) -> None:
            write(data)
            streamed.append(len(data))
            for b in range(nblocks):  # written or not: nothing is readable before the tag
                assert blocks.where(key, tag, b) == "mem"  # in flight, not on disk
                with pytest.raises(LookupError):
                    blocks.get_block(key, tag, SIZE, b, local_only=True)
        return real(key, tag, write_and_look)

    st.read_verified = watched  # type: ignore[method-assign,assignment]
    got = blocks.read_part("big", etag, SIZE, 3, 0, 4096, run=4)
    assert got == plain[3 * MiB:3 * MiB + 4096]
    assert sum(streamed) == SIZE
    assert _gets(st) == 3  # one pass of 8 MiB ranged GETs
    for b in range(nblocks):  # every block is local now, the cache's own copy
        assert blocks.where("big", etag, b) in ("mem", "disk")
        assert blocks.get_block("big", etag, SIZE, b, local_only=True) == \
            plain[b * MiB:(b + 1) * MiB]
    assert len(_files(tmp_path / "c")) == nblocks and not any(
        n.endswith(".tmp") for n in _files(tmp_path / "c"))
    assert st.views.get("big", etag) is None  # no second copy in a view spool
    assert _gets(st) == 3
    core.close()


def test_a_tampered_object_fills_nothing_and_fails_every_reader(
        st: S3ECStore, s3: Any, bucket: str, tmp_path: Path) -> None:
    plain = os.urandom(SIZE)
    etag = _put(s3, bucket, "bad", plain, flip=True)
    blocks = VerifiedBlockCache(str(tmp_path / "c"), st, MiB, 1 << 30)
    started = threading.Event()
    real = st.read_verified

    def slow(key: str, tag: str, write: Any) -> int:
        started.set()
        return real(key, tag, write)

    st.read_verified = slow  # type: ignore[method-assign,assignment]
    errors: dict[int, BaseException] = {}

    def read(b: int) -> None:
        try:
            blocks.get_block("bad", etag, SIZE, b, run=4)
        except BaseException as exc:
            errors[b] = exc

    first = threading.Thread(target=read, args=(0,))
    first.start()
    started.wait(10)
    others = [threading.Thread(target=read, args=(b,)) for b in (7, 19)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(30)
    assert sorted(errors) == [0, 7, 19]
    assert all(isinstance(e, IntegrityError) for e in errors.values()), errors
    assert _files(tmp_path / "c") == []  # no block, no temporary file
    assert all(blocks.where("bad", etag, b) is None for b in range(20))
    assert st.s3ec_stats["verify_failures"] >= 1 and st.s3ec_stats["verified_objects"] == 0
    with pytest.raises(IntegrityError):  # tried again, refused again
        blocks.get_block("bad", etag, SIZE, 5, run=4)


def test_a_file_this_mount_wrote_fills_from_its_verified_copy(st: S3ECStore, tmp_path: Path
                                                             ) -> None:
    plain = os.urandom(3 * MiB + 5)
    etag = st.put("mine", plain, {"mode": "33188"})  # verified by construction: a view
    blocks = VerifiedBlockCache(str(tmp_path / "c"), st, MiB, 1 << 30)
    gets = _gets(st)
    assert blocks.get_block("mine", etag, len(plain), 2, run=4) == plain[2 * MiB:3 * MiB]
    assert blocks.get_block("mine", etag, len(plain), 0, local_only=True) == plain[:MiB]
    assert _gets(st) == gets  # no download
