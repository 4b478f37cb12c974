# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Issue 15 item 5: a partial rewrite whose base object another writer deleted or replaced
reaches S3 — whole under its name if every byte is local, else as one conflict copy — and
`flush` finishes; never a forever-retry, never a `.conflict-X.conflict-X` name.

Real mounts against the real SeaweedFS.  The upload is held back by a long `--upload-delay`
while boto3 deletes or overwrites the object, then `s3encfs flush --timeout 60` sends it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from mounting import S3ENCFS, Mount, keyenv, mount_factory  # noqa: F401

MiB = 1024 * 1024
THEIRS = b"another writer's version\n"


def flush(m: Mount, timeout: int = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*S3ENCFS, "flush", "--timeout", str(timeout), str(m.mountpoint)],
                          env=m.env, timeout=timeout + 30, capture_output=True)


def file_key(s3, bucket: str) -> str:
    """The key of the one file object (the largest object: markers and indexes are small)."""
    objs = [o for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])]
    return max(objs, key=lambda o: o["Size"])["Key"]


def status_stats(m: Mount) -> str:
    r = subprocess.run([*S3ENCFS, "status", "--json", str(m.mountpoint)], env=m.env,
                       capture_output=True, timeout=30)
    return r.stdout.decode()


def _uploaded_then_cold(mount_factory, bucket, mode, orig: bytes):  # type: ignore[no-untyped-def]
    """p.bin = `orig` in S3; the mount restarted with an empty cache and uploads held back."""
    m = mount_factory(bucket, mode)
    (m.mountpoint / "p.bin").write_bytes(orig)
    assert flush(m).returncode == 0
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.extra = ["--upload-delay", "600"]
    m.start()
    return m


@pytest.mark.parametrize("what", ["delete", "replace"])
@pytest.mark.parametrize("local", ["cold", "warm"])
@pytest.mark.parametrize("mode", ["none", "client"])
def test_partial_rewrite_of_a_vanished_base_reaches_s3(mount_factory, s3, bucket, mode, what,
                                                        local):
    orig = os.urandom(3 * MiB + 12345)
    m = _uploaded_then_cold(mount_factory, bucket, mode, orig)
    path = m.mountpoint / "p.bin"
    if local == "warm":
        assert path.read_bytes() == orig  # every base byte now in the block cache
    patch = os.urandom(5000)
    off = 1 * MiB + 777
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, patch, off)
    os.close(fd)
    ours = orig[:off] + patch + orig[off + len(patch):]
    key = file_key(s3, bucket)
    if what == "delete":
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=THEIRS)
    r = flush(m)
    assert r.returncode == 0, (r.stdout, r.stderr, m.read_log()[-3000:])
    names = sorted(os.listdir(m.mountpoint))
    assert not any(n.count(".conflict-") > 1 for n in names), names
    conflicts = [n for n in names if ".conflict-" in n]
    log = m.read_log()
    if local == "warm" and what == "delete":
        assert conflicts == [], names
        assert path.read_bytes() == ours
    else:
        assert len(conflicts) == 1, names
        copy = (m.mountpoint / conflicts[0]).read_bytes()
        if local == "warm":
            assert copy == ours
        else:  # the bytes we had, zeros (logged, counted) where the base was not local
            assert len(copy) == len(ours)
            assert copy[off:off + len(patch)] == patch
            assert "not local" in log and "p.bin" in log
            assert "rebase_incomplete" in status_stats(m)
        if what == "replace" and mode == "none":
            assert path.read_bytes() == THEIRS
    # and it is in S3: a fresh mount with an empty cache sees the same
    want = {n: (m.mountpoint / n).read_bytes() for n in names if (m.mountpoint / n).is_file()
            and not (mode == "client" and what == "replace" and n == "p.bin")}
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.start()
    for n, data in want.items():
        assert (m.mountpoint / n).read_bytes() == data, n


def test_conflict_name_derives_from_the_original_name_once():
    from s3encfs.fs.rebase import conflict_name, missing_ranges
    first = conflict_name("p.bin", "host-a", "20261201-230000")
    assert first == "p.bin.conflict-host-a-20261201-230000"
    again = conflict_name(first, "host-a", "20261201-230001")
    assert again == "p.bin.conflict-host-a-20261201-230001"
    assert conflict_name(again, "host-a", "20261201-230001", {again}) == again  # itself
    taken = {"p.bin.conflict-host-a-20261201-230001"}
    assert conflict_name("p.bin", "host-a", "20261201-230001", taken) == \
        "p.bin.conflict-host-a-20261201-230001-2"
    assert conflict_name(".conflict-h-20261201-230000", "h", "20261201-230001") == \
        ".conflict-h-20261201-230000.conflict-h-20261201-230001"  # no empty name
    assert missing_ranges([0, 1, 3], 10, 35) == [(0, 20), (30, 35)]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("what", ["delete", "replace"])
@pytest.mark.parametrize("mode", ["none", "client"])
def test_replay_of_a_partial_rewrite_whose_base_vanished(mount_factory, s3, bucket, mode, what):
    """kill -9 before the partial rewrite's upload; the base object is deleted or replaced out
    of band; the next mount's replay detaches the row from the base (rebase.replay_upload)
    instead of keeping it for ever (its base GET got 404/412 at every mount, and `flush` said a
    journal row was left).  The cache is cold (the base bytes would have to come from S3), so
    ours goes up as one conflict copy: our bytes, zeros where the base was not local."""
    orig = os.urandom(3 * MiB + 12345)
    m = _uploaded_then_cold(mount_factory, bucket, mode, orig)
    path = m.mountpoint / "p.bin"
    patch = os.urandom(5000)
    off = 1 * MiB + 777
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, patch, off)
    os.close(fd)  # journaled at close; the upload is 600 s away
    m.kill()
    key = file_key(s3, bucket)
    if what == "delete":
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=THEIRS)
    m.start()  # replays the row
    r = flush(m)
    assert r.returncode == 0, (r.stdout, r.stderr, m.read_log()[-3000:])
    assert '"journal_rows": 0' in status_stats(m)
    names = sorted(os.listdir(m.mountpoint))
    conflicts = [n for n in names if ".conflict-" in n]
    assert len(conflicts) == 1 and conflicts[0].startswith("p.bin.conflict-"), names
    copy = (m.mountpoint / conflicts[0]).read_bytes()
    assert len(copy) == len(orig) and copy[off:off + len(patch)] == patch
    assert "not local" in m.read_log()
    if what == "delete":
        assert "p.bin" not in names, names
    elif mode == "none":
        assert path.read_bytes() == THEIRS
    m.umount()
    shutil.rmtree(m.cache_dir)  # from S3 alone
    m.start()
    assert (m.mountpoint / conflicts[0]).read_bytes() == copy
