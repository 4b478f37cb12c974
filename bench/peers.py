"""The filesystems under test: how to mount each one cold, and how to make its writes durable.

Every peer mounts its own bucket with a fresh, empty cache directory on each `mount()`.
`unmount_durable()` returns only once everything written is in S3 (the per-FS rule is in
docs/BENCHMARKS.md); `abort()` is the last resort for a hung mount.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


class BenchError(Exception):
    """A step failed (mount did not appear, process died, upload never completed)."""


@dataclass
class Ctx:
    """What every peer needs: the S3 server, a scratch directory and its credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    env: dict[str, str]
    workdir: Path
    s3: Any  # a boto3 S3 client


def _mount_dev(mnt: Path) -> str | None:
    """The "major:minor" of the FUSE mount at `mnt` from mountinfo (never stat()s the mount)."""
    target = os.path.realpath(mnt)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts[4] == target and " - fuse" in line:
                return parts[2]
    return None


def is_mounted(mnt: Path) -> bool:
    return _mount_dev(mnt) is not None


def force_unmount(mnt: Path) -> None:
    """Abort the FUSE connection (unblocks processes stuck on it) and lazily unmount."""
    dev = _mount_dev(mnt)
    if dev is not None:
        minor = dev.split(":")[1]
        with contextlib.suppress(OSError):
            Path(f"/sys/fs/fuse/connections/{minor}/abort").write_text("1")
    for flags in (["-u"], ["-uz"]):
        if not is_mounted(mnt):
            return
        subprocess.run(
            ["fusermount3", *flags, str(mnt)], check=False, capture_output=True, timeout=30
        )


