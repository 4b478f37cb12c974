# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Faults that must end in a bounded time with the truth told: dirty-byte accounting after
truncate, `flush --timeout`/`umount --timeout` while S3 is stalled (fault proxy), bounded fsync,
and a journal row left behind reported by `flush` instead of "flushed in 0.0s"."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time

import pytest
from faultproxy import Fault, FaultProxy
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401


@pytest.fixture
def proxy(s3server):
    p = FaultProxy(s3server.endpoint, seed=99)
    p.start()
    yield p
    p.stop()


def status(m) -> dict:
    out = subprocess.run([*S3ENCFS, "status", str(m.mountpoint), "--json"], env=m.env,
                         check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def flush(m, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*S3ENCFS, "flush", str(m.mountpoint), *args], env=m.env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_dirty_bytes_zero_after_truncate_and_flush(mode, bucket, mount_factory):
    """write 48 MiB; ftruncate(0); close; flush -> dirty_bytes 0 (issue 11: it stayed 48 MiB)."""
    m = mount_factory(bucket, mode)
    p = m.mountpoint / "big"
    chunk = os.urandom(1024 * 1024)
    with open(p, "wb") as f:
        for _ in range(48):
            f.write(chunk)
        f.flush()
        os.ftruncate(f.fileno(), 0)
        f.seek(0)
        f.write(b"tail")
    # a partial rewrite of an uploaded file: materializing/rewriting base segments counts too
    (m.mountpoint / "base").write_bytes(os.urandom(3 * 1024 * 1024))
    assert flush(m).returncode == 0
    with open(m.mountpoint / "base", "r+b") as f:
        f.seek(100)
        f.write(b"x" * 10)
        os.ftruncate(f.fileno(), 1024 * 1024 + 5)
    assert flush(m).returncode == 0
    st = status(m)
    assert st["dirty_bytes"] == 0, st
    assert p.read_bytes() == b"tail"
    assert os.path.getsize(m.mountpoint / "base") == 1024 * 1024 + 5


def umount(m, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*S3ENCFS, "umount", str(m.mountpoint), *args], env=m.env,
                          capture_output=True, text=True, timeout=timeout)


def test_flush_umount_fsync_bounded_while_s3_stalls(bucket, s3, proxy, mount_factory):
    """S3 stalled (PUTs held unanswered): flush/umount --timeout exit 1 with the pending count
    within their time, umount leaves the mount up, fsync and fsyncdir give EIO after
    --sync-timeout; once S3 answers again everything lands."""
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint,
                                             "--read-timeout", "5", "--sync-timeout", "4"])
    proxy.add_fault(Fault(kind="timeout", op="PutObject", delay=3600))
    stalled_at = time.time()
    data = {f"f{i}": os.urandom(1000 + i) for i in range(3)}
    for name, body in data.items():
        (m.mountpoint / name).write_bytes(body)

    t0 = time.monotonic()
    r = flush(m, "--timeout", "3", timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.stdout, r.stderr)
    # the three files, plus the root directory's index once they are in
    assert re.search(r"[34] uploads not in S3 yet: after 3", r.stderr), r.stderr
    assert took < 20, took

    t0 = time.monotonic()
    r = umount(m, "--timeout", "3", timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "not unmounted" in r.stderr and re.search("[34] uploads", r.stderr), r.stderr
    assert time.monotonic() - t0 < 25
    assert os.path.ismount(m.mountpoint)

    with open(m.mountpoint / "synced", "wb") as f:
        f.write(b"must reach S3")
        f.flush()
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            os.fsync(f.fileno())
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t0 < 20
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 20
    fd = os.open(m.mountpoint, os.O_RDONLY)
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            os.fsync(fd)
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t0 < 20
    finally:
        os.close(fd)
    assert status(m)["pending_uploads"] >= 4
    deadline = time.monotonic() + 150  # the first upload's retries (5 s read timeouts) end
    while status(m)["s3_unreachable_since"] is None and time.monotonic() < deadline:
        time.sleep(1)
    since = status(m)["s3_unreachable_since"]
    assert since is not None and stalled_at - 5 <= since <= time.time()
    r = flush(m, "--timeout", "1", timeout=60)
    assert r.returncode == 1 and "S3 unreachable since" in r.stderr, r.stderr

    proxy.clear_faults()
    r = flush(m, "--timeout", "120", timeout=200)
    assert r.returncode == 0, (r.stdout, r.stderr)
    st = status(m)
    assert st["dirty_bytes"] == 0 and st["s3_unreachable_since"] is None, st
    assert umount(m, "--timeout", "60", timeout=120).returncode == 0
    m.proc.wait(timeout=60)
    m.proc = None
    for name, body in {**data, "synced": b"must reach S3"}.items():
        assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == body


def test_flush_reports_a_journal_row_replay_left(bucket, s3, proxy, mount_factory):
    """After a restart whose replay failed, `flush` says a row is left (it printed "flushed in
    0.0s" and exited 0)."""
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint,
                                             "--upload-delay", "60"])
    (m.mountpoint / "late").write_bytes(b"journaled, not uploaded")
    m.kill()
    proxy.add_fault(Fault(kind="status", op="PutObject", status=403, code="AccessDenied"))
    m.start()
    proxy.clear_faults()
    r = flush(m, "--timeout", "30", timeout=90)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "1 upload not in S3 yet" in r.stderr, r.stderr


