# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""A real mount behind the fault-injecting proxy: writes are retried until they land intact,
reads retry and succeed, and a permanently failing object gives EIO (logged by key) for that file
only while the rest of the mount keeps serving.

Timeouts: `--read-timeout 2` makes a held request cost 2 s instead of 60 s, so the `timeout`
fault is tested too (test_timeouts_are_retried).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy
from mounting import keyenv, mount_factory, tree_hashes  # noqa: F401


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def proxy(s3server):
    p = FaultProxy(s3server.endpoint, seed=1234)
    p.start()
    yield p
    p.stop()


def make_tree(root: Path, nfiles: int = 40, big: int = 20 * 1024**2) -> dict[str, str]:
    """A small tree plus one big file; returns {relative path: sha256}."""
    rnd = random.Random(7)
    out: dict[str, str] = {}
    for i in range(nfiles):
        rel = f"d{i % 4}/sub{i % 3}/f{i:03d}.bin"
        data = rnd.randbytes(rnd.randint(0, 200_000))
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = sha(data)
    data = rnd.randbytes(big)
    (root / "big.bin").write_bytes(data)
    out["big.bin"] = sha(data)
    return out


def write_faults(rate: float) -> list[Fault]:
    ops = ("PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload")
    rules = []
    for op in ops:
        rules.append(Fault(kind="status", op=op, rate=rate, status=503, code="SlowDown"))
        rules.append(Fault(kind="reset", op=op, rate=rate / 2))
    rules.append(Fault(kind="status", op="ListObjectsV2", rate=rate, status=503,
                       code="SlowDown"))
    rules.append(Fault(kind="reset", op="HeadObject", rate=rate / 2))
    return rules


def read_faults(rate: float) -> list[Fault]:
    return [
        Fault(kind="status", op="GetObject", rate=rate, status=503, code="SlowDown"),
        Fault(kind="reset", op="GetObject", rate=rate / 2),
        Fault(kind="truncate", op="GetObject", rate=rate / 2),
    ]


@pytest.mark.parametrize("mode", ["none", "client"])
def test_writes_land_intact_under_faults(mode, bucket, s3, proxy, mount_factory,
                                         tmp_path):
    src = tmp_path / "src"
    expected = make_tree(src)
    m = mount_factory(bucket, mode, extra=["--endpoint-url", proxy.endpoint])
    for rule in write_faults(0.15):
        proxy.add_fault(rule)
    t0 = time.monotonic()
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True, timeout=600)
    m.umount()
    elapsed = time.monotonic() - t0
    stats = proxy.stats()
    proxy.clear_faults()
    print(f"\n[{mode}] rsync+umount under faults: {elapsed:.1f}s, faults={stats['faults']}, "
          f"requests={stats['requests']}")
    assert sum(stats["faults"].values()) >= 5, stats  # the faults really fired

    if mode == "none":  # objects are the plain files: check them with boto3 directly
        got = {}
        for rel in expected:
            body = s3.get_object(Bucket=bucket, Key=rel)["Body"].read()
            got[rel] = sha(body)
        assert got == expected
    # and through a fresh mount (fresh cache, no faults): every byte reads back
    shutil.rmtree(m.cache_dir)
    m.start()
    assert tree_hashes(m.mountpoint) == expected
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [], uploads


def test_reads_retry_and_succeed(bucket, s3, proxy, mount_factory, tmp_path):
    rnd = random.Random(3)
    expected = {}
    for i in range(20):
        data = rnd.randbytes(rnd.randint(1, 300_000))
        s3.put_object(Bucket=bucket, Key=f"r/f{i:02d}", Body=data)
        expected[f"r/f{i:02d}"] = sha(data)
    data = rnd.randbytes(6 * 1024**2)
    s3.put_object(Bucket=bucket, Key="r/big", Body=data)
    expected["r/big"] = sha(data)

    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint])
    for rule in read_faults(0.25):
        proxy.add_fault(rule)
    t0 = time.monotonic()
    got = tree_hashes(m.mountpoint)
    elapsed = time.monotonic() - t0
    stats = proxy.stats()
    print(f"\nread under faults: {elapsed:.1f}s, faults={stats['faults']}, "
          f"GetObject={stats['requests'].get('GetObject')}")
    assert {f"r/{k}" if not k.startswith("r/") else k: v for k, v in got.items()} == expected
    assert stats["faults"].get("truncate", 0) + stats["faults"].get("status", 0) \
        + stats["faults"].get("reset", 0) >= 3, stats