class RssSampler(threading.Thread):
    """Keeps the highest VmHWM (peak RSS, KiB) seen of one process until it exits."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.cpu_s = 0.0  # user+system CPU of the process at the last sample
        self._stop_evt = threading.Event()

    def read(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            with open(f"/proc/{self.pid}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        return self.peak_kib

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            self.read()

    def stop(self) -> int:
        self.read()
        self._stop_evt.set()
        return self.peak_kib


@dataclass
class Peer:
    """Base class: a FUSE daemon started in the foreground with Popen."""

    ctx: Ctx
    name: str
    bucket: str
    encrypts: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    sampler: RssSampler | None = field(default=None, repr=False)
    mounts: int = 0
    last_cpu_s: float | None = None  # CPU of the last mount session (sampled every 0.2 s)
    extra_args: list[str] = field(default_factory=list)  # per-workload mount flags (W6a)

    # -- paths ---------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        return self.ctx.workdir / self.name

    @property
    def mnt(self) -> Path:
        return self.base / "mnt"

    @property
    def cache_dir(self) -> Path:
        return self.base / "cache"

    # -- to override ---------------------------------------------------------------------
    def setup(self) -> None:
        """Create the bucket and any config files."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(self.ctx.s3.exceptions.BucketAlreadyOwnedByYou):
            self.ctx.s3.create_bucket(Bucket=self.bucket)

    def mount_cmd(self, bucket: str) -> list[str]:
        raise NotImplementedError

    def proc_env(self) -> dict[str, str]:
        return {**os.environ, **self.ctx.env}

    def wait_uploads(self, timeout: float) -> None:
        """Block until everything written so far is in S3 (before unmounting)."""

    def do_unmount(self, timeout: float) -> None:
        """Plain `fusermount3 -u`, retried while the mount is busy."""
        deadline = time.monotonic() + timeout
        while is_mounted(self.mnt):
            r = subprocess.run(
                ["fusermount3", "-u", str(self.mnt)],
                check=False,
                capture_output=True,
                timeout=max(1.0, min(timeout, 60)),
            )
            if r.returncode == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.5)

    def object_size_range(self, plain_size: int) -> tuple[int, int]:
        """Acceptable object sizes in the bucket for a file of `plain_size` bytes."""
        if not self.encrypts:
            return plain_size, plain_size
        return plain_size, int(plain_size * 1.01) + 4096

    # -- common --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def mount(self, bucket: str | None = None, timeout: float = 60) -> Path:
        """Mount cold: empty cache directory, new process, wait until the mount is there."""
        if self.proc is not None or is_mounted(self.mnt):
            self.abort()
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.cache_dir.mkdir(parents=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.mounts += 1
        log = open(self.base / f"mount-{self.mounts}.log", "wb")  # noqa: SIM115 (child owns it)
        self.proc = subprocess.Popen(
            self.mount_cmd(bucket or self.bucket),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.proc_env(),
            start_new_session=True,
        )
        log.close()
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: mount exited {self.proc.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.abort()
                raise BenchError(f"{self.name}: mount did not appear in {timeout}s")
            time.sleep(0.1)
        return self.mnt

    def log_tail(self, n: int = 600) -> str:
        try:
            return (self.base / f"mount-{self.mounts}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def unmount_durable(self, timeout: float = 600) -> int:
        """Wait for uploads, unmount, wait for the daemon to exit. Returns peak RSS in KiB."""
        deadline = time.monotonic() + timeout
        self.wait_uploads(timeout)
        self.do_unmount(max(1.0, deadline - time.monotonic()))
        while self.proc is not None and self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: daemon still running {timeout}s after unmount")
            time.sleep(0.05)
        if is_mounted(self.mnt):
            raise BenchError(f"{self.name}: still mounted after unmount")
        return self._finish()

    def _finish(self) -> int:
        peak = self.sampler.stop() if self.sampler else 0
        self.last_cpu_s = self.sampler.cpu_s if self.sampler else None
        self.proc = None
        self.sampler = None
        return peak

    def abort(self) -> None:
        """Kill the daemon and tear the mount down, whatever state it is in."""
        force_unmount(self.mnt)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        force_unmount(self.mnt)
        self._finish()


class S3encfsPeer(Peer):
    """s3encfs, `--encryption none` or `--encryption client` with a key from a temp keyring."""

    def __init__(self, ctx: Ctx, encryption: str, s3_client: str | None = None):
        tail = f"-{s3_client}" if s3_client else ""  # s3encfs-plain-boto3: a fixed data plane
        super().__init__(
            ctx,
            f"s3encfs-{'plain' if encryption == 'none' else encryption}{tail}",
            f"bench-s3encfs-{encryption}{tail}",
            encrypts=encryption != "none",
        )
        self.encryption = encryption
        self.s3_client = s3_client

    @property
    def exe(self) -> str:
        return str(VENV_BIN / "s3encfs")

    def proc_env(self) -> dict[str, str]:
        return {
            **super().proc_env(),
            "S3ENCFS_KEYRING_DIR": str(self.base / "keyring"),
            "S3ENCFS_PASSPHRASE": "",
            "S3ENCFS_ALLOW_EMPTY_PASSPHRASE": "1",
        }

    def setup(self) -> None:
        super().setup()
        if self.encrypts and not (self.base / "keyring").exists():
            (self.base / "keyring").mkdir(mode=0o700)
            subprocess.run(
                [self.exe, "key", "create", "bench"],
                env=self.proc_env(),
                check=True,
                capture_output=True,
                timeout=60,
            )

    def mount_cmd(self, bucket: str) -> list[str]:
        cmd = [
            self.exe,
            "mount",
            f"s3://{bucket}",
            str(self.mnt),
            "--endpoint-url",
            self.ctx.endpoint,
            "--cache-dir",
            str(self.cache_dir),
            "--foreground",
            "--encryption",
            self.encryption,
        ]
        if self.encrypts:
            cmd += ["--key", "bench"]
        if self.s3_client:
            cmd += ["--s3-client", self.s3_client]
        return cmd + shlex.split(os.environ.get("BENCH_S3ENCFS_ARGS", "")) + self.extra_args

    def do_unmount(self, timeout: float) -> None:
        """`s3encfs umount` returns once every pending upload is in S3."""
        r = subprocess.run(
            [self.exe, "umount", str(self.mnt)],
            check=False,
            capture_output=True,
            env=self.proc_env(),
            timeout=timeout,
        )
        if r.returncode != 0:
            raise BenchError(f"s3encfs umount failed: {r.stderr.decode(errors='replace')[-400:]}")


class S3fsPeer(Peer):
    """s3fs-fuse 1.90 with a local cache dir and its default multipart upload."""

    def __init__(self, ctx: Ctx):
        super().__init__(ctx, "s3fs", "bench-s3fs")

    def setup(self) -> None:
        super().setup()
        pw = self.base / "passwd"
        pw.write_text(f"{self.ctx.access_key}:{self.ctx.secret_key}\n")
        pw.chmod(0o600)

    def mount_cmd(self, bucket: str) -> list[str]:
        opts = ",".join(
            [
                f"url={self.ctx.endpoint}",
                "use_path_request_style",
                f"passwd_file={self.base / 'passwd'}",
                f"use_cache={self.cache_dir}",
                "endpoint=us-east-1",
            ]
        )
        return ["s3fs", bucket, str(self.mnt), "-f", "-o", opts]


class RclonePeer(Peer):
    """`rclone mount --vfs-cache-mode full` over an s3 remote; optionally through a crypt remote."""

    def __init__(self, ctx: Ctx, crypt: bool, rc_port: int):
        name = "rclone-crypt" if crypt else "rclone"
        super().__init__(ctx, name, f"bench-{name}", encrypts=crypt)
        self.crypt = crypt
        self.rc_port = rc_port

    @property
    def conf(self) -> Path:
        return self.base / "rclone.conf"

    def setup(self) -> None:
        super().setup()
        lines = [
            "[s3]",
            "type = s3",
            "provider = SeaweedFS",
            f"access_key_id = {self.ctx.access_key}",
            f"secret_access_key = {self.ctx.secret_key}",
            f"endpoint = {self.ctx.endpoint}",
            "region = us-east-1",
            "force_path_style = true",
            "",
        ]
        if self.crypt:
            pw = subprocess.run(
                [str(VENV_BIN / "rclone"), "obscure", os.urandom(16).hex()],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            lines += [
                "[crypt]",
                "type = crypt",
                f"remote = s3:{self.bucket}",
                f"password = {pw}",
                "",
            ]
        self.conf.write_text("\n".join(lines))
        self.conf.chmod(0o600)

    def mount_cmd(self, bucket: str) -> list[str]:
        remote = "crypt:" if self.crypt and bucket == self.bucket else f"s3:{bucket}"
        return [
            str(VENV_BIN / "rclone"),
            "mount",
            remote,
            str(self.mnt),
            "--config",
            str(self.conf),
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(self.cache_dir),
            "--rc",
            f"--rc-addr=127.0.0.1:{self.rc_port}",
            "--rc-no-auth",
            "--log-level",
            "NOTICE",
        ]

    def vfs_stats(self) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rc_port}/vfs/stats",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            result: dict[str, Any] = json.load(r)
            return result

    def wait_uploads(self, timeout: float) -> None:
        """Poll rclone's rc until the VFS upload queue is empty (twice in a row)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: uploads still pending after {timeout}s")
            dc = self.vfs_stats().get("diskCache", {})
            busy = int(dc.get("uploadsInProgress", 0)) + int(dc.get("uploadsQueued", 0))
            quiet = quiet + 1 if busy == 0 else 0
            time.sleep(0.25)

    def object_size_range(self, plain_size: int) -> tuple[int, int]:
        if not self.crypt:
            return plain_size, plain_size
        size = 32 + plain_size + 16 * math.ceil(plain_size / 65536)  # rclone crypt format
        return size, size
