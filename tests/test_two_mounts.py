# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Two mounts of one bucket (two cache directories): disjoint writes all land and each mount sees
the other's files once its directory listing expires (--dir-ttl); conflicting writes to one file
keep the losing version as a visible conflict copy."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from mounting import keyenv, mount_factory  # noqa: F401

FAST = ["--dir-ttl", "1", "--attr-timeout", "0.5"]


def wait_for(pred, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


@pytest.mark.parametrize("mode", ["none", "client"])
def test_disjoint_writes_land_and_are_visible(mode, bucket, mount_factory):
    a = mount_factory(bucket, mode, name="a", extra=FAST)
    b = mount_factory(bucket, mode, name="b", extra=FAST)
    (a.mountpoint / "from-a").mkdir()
    (b.mountpoint / "from-b").mkdir()
    for i in range(20):
        (a.mountpoint / "from-a" / f"f{i}").write_bytes(b"A" * (i + 1))
        (b.mountpoint / "from-b" / f"f{i}").write_bytes(b"B" * (i + 1))
        (a.mountpoint / f"top-a{i}").write_bytes(b"a%d" % i)
        (b.mountpoint / f"top-b{i}").write_bytes(b"b%d" % i)
    # visible from the other mount after the listing TTL, without remounting
    assert wait_for(lambda: len(os.listdir(b.mountpoint / "from-a")) == 20
                    if (b.mountpoint / "from-a").exists() else False)
    assert wait_for(lambda: len(os.listdir(a.mountpoint / "from-b")) == 20
                    if (a.mountpoint / "from-b").exists() else False)
    for i in range(20):
        assert (b.mountpoint / "from-a" / f"f{i}").read_bytes() == b"A" * (i + 1)
        assert (a.mountpoint / "from-b" / f"f{i}").read_bytes() == b"B" * (i + 1)
    assert wait_for(lambda: {f"top-b{i}" for i in range(20)} <= set(os.listdir(a.mountpoint)))
    a.umount()
    b.umount()
    a.start()
    names = set(os.listdir(a.mountpoint))
    assert {f"top-a{i}" for i in range(20)} | {f"top-b{i}" for i in range(20)} | \
        {"from-a", "from-b"} <= names
    assert not [n for n in names if ".conflict-" in n]


@pytest.mark.parametrize("mode", ["none", "client"])
def test_conflicting_writes_keep_a_conflict_copy(mode, bucket, mount_factory):
    """Both mounts open the same existing file (without truncating) before either writes back,
    and write different contents; the second upload must not silently overwrite the first: one
    version stays under the name, the other appears next to it as `NAME.conflict-HOST-TIME`."""
    a = mount_factory(bucket, mode, name="a", extra=FAST)
    (a.mountpoint / "shared.txt").write_bytes(b"original\n")
    a.umount()
    a.start()
    b = mount_factory(bucket, mode, name="b", extra=FAST)
    assert (a.mountpoint / "shared.txt").read_bytes() == b"original\n"
    assert (b.mountpoint / "shared.txt").read_bytes() == b"original\n"
    fa = open(a.mountpoint / "shared.txt", "r+b")  # noqa: SIM115
    fb = open(b.mountpoint / "shared.txt", "r+b")  # noqa: SIM115
    fa.write(b"version from A\n")
    fa.close()
    a.umount()  # A's version is in S3 now
    fb.write(b"version from B, based on the original\n")
    fb.close()
    b.umount()
    a.start()
    names = sorted(os.listdir(a.mountpoint))
    conflicts = [n for n in names if n.startswith("shared.txt.conflict-")]
    print(f"\n[{mode}] after the conflict: {names}")
    assert len(conflicts) == 1, names
    versions = {(a.mountpoint / "shared.txt").read_bytes(),
                (a.mountpoint / conflicts[0]).read_bytes()}
    assert versions == {b"version from A\n", b"version from B, based on the original\n"}
    assert "conflict" in b.read_log()


def _cat(path) -> bytes:
    return subprocess.run(["cat", str(path)], check=True, capture_output=True).stdout


@pytest.mark.parametrize("mode", ["none", "client"])
def test_warm_mount_reads_another_writers_new_length_exactly(mode, bucket, mount_factory):
    """Mount A has read two files (its kernel holds their inodes, sizes and pages, writeback
    cache on); mount B rewrites one shorter and one longer.  Once A's listing and attribute
    TTLs have passed, A's `cat` gives B's bytes exactly: the kernel never takes a new size for
    an inode it has, so before the fix A got the old length (the shorter file padded with NUL
    bytes, the longer one cut off)."""
    a = mount_factory(bucket, mode, name="a", extra=FAST)
    b = mount_factory(bucket, mode, name="b", extra=FAST)
    old = {"shrinks": b"0123456789abcdef" * 4096, "grows": b"short\n"}
    new = {"shrinks": b"B wrote this\n", "grows": b"B wrote a longer file\n" * 5000}
    for name, body in old.items():
        (a.mountpoint / name).write_bytes(body)
    a.flush()
    for name, body in old.items():
        assert _cat(a.mountpoint / name) == body  # A's kernel now caches size and pages
        assert os.stat(a.mountpoint / name).st_size == len(body)
        assert wait_for(lambda n=name: (b.mountpoint / n).exists())
        assert _cat(b.mountpoint / name) == body
    for name, body in new.items():
        (b.mountpoint / name).write_bytes(body)
    b.flush()
    time.sleep(1.0 + 0.5 + 0.3)  # A's --dir-ttl and --attr-timeout, and a margin
    for name, body in new.items():
        size = os.stat(a.mountpoint / name).st_size  # `ls -l` first, then `cat`
        got = _cat(a.mountpoint / name)
        assert (size, got) == (len(body), body), (name, size, len(got), got.count(b"\0"))
    for name, body in new.items():  # and A's view stays right (its next listing changes nothing)
        time.sleep(1.2)
        assert _cat(a.mountpoint / name) == body
