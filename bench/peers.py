"""The filesystems under test: how to mount each one cold, and how to make its writes durable.

Every peer mounts its own bucket with a fresh, empty cache directory on each `mount()`.
`unmount_durable()` returns only once everything written is in S3 (the per-FS rule is in
docs/BENCHMARKS.md); `abort()` is the last resort for a hung mount.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the repository's .venv, else (a git worktree without one) the venv running the bench
_REPO_VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
VENV_BIN = _REPO_VENV_BIN if _REPO_VENV_BIN.is_dir() else Path(sys.executable).parent
# the checkout this bench runs from: its s3encfs is the one measured, whatever the venv's
# editable install points at (a shared venv may have been installed from another worktree)
REPO = Path(__file__).resolve().parent.parent


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
    s3: Any  # a boto3 S3 client, always direct to the server (setup, checks; never counted)
    tag: str = ""  # appended to every peer's bucket name: one set of buckets per network set
    server_pid: int | None = None  # the S3 server's process (its CPU per workload)


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
    cpu_total: float = 0.0  # CPU seconds of every finished mount session of this peer
    fuse_total: int = 0  # FUSE requests of every durably unmounted session (if counts_fuse)
    counts_fuse: bool = False  # the daemon reports its FUSE requests (s3encfs `status`)

    def __post_init__(self) -> None:
        self.bucket += self.ctx.tag

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

    def before_unmount(self) -> None:
        """Read the session's counters while the daemon still runs (adds to `fuse_total`)."""

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
        self.before_unmount()
        self.wait_uploads(timeout)
        self.do_unmount(max(1.0, deadline - time.monotonic()))
        while self.proc is not None and not self._exited():
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: daemon still running {timeout}s after unmount")
            time.sleep(0.05)
        if self.sampler is not None:
            self.sampler.read()  # the exited (not yet reaped) daemon's final CPU and peak RSS
        if self.proc is not None:
            self.proc.poll()
        if is_mounted(self.mnt):
            raise BenchError(f"{self.name}: still mounted after unmount")
        return self._finish()

    def _exited(self) -> bool:
        """True once the daemon has exited; leaves it unreaped so /proc/PID/stat stays."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll() is not None
        return info is not None

    def _finish(self) -> int:
        peak = self.sampler.stop() if self.sampler else 0
        self.last_cpu_s = self.sampler.cpu_s if self.sampler else None
        self.cpu_total += self.last_cpu_s or 0.0
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
    """s3encfs, `--encryption none`, `client` or `s3ec` with a key from a temp keyring.

    s3ec uses a raw AES-256 keyring key (kind s3ec-aes, wrap AES/GCM): it is local like the
    client mode's master key, so the bench needs no KMS (moto) and measures the data path only —
    a KMS keyring would add KMS round trips (data keys) that only measure the KMS."""

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
        self.counts_fuse = True

    @property
    def exe(self) -> str:
        return str(VENV_BIN / "s3encfs")

    def proc_env(self) -> dict[str, str]:
        return {
            **super().proc_env(),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "S3ENCFS_KEYRING_DIR": str(self.base / "keyring"),
            "S3ENCFS_PASSPHRASE": "",
            "S3ENCFS_ALLOW_EMPTY_PASSPHRASE": "1",
        }

    def setup(self) -> None:
        super().setup()
        if self.encrypts and not (self.base / "keyring").exists():
            (self.base / "keyring").mkdir(mode=0o700)
            kind = ["--kind", "s3ec-aes"] if self.encryption == "s3ec" else []
            subprocess.run(
                [self.exe, "key", "create", "bench", *kind],
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

    def before_unmount(self) -> None:
        """Add this session's FUSE requests (`status` → `fuse_requests`) to `fuse_total`."""
        from s3encfs import control

        try:
            st = control.query(control.control_socket_path(str(self.mnt)), "status", timeout=10)
        except (OSError, control.ControlError):
            return
        self.fuse_total += sum(int(v) for v in st.get("fuse_requests", {}).values())

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
