"""rclone mount peers: `rclone`, `rclone-crypt` (a crypt remote over the s3 remote) and
`rclone-tuned` (`--transfers 32 --checkers 32`: rclone's concurrency raised for small files and
WAN latency; otherwise exactly `rclone`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.peers import VENV_BIN, BenchError, Ctx, Peer

TUNED = ["--transfers", "32", "--checkers", "32"]


class RclonePeer(Peer):
    """`rclone mount --vfs-cache-mode full` over an s3 remote; optionally through a crypt remote."""

    def __init__(self, ctx: Ctx, crypt: bool, rc_port: int, tuned: bool = False):
        name = "rclone-crypt" if crypt else "rclone-tuned" if tuned else "rclone"
        super().__init__(ctx, name, f"bench-{name}", encrypts=crypt)
        self.crypt = crypt
        self.tuned = tuned
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
            *(TUNED if self.tuned else []),
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
