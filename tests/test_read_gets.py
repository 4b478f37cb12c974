# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""A cold sequential read costs client mode no more GETs than plain mode.

Client-mode read-ahead runs are 16 MiB of plaintext plus the AEAD's per-segment overhead; with
the CRT's default 8 MiB GET parts each run was split into 3-4 GETs (plain: 2), so a cold read
made twice plain's requests (issue 10: client mode ≥ 90% of plain).  Counted at the fault proxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from faultproxy import FaultProxy
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

MiB = 1024 * 1024


def cold_read_gets(mode: str, bucket: str, s3server, mount_factory, data: bytes) -> int:  # type: ignore[no-untyped-def]
    proxy = FaultProxy(s3server.endpoint, seed=5)
    proxy.start()
    try:
        m = mount_factory(bucket, mode, name=f"m-{mode}", prefix=f"{mode}/",
                          extra=["--endpoint-url", proxy.endpoint])
        (m.mountpoint / "f").write_bytes(data)
        subprocess.run([*S3ENCFS, "flush", str(m.mountpoint)], env=m.env, check=True,
                       capture_output=True, timeout=300)
        m.umount()
        shutil.rmtree(m.cache_dir)
        m.start()
        before = proxy.count("GetObject")
        assert (m.mountpoint / "f").read_bytes() == data
        gets = proxy.count("GetObject") - before
        m.umount()
        return gets
    finally:
        proxy.stop()


def test_client_cold_read_makes_no_more_gets_than_plain(bucket, s3server, mount_factory):  # type: ignore[no-untyped-def]
    data = os.urandom(128 * MiB)
    counts = {mode: cold_read_gets(mode, bucket, s3server, mount_factory, data)
              for mode in ("none", "client")}
    assert counts["client"] <= counts["none"] * 1.25 + 2, counts
