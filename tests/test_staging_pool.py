"""cache/staging.py `StagingPool`: emptied staging files are renamed and reused for new files
instead of unlinked and created again (issue 16: a create cost the trio thread 60-120 µs)."""

from __future__ import annotations

import os

import pytest

from s3encfs.cache.staging import StagingFile, StagingPool
from s3encfs.codec import IdentitySlots

S = 64 * 1024


def _new(d, name: str, pool: StagingPool | None) -> StagingFile:
    return StagingFile(str(d / name), name, S, IdentitySlots(), pool=pool)


def test_a_removed_file_comes_back_empty_under_the_next_name(tmp_path):
    pool = StagingPool()
    a = _new(tmp_path, "a", pool)
    a.write_segment(0, b"secret of a" * 100)
    ino = os.fstat(a.fd).st_ino
    a.remove()
    assert sorted(os.listdir(tmp_path)) == ["a"]  # kept, emptied, until taken
    assert os.path.getsize(tmp_path / "a") == 0
    b = _new(tmp_path, "b", pool)
    assert sorted(os.listdir(tmp_path)) == ["b"]  # the same file, renamed: no create
    assert os.fstat(b.fd).st_ino == ino
    assert os.path.getsize(tmp_path / "b") == 0  # nothing of a's bytes is left in it
    assert b.read_segment(0) == bytes(S)
    b.write_segment(0, b"b")
    assert b.read_segment(0)[:1] == b"b"
    with pytest.raises(OSError):
        a.read_segment(0)  # the old object lost its fd: it can never read b's bytes
    a.remove()  # a second remove is harmless and does not touch b
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_pool_limit_and_clear_unlink(tmp_path):
    pool = StagingPool(limit=2, closed_limit=0)
    files = [_new(tmp_path, f"f{i}", pool) for i in range(3)]
    for f in files:
        f.remove()
    assert len(os.listdir(tmp_path)) == 2  # the third was unlinked: the pool was full
    pool.clear()
    assert os.listdir(tmp_path) == []


def test_a_pooled_file_gone_from_disk_is_skipped(tmp_path):
    pool = StagingPool()
    a = _new(tmp_path, "a", pool)
    a.remove()
    os.unlink(tmp_path / "a")  # e.g. swept by hand
    b = _new(tmp_path, "b", pool)  # falls back to a fresh create
    b.write_segment(0, b"x")
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_without_a_pool_remove_unlinks(tmp_path):
    a = _new(tmp_path, "a", None)
    a.remove()
    assert os.listdir(tmp_path) == []


def test_past_the_open_limit_files_are_kept_closed_and_reused_by_name(tmp_path):
    """W4 lands uploads in bursts: past the 64 kept open, emptied files are kept by name (no
    descriptor held) and a new file is one of them renamed and opened, not created."""
    pool = StagingPool(limit=1, closed_limit=2)
    files = [_new(tmp_path, f"f{i}", pool) for i in range(4)]
    inodes = set()
    for f in files:
        f.write_segment(0, b"old bytes " * 50)
        inodes.add(os.fstat(f.fd).st_ino)
    for f in files:
        f.remove()
    assert len(os.listdir(tmp_path)) == 3  # one open, two closed; the fourth was unlinked
    assert all(os.path.getsize(tmp_path / n) == 0 for n in os.listdir(tmp_path))
    new = [_new(tmp_path, f"n{i}", pool) for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == ["n0", "n1", "n2"]
    for f in new:
        assert os.fstat(f.fd).st_ino in inodes  # renamed, not created
        assert f.read_segment(0) == bytes(S)  # nothing of the old bytes is left
        f.write_segment(0, b"new")
        assert f.read_segment(0)[:3] == b"new"
    fresh = _new(tmp_path, "n3", pool)  # the pool is empty now: a fresh create
    assert os.fstat(fresh.fd).st_ino not in {os.fstat(f.fd).st_ino for f in new}
    for f in [*new, fresh]:
        f.remove()
    pool.clear()
    assert os.listdir(tmp_path) == []


def test_a_closed_pooled_file_gone_from_disk_is_skipped(tmp_path):
    pool = StagingPool(limit=0, closed_limit=4)
    a = _new(tmp_path, "a", pool)
    a.remove()
    assert os.listdir(tmp_path) == ["a"]
    os.unlink(tmp_path / "a")
    b = _new(tmp_path, "b", pool)  # falls back to a fresh create
    b.write_segment(0, b"x")
    assert sorted(os.listdir(tmp_path)) == ["b"]
