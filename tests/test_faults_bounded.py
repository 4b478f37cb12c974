# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Faults that must end in a bounded time with the truth told: dirty-byte accounting after
truncate, `flush --timeout`/`umount --timeout` while S3 is stalled (fault proxy), bounded fsync,
and a journal row left behind reported by `flush` instead of "flushed in 0.0s"."""

from __future__ import annotations

import json
import os
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
