# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""S3 down (every connection reset by the fault proxy): the circuit breaker (store/breaker.py)
makes foreground requests fail fast instead of sitting through botocore's retry schedule,
local work and cached reads go on, uploads keep retrying, and everything lands once S3 is
back (issue 15, outages)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest
from faultproxy import Fault, FaultProxy
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_faults_bounded import flush, status


@pytest.fixture
def proxy(s3server):
    p = FaultProxy(s3server.endpoint, seed=7)
    p.start()
    yield p
    p.stop()




def drop_caches(what: int) -> None:
    """1: the page cache (reads come from the mount); 2: dentries and inodes (the kernel
    FORGETs them, and the mount drops clean nodes from their directory's listing)."""
    subprocess.run(["sh", "-c", f"echo {what} > /proc/sys/vm/drop_caches"], check=True)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_outage_fails_fast_then_everything_lands(mode, bucket, proxy, mount_factory):
    """Before the breaker, a read of uncached data during the outage took botocore's whole
    retry schedule (8 attempts with backoff: tens of seconds) before EIO."""
    m = mount_factory(bucket, mode, extra=["--endpoint-url", proxy.endpoint, "--read-timeout",
                                           "3", "--dir-ttl", "1", "--attr-timeout", "0.5",
                                           "--upload-delay", "0.2"])
    root = m.mountpoint
    warm, cold = os.urandom(300_000), os.urandom(2_000_000)
    (root / "warm").write_bytes(warm)
    (root / "cold").write_bytes(cold)
    assert flush(m).returncode == 0
    m.umount()
    shutil.rmtree(m.cache_dir)  # nothing of cold is cached
    m.start()
    # Held open until this test's own drop_caches(2): drop_caches is machine-wide, and another
    # test worker's (test_faults_bounded, test_memory, the RSS bench, this file in another
    # process) made the kernel FORGET warm/cold here; the root's listing was then incomplete,
    # which is never the outage fallback, so the create below got EIO (1 run in 3 under load).
    held = [open(root / "warm", "rb"), open(root / "cold", "rb")]  # noqa: SIM115
    assert sorted(os.listdir(root)) == ["cold", "warm"]
    assert os.path.getsize(root / "cold") == len(cold)
    assert (root / "warm").read_bytes() == warm  # now in the block cache
    assert status(m).get("s3_breaker", "closed") == "closed"  # (no such field before)

    proxy.add_fault(Fault(kind="reset"))
    outage_at = time.monotonic()
    (root / "during").write_bytes(b"written during the outage")  # its upload fails, retried
    (root / "sub").mkdir()
    (root / "sub" / "deep").write_bytes(b"deep, during the outage")
    first = time.monotonic() - outage_at  # the root's refresh LIST: retried until the breaker
    print(f"\n[{mode}] local work at the start of the outage took {first:.1f} s")
    deadline = time.monotonic() + 120
    while True:
        st = status(m)
        if st.get("s3_breaker") == "open" or st["s3_unreachable_since"] is not None:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    print(f"[{mode}] breaker open {time.monotonic() - outage_at:.1f} s into the outage")
    assert first < 15, first  # (a whole retry schedule: 17 s here before in-flight retries ended)

    drop_caches(1)  # reads below come from the mount, not the kernel's pages
    t0 = time.monotonic()
    with pytest.raises(OSError) as exc, open(root / "cold", "rb") as f:
        f.read()
    took = time.monotonic() - t0
    print(f"[{mode}] uncached read failed in {took:.2f} s: {exc.value!r}")
    assert exc.value.errno == errno.EIO
    assert took < 5.0, took  # fails fast: a retry schedule takes ~17 s (5 s leaves room for load)

    t0 = time.monotonic()
    assert not (root / "never-heard-of").exists()  # a name S3 might hold: asked, fails fast
    assert time.monotonic() - t0 < 5.0

    t0 = time.monotonic()
    assert (root / "warm").read_bytes() == warm  # cached data reads
    (root / "local").write_bytes(b"local work goes on")  # create in a known directory
    assert sorted(os.listdir(root)) == ["cold", "during", "local", "sub", "warm"]
    assert time.monotonic() - t0 < 8.0
    st = status(m)
    assert st["s3_breaker"] == "open" and st["s3_fast_failures"] >= 1, st
    assert st["s3_unreachable_since"] is not None

    # a name the mount forgot (FORGET from the kernel) is not "absent" because S3 cannot be
    # asked: the listing it left is incomplete (it answered ENOENT for files S3 holds)
    for f in held:
        f.close()
    drop_caches(2)
    deadline = time.monotonic() + 20
    while True:
        try:
            os.stat(root / "cold")
        except OSError as e:
            assert e.errno == errno.EIO, e
            break
        assert time.monotonic() < deadline, "the kernel never forgot cold"
        time.sleep(0.5)
        drop_caches(2)

    r = flush(m, "--timeout", "2", timeout=60)  # uploads are still retrying: not done
    assert r.returncode == 1 and "not in S3 yet" in r.stderr, r.stderr

    proxy.clear_faults()
    back = time.monotonic()
    r = flush(m, "--timeout", "60", timeout=120)
    print(f"[{mode}] flush after the outage took {time.monotonic() - back:.1f} s")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - back < 30  # backed-off uploads resume when the probe succeeds
    st = status(m)
    assert st["s3_breaker"] == "closed" and st["s3_unreachable_since"] is None, st
    assert st["journal_rows"] == 0, st
    assert (root / "cold").read_bytes() == cold

    m.umount()
    shutil.rmtree(m.cache_dir)  # from S3 alone
    m.start()
    assert (root / "during").read_bytes() == b"written during the outage"
    assert (root / "sub" / "deep").read_bytes() == b"deep, during the outage"
    assert (root / "local").read_bytes() == b"local work goes on"
    assert (root / "warm").read_bytes() == warm
    assert (root / "cold").read_bytes() == cold
    m.umount()


def test_breaker_rules_in_process():
    """The breaker's rules without a network: per-attempt connection failures open it after
    `open_after`, a request that failed after its retries opens it at once, a 4xx answer closes
    it; only foreground requests are refused, and an in-flight foreground request's next failed
    attempt ends its retries."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from s3encfs.store.breaker import Breaker, background
    from s3encfs.store.errors import EndpointUnreachable

    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    b = Breaker(open_after=0.3)
    b.on_attempt(caught_exception=down)  # the first failed attempt: not open yet
    assert b.state()["state"] == "closed"
    b.admit("GetObject", "bkt", "k")
    time.sleep(0.35)
    assert b.state()["state"] == "open"
    with pytest.raises(EndpointUnreachable):
        b.admit("GetObject", "bkt", "k")
    with pytest.raises(EndpointConnectionError):  # in flight: no more retries
        b.on_attempt(caught_exception=down)
    with background():
        b.admit("PutObject", "bkt", "k")  # uploads go on
        b.on_attempt(caught_exception=down)  # and keep their retries
    b.failed(NoCredentialsError())  # a local problem, not an answer: still open
    assert b.state()["state"] == "open" and b.refused == 1
    b.failed(ClientError({"Error": {"Code": "404"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                         "HeadObject"))
    assert b.state() == {"state": "closed", "open_since": None, "down_since": None,
                         "refused": 1, "closings": 1}
    b.admit("GetObject", "bkt", "k")
    b.failed(ClientError({"Error": {"Code": "500"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
                         "GetObject"))  # 5xx: S3 answers; each request keeps its retries
    assert b.state()["state"] == "closed"
    b.failed(down)  # failed after all its retries, not answered: open at once
    assert b.state()["state"] == "open"
