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
    for name in ("journal.sqlite", "journal.sqlite-wal"):
        assert modes.get(name) == 0o600, modes
    # the journal is opened in exclusive locking mode: no shared-memory index (-shm) is made;
    # were one made, it must be private too
    assert modes.get("journal.sqlite-shm", 0o600) == 0o600, modes
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


def make_named_tree(root: Path, tag: str) -> list[str]:
    names = [f"dir-{tag}", f"file-{tag}.txt", f"deep-{tag}", f"big-{tag}.bin", f"link-{tag}"]
    (root / names[0] / names[2]).mkdir(parents=True)
    (root / names[1]).write_text("hello\n")
    (root / names[0] / names[2] / "x.txt").write_bytes(os.urandom(1000))
    (root / names[3]).write_bytes(os.urandom(3 * 1024 * 1024))
    (root / names[4]).symlink_to(names[1])
    return names


@pytest.mark.parametrize("plain", [False, True])
def test_client_mode_log_has_no_plaintext_names(plain, bucket, s3, mount_factory, tmp_path):
    tag = secrets.token_hex(6)
    src = tmp_path / "src"
    src.mkdir()
    names = make_named_tree(src, tag)
    extra = ["--debug", "all"] + (["--log-plain-names"] if plain else [])
    m = mount_factory(bucket, "client", extra=extra)
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    subprocess.run(["rsync", "-a", "--delete", f"{src}/", f"{m.mountpoint}/"], check=True)
    (m.mountpoint / names[1]).rename(m.mountpoint / names[0] / f"moved-{tag}")
    m.umount()
    # an error path that names the file: a tampered body reads EIO and is logged
    big = max(s3.list_objects_v2(Bucket=bucket)["Contents"], key=lambda o: o["Size"])["Key"]
    body = bytearray(s3.get_object(Bucket=bucket, Key=big)["Body"].read())
    body[100] ^= 1
    s3.put_object(Bucket=bucket, Key=big, Body=bytes(body),
                  Metadata=s3.head_object(Bucket=bucket, Key=big)["Metadata"])
    m.start()
    with pytest.raises(OSError):
        (m.mountpoint / names[3]).read_bytes()
    m.umount()
    log = m.log_path.read_text(errors="replace")
    if plain:  # the control: the same run does log plaintext names when asked to
        assert tag in log
    else:
        assert tag not in log, [ln for ln in log.splitlines() if tag in ln][:5]
        assert "name#" in log


def test_scrub_and_child_env_drop_every_passphrase_variable() -> None:
    from s3encfs.hardening import scrub_passphrase_env
    from s3encfs.keys.passphrase import child_env

    env = {"S3ENCFS_PASSPHRASE": "a", "S3ENCFS_PASSPHRASE_FD": "9", "S3ENCFS_PASSCOMMAND": "x",
           "S3ENCFS_EXPORT_PASSPHRASE": "b", "S3ENCFS_KEYRING_DIR": "/k", "PATH": "/bin"}
    assert child_env(env) == {"S3ENCFS_KEYRING_DIR": "/k", "PATH": "/bin"}
    assert sorted(scrub_passphrase_env(env)) == ["S3ENCFS_EXPORT_PASSPHRASE",
                                                  "S3ENCFS_PASSCOMMAND", "S3ENCFS_PASSPHRASE",
                                                  "S3ENCFS_PASSPHRASE_FD"]
    assert env == {"S3ENCFS_KEYRING_DIR": "/k", "PATH": "/bin"}


def test_passphrase_fd_closed_and_gone_in_running_mount(bucket, mount_factory, s3env, tmp_path):
    marker = "fd-" + secrets.token_hex(8)
    keys = dict(s3env, S3ENCFS_KEYRING_DIR=str(tmp_path / "keys"), S3ENCFS_PASSPHRASE=marker)
    subprocess.run([*S3ENCFS, "key", "create", "default"], env=keys, check=True,
                   capture_output=True)
    r, w = os.pipe()
    pipe = f"pipe:[{os.fstat(r).st_ino}]"
    os.write(w, marker.encode() + b"\n")
    os.close(w)
    env = {k: v for k, v in keys.items() if k != "S3ENCFS_PASSPHRASE"}
    env["S3ENCFS_PASSPHRASE_FD"] = str(r)
    m = mount_factory(bucket, "client", env=env, start=False)
    orig = subprocess.Popen

    def popen(*a, **kw):  # hand the pipe to the mount process
        kw["pass_fds"] = (r,)
        return orig(*a, **kw)

    subprocess.Popen = popen  # type: ignore[misc]
    try:
        m.start()
    finally:
        subprocess.Popen = orig  # type: ignore[misc]
        os.close(r)
    assert m.proc is not None
    environ = Path(f"/proc/{m.proc.pid}/environ").read_bytes()
    assert b"S3ENCFS_PASSPHRASE_FD" not in environ and marker.encode() not in environ
    fds = Path(f"/proc/{m.proc.pid}/fd")
    assert pipe not in {os.readlink(fd) for fd in fds.iterdir()}  # the fd was closed
    m.umount()



def test_protect_process_no_core_not_dumpable_private_umask() -> None:
    """docs/INTERNALS.md, "Keys, keycheck…": `protect_process` (the first thing `run_mount`
    does) leaves no core dump, no ptrace or /proc access for other users, private files."""
    import sys

    code = ("import ctypes, os, resource; from s3encfs import hardening; "
            "hardening.protect_process(); "
            "print(oct(os.umask(0)), resource.getrlimit(resource.RLIMIT_CORE)[1], "
            "ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")  # 3: PR_GET_DUMPABLE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0o77", "0", "0"], out
