"""Helpers to run real s3encfs mounts in tests (a subprocess per mount, like users run it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

S3ENCFS = [sys.executable, "-m", "s3encfs.cli"]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below `root`, keyed by its path relative to `root`."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def client_args(env: dict[str, str]) -> list[str]:
    """``--s3-client X`` when S3ENCFS_S3_CLIENT is set (run a mount suite under one library)."""
    name = env.get("S3ENCFS_S3_CLIENT") or os.environ.get("S3ENCFS_S3_CLIENT")
    return ["--s3-client", name] if name else []


class Mount:
    """One `s3encfs mount --foreground` process.  `start()` returns once the mount answers."""

    def __init__(self, source: str, mountpoint: Path, cache_dir: Path, env: dict[str, str],
                 *, encryption: str = "none", extra: list[str] | None = None,
                 log_path: Path | None = None):
        self.source = source
        self.mountpoint = Path(mountpoint)
        self.cache_dir = Path(cache_dir)
        self.env = env
        self.encryption = encryption
        self.extra = extra or []
        self.log_path = log_path or self.cache_dir.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [*S3ENCFS, "mount", self.source, str(self.mountpoint), "--foreground",
                "--cache-dir", str(self.cache_dir), "--encryption", self.encryption,
                "--upload-delay", "0.3", *client_args(self.env), *self.extra]

    def start(self, timeout: float = 180) -> Mount:
        # a harness wait, not a speed assertion: with xdist workers on a loaded 2-core machine a
        # mount process has taken over 60 s just to import and come up
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in umount/kill)
        self.proc = subprocess.Popen(self.argv(), env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode}: {self.read_log()}")
            if os.path.ismount(self.mountpoint):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mount did not come up: {self.read_log()}")

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def umount(self, timeout: float = 300) -> None:
        """`s3encfs umount`: returns when every pending upload is in S3."""
        if self.proc is None:
            return
        subprocess.run([*S3ENCFS, "umount", str(self.mountpoint)], env=self.env, check=True,
                       timeout=timeout, capture_output=True)
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc = None
            self.log.close()

    def flush(self, timeout: float = 120) -> None:
        """Upload everything pending now and return once S3 has it (the control socket's
        flush): what a test means by "let it reach S3", without a fixed sleep."""
        from s3encfs.control import control_socket_path, query
        query(control_socket_path(str(self.mountpoint)), "flush", timeout=timeout + 10,
              args={"timeout": timeout})

    def kill(self) -> None:
        """SIGKILL the mount process (crash), then clear the dead FUSE mount."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None
            self.log.close()
        subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.umount(timeout=120)
            except Exception:
                self.kill()
        elif os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)

    def __enter__(self) -> Mount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- fixtures (import them into a test module: `from mounting import mount_factory, keyenv`) ----
import pytest  # noqa: E402


@pytest.fixture
def keyenv(tmp_path_factory: pytest.TempPathFactory, s3env: dict[str, str]) -> dict[str, str]:
    """Environment with a fresh key store holding master key "default" (empty passphrase).

    `s3encfs key create` (a CLI start plus Argon2id: seconds on a loaded machine) runs once per
    session (per xdist worker); each test gets its own copy of that key store."""
    keydir = tmp_path_factory.mktemp("keys")
    env = dict(s3env, S3ENCFS_KEYRING_DIR=str(keydir), S3ENCFS_PASSPHRASE="",
               S3ENCFS_ALLOW_EMPTY_PASSPHRASE="1")
    template = tmp_path_factory.getbasetemp() / "keyring-template"
    if not template.is_dir():
        staging = tmp_path_factory.mktemp("keyring-staging")
        subprocess.run([*S3ENCFS, "key", "create", "default"],
                       env=dict(env, S3ENCFS_KEYRING_DIR=str(staging)), check=True,
                       capture_output=True)
        staging.rename(template)
    for f in template.iterdir():
        shutil.copy2(f, keydir / f.name)
    return env


@pytest.fixture
def mount_factory(tmp_path: Path, keyenv: dict[str, str]):  # type: ignore[no-untyped-def]
    """mount_factory(bucket, encryption="none"|"client"|..., name="m") -> started Mount."""
    mounts: list[Mount] = []

    def make(bucket: str, encryption: str = "none", *, name: str = "m",
             prefix: str = "", extra: list[str] | None = None, start: bool = True,
             env: dict[str, str] | None = None) -> Mount:
        source = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        m = Mount(source, tmp_path / f"{name}-mnt", tmp_path / f"{name}-cache", env or keyenv,
                  encryption=encryption, extra=extra, log_path=tmp_path / f"{name}.log")
        mounts.append(m)
        return m.start() if start else m

    yield make
    for m in mounts:
        m.stop()
