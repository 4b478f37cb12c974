"""Secrets and local-cache hygiene of a running mount (issue 10, items 6, 7 and 9), real
SeaweedFS mounts: no passphrase in /proc/PID/environ, no core dumps, a 0700 cache dir with 0600
journal files, and nosuid,nodev in the modes that do not authenticate attributes."""

# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401


def mount_options(mountpoint: Path) -> set[str]:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return set(fields[3].split(","))
    raise AssertionError(f"{mountpoint} not mounted")


def test_passphrase_gone_from_environ_of_running_mount(bucket, mount_factory, s3env, tmp_path):
    marker = "pp-" + secrets.token_hex(8)
    env = dict(s3env, S3ENCFS_KEYRING_DIR=str(tmp_path / "keys"), S3ENCFS_PASSPHRASE=marker)
    subprocess.run([*S3ENCFS, "key", "create", "default"], env=env, check=True,
                   capture_output=True)
    m = mount_factory(bucket, "client", env=env)
    assert m.proc is not None
    environ = Path(f"/proc/{m.proc.pid}/environ").read_bytes()
    assert marker.encode() not in environ
    assert b"S3ENCFS_PASSPHRASE" not in environ
    limits = Path(f"/proc/{m.proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    (m.mountpoint / "f").write_text("x")
    m.umount()
    assert marker not in m.read_log()


def test_cache_dir_tightened_and_journal_files_private(bucket, mount_factory, tmp_path):
    cache = tmp_path / "m-cache"  # the directory mount_factory uses for name "m"
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)
    m = mount_factory(bucket, "none")
    (m.mountpoint / "f").write_text("x")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()}
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        assert modes.get(name) == 0o600, modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    m.umount()


@pytest.mark.parametrize("mode", ["none", "sse-c:ck"])
def test_unauthenticated_modes_mount_nosuid_nodev(mode, bucket, mount_factory, keyenv):
    if "sse-c" in mode:
        subprocess.run([*S3ENCFS, "key", "create", "ck", "--kind", "sse-c"], env=keyenv,
                       check=True, capture_output=True)
    m = mount_factory(bucket, mode, extra=["-o", "suid", "-o", "dev"])
    opts = mount_options(m.mountpoint)
    assert {"nosuid", "nodev"} <= opts, opts
    m.umount()
    assert "nosuid,nodev" in m.read_log()


def test_client_mode_keeps_the_users_choice(bucket, mount_factory):
    m = mount_factory(bucket, "client", extra=["-o", "suid"])
    assert "nosuid" not in mount_options(m.mountpoint)
    m.umount()
