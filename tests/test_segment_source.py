"""Unit tests for the clean-file read path: SegmentSource.base_range over the block cache.

The object bytes come from a dict-backed stand-in for ObjectStore.get_range (pure block math and
decryption are under test here; the real store is exercised by the mount tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3encfs.cache.blocks import BlockCache
from s3encfs.cache.staging import DirtySet
from s3encfs.codec import IdentityCodec
from s3encfs.crypto.client_codec import ClientCodec
from s3encfs.fs.nodes import ObjectRef
from s3encfs.fs.uploader import SegmentSource

SEG = 64
SEGS_PER_BLOCK = 4


class BytesStore:
    """get_range over one in-memory object; counts requests."""

    def __init__(self, body: bytes):
        self.body = body
        self.gets = 0

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        self.gets += 1
        return self.body[start:end]


def make_codec(kind: str) -> IdentityCodec | ClientCodec:
    if kind == "plain":
        return IdentityCodec(segment_size=SEG)
    return ClientCodec({"k1": bytes(range(32))}, "k1", segment_size=SEG)  # type: ignore[arg-type]


def build(kind: str, plain: bytes, cache_dir: Path) -> tuple[SegmentSource, BytesStore, BlockCache]:
    codec = make_codec(kind)
    lay = codec.geometry
    cipher, meta = codec.new_object()
    n = lay.segment_count(len(plain))
    body = b"".join(
        cipher.encrypt_segment(i, plain[i * SEG:(i + 1) * SEG], i == n - 1) for i in range(n))
    assert len(body) == lay.object_size(len(plain))
    store = BytesStore(body)
    blocks = BlockCache(str(cache_dir), store, SEGS_PER_BLOCK * lay.stride, 1 << 30,  # type: ignore[arg-type]
                        mem_bytes=2 * SEGS_PER_BLOCK * lay.stride)
    obj = ObjectRef("k", "etag1", len(body), len(plain), meta)
    src = SegmentSource(lay, blocks, SEGS_PER_BLOCK, obj, codec.open_object(meta), n, DirtySet(),
                        None)
    return src, store, blocks


@pytest.mark.parametrize("kind", ["plain", "client"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_base_range_matches_plaintext(kind: str, tmp_path: Path, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, SEG * SEGS_PER_BLOCK * 5 + 7))
    plain = os.urandom(size)
    src, _store, _blocks = build(kind, plain, tmp_path / os.urandom(4).hex())
    for _ in range(4):
        off = data.draw(st.integers(0, size - 1))
        end = data.draw(st.integers(off + 1, size))
        run = data.draw(st.sampled_from([1, 4]))
        assert src.base_range(off, end, run=run) == plain[off:end]


@pytest.mark.parametrize("kind", ["plain", "client"])
def test_local_only_serves_cached_blocks_and_never_fetches(kind: str, tmp_path: Path) -> None:
    plain = os.urandom(SEG * SEGS_PER_BLOCK * 6 + 5)
    src, store, _blocks = build(kind, plain, tmp_path)
    src.local_only = True
    with pytest.raises(LookupError):
        src.base_range(0, 10)
    assert store.gets == 0
    src.local_only = False
    assert src.base_range(0, len(plain)) == plain  # fills the disk cache
    fetched = store.gets
    src.local_only = True
    # the memory tier holds two blocks only: most of these come from disk by pread
    assert src.base_range(0, len(plain)) == plain
    assert src.base_range(SEG * 5 + 3, SEG * 9 + 1) == plain[SEG * 5 + 3:SEG * 9 + 1]
    assert store.gets == fetched


def test_damaged_cached_block_is_refetched_in_client_mode(tmp_path: Path) -> None:
    plain = os.urandom(SEG * SEGS_PER_BLOCK * 3)
    src, store, blocks = build("client", plain, tmp_path)
    assert src.base_range(0, len(plain)) == plain
    blocks._mem.clear()  # force disk reads
    path = blocks._path("k", "etag1", 1)
    with open(path, "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 1]))
    before = store.gets
    assert src.base_range(SEG * SEGS_PER_BLOCK, SEG * SEGS_PER_BLOCK + 100) == \
        plain[SEG * SEGS_PER_BLOCK:SEG * SEGS_PER_BLOCK + 100]
    assert store.gets == before + 1  # the damaged block was dropped and fetched again


def test_advise_reports_only_blocks_on_disk(tmp_path: Path) -> None:
    plain = os.urandom(SEG * SEGS_PER_BLOCK * 2)
    src, _store, blocks = build("plain", plain, tmp_path)
    assert not blocks.advise("k", "etag1", 0)
    src.base_range(0, 10)
    assert blocks.advise("k", "etag1", 0)
    assert not blocks.advise("k", "etag1", 1)
