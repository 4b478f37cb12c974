"""store/sealed_spool.py: S3EC local spools (verified views; early multipart parts, sealed)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from s3encfs.codec import IntegrityError
from s3encfs.store.sealed_spool import CHUNK, PartSpool, Spool, Views


def test_spool_random_writes_and_reads_and_nothing_left_on_disk(tmp_path: Path) -> None:
    r = random.Random(7)
    data = os.urandom(3 * CHUNK + 12345)
    s = Spool(str(tmp_path))
    off = 0
    while off < len(data):
        n = r.choice([0, 1, 17, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5, 8 * CHUNK])
        s.write(data[off:off + n])
        off += n
    s.finish()
    assert s.size == len(data) and s.read(0, len(data)) == data
    for _ in range(300):
        a = r.randint(0, len(data))
        b = r.randint(a, len(data) + 10)
        assert s.read(a, b) == data[a:b]
    assert os.listdir(tmp_path) == []  # unlinked at once: a crash leaves nothing behind


def test_part_spool_sealed_and_damage_is_an_error(tmp_path: Path) -> None:
    marker = b"PART-PLAINTEXT-MARKER"
    p = PartSpool(str(tmp_path))
    p.put(1, marker * 1000)
    assert marker not in os.pread(p.fd, 2 * CHUNK, 0) and os.listdir(tmp_path) == []
    os.pwrite(p.fd, b"\xff", 5)
    with pytest.raises(IntegrityError):
        p.get(1)


def test_parts_replace_and_views_evict(tmp_path: Path) -> None:
    p = PartSpool(str(tmp_path))
    p.put(2, b"two")
    p.put(1, b"one")
    p.put(2, b"TWO")
    big = os.urandom(2 * CHUNK + 3)
    p.put(3, big)
    p.put(4, b"")
    assert p.numbers() == [1, 2, 3, 4] and p.get(2) == b"TWO" and p.get(1) == b"one"
    assert p.get(3) == big and p.get(4) == b"" and p.size() == 6 + len(big)
    fds = len(os.listdir("/proc/self/fd"))
    many = PartSpool(str(tmp_path))
    for n in range(1, 300):
        many.put(n, b"p")
    assert len(os.listdir("/proc/self/fd")) <= fds + 1  # one descriptor for all parts
    v = Views(str(tmp_path), max_bytes=2 * CHUNK)
    for i in range(3):
        sp = v.new()
        sp.write(bytes([i]) * CHUNK)
        v.publish(f"k{i}", "e", sp)
    assert v.get("k0", "e") is None and v.get("k2", "e") is not None
    few = Views(str(tmp_path), max_bytes=1 << 40, max_count=3)
    for i in range(10):
        sp = few.new()
        sp.write(b"x")
        few.publish(f"k{i}", "e", sp)
    assert [few.get(f"k{i}", "e") is not None for i in range(10)].count(True) == 3
    held = v.get("k1", "e")
    assert held is not None
    v.drop_key("k1")
    assert held.read(0, 3) == b"\x01" * 3  # a reader holding an evicted view still reads it