def test_retry_quota_never_runs_out(bucket, s3server, proxy, monkeypatch):
    """Dozens of failing requests (an outage) used up botocore's standard-mode retry quota; from
    then on every request failed at its first error, unretried.  Each request keeps its retries."""
    from s3encfs.store import errors as se
    from s3encfs.store.s3 import ObjectStore

    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=proxy.endpoint, max_attempts=2)
    proxy.add_fault(Fault(kind="status", op="HeadObject", status=500, code="InternalError"))
    for _ in range(40):  # 40 retries x 14 tokens > the quota's 500
        with pytest.raises(se.StoreError):
            store.head("outage")
    proxy.clear_faults()
    proxy.add_fault(Fault(kind="status", op="HeadObject", status=500, code="InternalError",
                          count=1))
    with pytest.raises(se.NotFound):  # the 500 is retried, the retry gets the real answer
        store.head("after-missing")
    assert proxy.count("HeadObject") >= 82


def test_outage_create_mkdir_in_known_directories(bucket, s3, proxy, mount_factory):
    """S3 down (every connection reset) past the listing's TTL: create and mkdir in a directory
    this mount knows keep working (journaled, uploaded when S3 is back), cached data reads; they
    gave EIO once the listing was older than dir_ttl."""
    m = mount_factory(bucket, "none", extra=["--endpoint-url", proxy.endpoint, "--dir-ttl", "1",
                                             "--attr-timeout", "0.5", "--read-timeout", "3"])
    known = m.mountpoint / "known"
    known.mkdir()
    (known / "old").write_bytes(b"cached")
    assert flush(m).returncode == 0
    assert (known / "old").read_bytes() == b"cached"
    # Held open for the outage: drop_caches is machine-wide, and another test worker's (or a
    # benchmark's) drop_caches(2) made the kernel FORGET known/old; known's listing was then
    # incomplete, which is never the outage fallback, so the create below got EIO (seen twice
    # under load in parallel runs; as in test_outage_breaker)
    held = open(known / "old", "rb")  # noqa: SIM115
    proxy.add_fault(Fault(kind="reset"))
    time.sleep(2)  # past dir_ttl and the kernel's entry timeout
    (known / "new").write_bytes(b"made during the outage")
    (known / "sub").mkdir()
    assert sorted(os.listdir(known)) == ["new", "old", "sub"]
    assert (known / "old").read_bytes() == b"cached"
    assert (known / "new").read_bytes() == b"made during the outage"
    proxy.clear_faults()
    held.close()
    r = flush(m, "--timeout", "200", timeout=300)
    assert r.returncode == 0, r.stderr
    assert s3.get_object(Bucket=bucket, Key="known/new")["Body"].read() == b"made during the outage"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="known/")["Contents"]}
    assert any(k.startswith("known/sub/") for k in keys), keys


@pytest.mark.parametrize("mode", ["none", "client"])
def test_forgotten_nodes_leave_memory(mode, bucket, mount_factory):
    """The kernel's FORGET drops clean nodes (the node table grew ~5.9 KB per file for ever);
    the names come back from S3 on the next access, and a file with pending work stays."""
    m = mount_factory(bucket, mode, extra=["--upload-delay", "0.1"])
    root = m.mountpoint
    for d in range(3):
        (root / f"d{d}").mkdir()
        for i in range(100):
            (root / f"d{d}" / f"f{i}").write_bytes(f"{d}/{i}".encode())
    assert flush(m).returncode == 0
    before = status(m)["nodes"]
    assert before >= 303
    subprocess.run(["sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"], check=True)
    deadline = time.monotonic() + 30
    while status(m)["nodes"] > 50 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = status(m)["nodes"]
    print(f"\n[{mode}] nodes {before} -> {after} after the kernel forgot them")
    assert after <= 50, (before, after)
    for d in range(3):  # everything is still there, read back from S3
        assert sorted(os.listdir(root / f"d{d}")) == sorted(f"f{i}" for i in range(100))
        assert (root / f"d{d}" / "f7").read_bytes() == f"{d}/7".encode()
    (root / "d1" / "f7").write_bytes(b"changed")
    assert flush(m).returncode == 0
    assert (root / "d1" / "f7").read_bytes() == b"changed"
    assert status(m)["dirty_bytes"] == 0


def test_lock_within_takes_a_free_lock_at_once_and_bounds_a_held_one():
    """`lock_within` (every write request): a free lock is taken with no trip through trio's
    scheduler (the task never yields), a held one gives EIO after its bound."""
    import pyfuse3
    import trio
    import trio.testing

    from s3encfs.fs.bounded import lock_within

    yields: list[object] = []

    class Steps(trio.abc.Instrument):
        def after_task_step(self, task: object) -> None:
            yields.append(task)

    async def main() -> None:
        me = trio.lowlevel.current_task()
        lock = trio.Lock()
        before = yields.count(me)
        async with lock_within(lock, 5, "f"):
            assert lock.locked()
        assert yields.count(me) == before  # no yield to the scheduler on the way in or out
        done = trio.Event()

        async def upload() -> None:  # holds the file's lock, as a stalled upload does
            async with lock:
                await done.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            with pytest.raises(pyfuse3.FUSEError) as exc:
                async with lock_within(lock, 0.2, "f"):
                    pass
            assert exc.value.errno == errno.EIO and 0.2 <= trio.current_time() - t0 < 5
            done.set()

    trio.run(main, instruments=[Steps()])
