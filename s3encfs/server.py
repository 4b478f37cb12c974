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

The files and the command line are made by `s3encfs.seaweed_setup`; this module runs the
process, waits until it serves, stops it and hands out clients.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

# Re-exported: tests, benchmarks and the demo import these from here.
from s3encfs.seaweed_setup import (
    PORT_NAMES,
    REGION,
    ServerError,
    choose_ports,
    find_weed,
    parent_death_signal,
    sse_kek,
    weed_command,
    write_config,
    write_env_file,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["PORT_NAMES", "REGION", "SeaweedS3", "ServerError", "find_weed", "main",
           "parent_death_signal"]


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

    @property
    def pid(self) -> int | None:
        """The running server's process id (None before `start`)."""
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until S3 answers ListBuckets and accepts a write."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "data").mkdir(exist_ok=True)
        config = write_config(self.state_dir, self.access_key, self.secret_key)
        env = dict(os.environ)
        env["WEED_S3_SSE_KEK"] = sse_kek(self.state_dir)
        self.ports = choose_ports(self.state_dir)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        write_env_file(self.state_dir, self.env())
        self._log = open(self.state_dir / "weed.log", "ab")  # noqa: SIM115 - kept for process life
        self._proc = subprocess.Popen(
            weed_command(self.state_dir, self.ports, config),
            cwd=self.state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not weed directly
            preexec_fn=parent_death_signal() if self._die_with_parent else None,
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