def test_permanent_get_fault_gives_eio_for_that_file_only(bucket, s3, proxy,
                                                          mount_factory):
    s3.put_object(Bucket=bucket, Key="good1", Body=b"one" * 1000)
    s3.put_object(Bucket=bucket, Key="bad-object", Body=b"two" * 1000)
    s3.put_object(Bucket=bucket, Key="good2", Body=b"three" * 1000)
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint])
    assert sorted(os.listdir(m.mountpoint)) == ["bad-object", "good1", "good2"]
    proxy.add_fault(Fault(kind="status", op="GetObject", key_contains="bad-object",
                          status=500, code="InternalError"))
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        (m.mountpoint / "bad-object").read_bytes()
    elapsed = time.monotonic() - t0
    print(f"\npermanent 500: EIO after {elapsed:.1f}s, "
          f"{proxy.count('GetObject')} GetObject attempts")
    assert ei.value.errno == errno.EIO
    assert proxy.count("GetObject") >= 2  # it was retried before giving up
    assert (m.mountpoint / "good1").read_bytes() == b"one" * 1000
    assert (m.mountpoint / "good2").read_bytes() == b"three" * 1000
    # the mount keeps serving writes too
    (m.mountpoint / "new").write_bytes(b"new data")
    assert (m.mountpoint / "new").read_bytes() == b"new data"
    deadline = time.monotonic() + 5
    while "bad-object" not in m.read_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = m.read_log()
    assert "bad-object" in log and ("EIO" in log or "failed" in log), log
    proxy.clear_faults()
    assert (m.mountpoint / "bad-object").read_bytes() == b"two" * 1000  # recovers
    m.umount()
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"new data"


def test_permanent_reset_gives_eio(bucket, s3, proxy, mount_factory):
    s3.put_object(Bucket=bucket, Key="ok", Body=b"fine")
    s3.put_object(Bucket=bucket, Key="resets", Body=b"x" * 5000)
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint])
    os.listdir(m.mountpoint)
    proxy.add_fault(Fault(kind="reset", op="GetObject", key_contains="resets"))
    with pytest.raises(OSError) as ei:
        (m.mountpoint / "resets").read_bytes()
    assert ei.value.errno == errno.EIO
    assert (m.mountpoint / "ok").read_bytes() == b"fine"
    assert "resets" in m.read_log()


def test_timeouts_are_retried(bucket, s3, proxy, mount_factory, tmp_path):
    """Requests S3 holds without answering time out and are retried: writes land, reads work."""
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint,
                                             "--read-timeout", "2", "--connect-timeout", "2"])
    data = random.Random(5).randbytes(300_000)
    proxy.add_fault(Fault(kind="timeout", op="PutObject", key_contains="slow", count=2,
                          delay=30))
    (m.mountpoint / "slow.bin").write_bytes(data)
    m.umount()
    assert s3.get_object(Bucket=bucket, Key="slow.bin")["Body"].read() == data
    assert proxy.stats()["faults"].get("timeout", 0) == 2
    shutil.rmtree(m.cache_dir)
    m.start()
    proxy.add_fault(Fault(kind="timeout", op="GetObject", key_contains="slow", count=2,
                          delay=30))
    assert (m.mountpoint / "slow.bin").read_bytes() == data
    assert proxy.stats()["faults"].get("timeout", 0) == 4


@pytest.mark.parametrize("mode", ["none", "client"])
def test_directory_marker_lands_before_anything_under_it(mode, bucket, s3, proxy,
                                                         mount_factory):
    """A PUT under `d/` that overlaps the PUT of `d/` can drop the marker (SeaweedFS keeps
    directories as entries and the child's implicit parent overwrites the explicit one): every
    object written, copied or renamed under a new directory must start after its marker's PUT
    was answered. Every PUT is held 0.3 s, so overlapping uploads would be caught."""
    m = mount_factory(bucket, mode, extra=["--endpoint-url", proxy.endpoint])
    root = m.mountpoint
    proxy.add_fault(Fault(kind="hold", op="PutObject", delay=0.3))
    (root / "a" / "b" / "c").mkdir(parents=True)
    for rel in ("a/f", "a/b/g", "a/b/c/h"):
        (root / rel).write_bytes(rel.encode() * 100)
    m.flush()  # all uploaded
    (root / "n").mkdir()
    os.rename(root / "a" / "f", root / "n" / "f")  # server-side copy into a new directory
    (root / "m").mkdir()
    os.rename(root / "a", root / "m" / "a2")  # a tree copied under a new directory
    m.umount()
    proxy.clear_faults()

    writes = [r for r in proxy.history()
              if r.op in ("PutObject", "CopyObject", "CreateMultipartUpload") and r.bucket == bucket
              and not r.key.startswith(".s3encfs/")]
    markers = {r.key: r for r in writes if r.key.endswith("/") and r.status == 200}
    assert len(markers) >= 7, sorted(markers)  # a a/b a/b/c n m m/a2 m/a2/b m/a2/b/c
    for r in writes:
        for key, marker in markers.items():
            if r.key != key and r.key.startswith(key):
                overlap = r.started < marker.answered and r.answered > marker.started
                assert not overlap, (r.key, "overlaps the PUT of", key)

    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
              if o["Key"].endswith("/") and not o["Key"].startswith(".s3encfs/")}
    assert len(listed) == 5, sorted(listed)  # n/ m/ m/a2/ m/a2/b/ m/a2/b/c/
    shutil.rmtree(m.cache_dir)
    m.start()
    walked = sorted(str(Path(d).relative_to(root)) for d, _s, _f in os.walk(root))
    assert walked == [".", "m", "m/a2", "m/a2/b", "m/a2/b/c", "n"]
    assert (root / "n" / "f").read_bytes() == b"a/f" * 100
    assert (root / "m" / "a2" / "b" / "c" / "h").read_bytes() == b"a/b/c/h" * 100
