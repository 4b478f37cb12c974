"""moto's server standing in for AWS KMS (SeaweedFS has no KMS API a client can call).

moto's KMS enforces the encryption context on Decrypt like AWS does; keys live in the moto
process's memory only, so KMS-wrapped objects are readable only while it runs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_kms(log_dir: Path) -> Iterator[str]:
    """Start moto_server on loopback; yields its endpoint URL."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        import pytest

        pytest.skip("moto_server not installed")
    port = _free_port()
    with open(log_dir / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                            1):
                    break
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def kms_client(endpoint: str) -> Any:
    return boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def create_key(endpoint: str) -> str:
    return str(kms_client(endpoint).create_key()["KeyMetadata"]["KeyId"])
