"""The network path of one benchmark set: the latency proxy as a child process, and the per-workload
meter (S3 requests by kind, daemon CPU, FUSE requests) read around each workload.

The proxy runs as its own process (`python -m bench.latency`), so its CPU is measured apart from
the harness and it never shares a GIL with the W7 raw clients; `ProxyProcess.cpu_s()` is its
utime+stime from /proc/PID/stat.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def proc_cpu_s(pid: int) -> float | None:
    """utime+stime (children not included) of a live or zombie process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProxyProcess:
    """`python -m bench.latency` in front of `upstream`; `endpoint` is what clients use."""

    def __init__(self, upstream: str, rtt_ms: float, log_path: Path) -> None:
        self.upstream = upstream
        self.rtt_ms = rtt_ms
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.control = ""

    def start(self, timeout: float = 30) -> ProxyProcess:
        log = open(self.log_path, "w")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency", "--upstream", self.upstream,
             "--rtt-ms", str(self.rtt_ms)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not (self.endpoint and self.control):
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"latency proxy did not start (see {self.log_path})")
            key, _, value = line.strip().partition(" ")
            if key == "endpoint":
                self.endpoint = value
            elif key == "control":
                self.control = value
        return self

    def _call(self, path: str, post: bool = False) -> dict[str, Any]:
        req = urllib.request.Request(self.control + path, data=b"" if post else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            result: dict[str, Any] = json.load(r)
            return result

    def stats(self) -> dict[str, Any]:
        return self._call("/stats")

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    return {k: int(b.get(k, 0)) - int(a.get(k, 0)) for k in b}


class Meter:
    """Counts one workload: S3 requests by kind through the proxy, the FS daemon's CPU (every
    mount session of the workload, from `Peer.cpu_total`), s3encfs's FUSE requests."""

    def __init__(self, proxy: ProxyProcess | None, server_pid: int | None = None) -> None:
        self.proxy = proxy
        self.server_pid = server_pid  # the S3 server's process: its CPU over each workload
        self._start: dict[str, Any] = {}

    def begin(self, peer: Any) -> None:
        """(Re)start counting; a workload calls it again after its untimed preparation."""
        self._start = {
            "proxy": self._proxy_stats(),
            "proxy_cpu": self.proxy.cpu_s() if self.proxy else None,
            "cpu": peer.cpu_total,
            "fuse": peer.fuse_total,
            "server_cpu": proc_cpu_s(self.server_pid) if self.server_pid else None,
        }

    def _proxy_stats(self) -> dict[str, Any] | None:
        if self.proxy is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return self.proxy.stats()
        return None

    def end(self, peer: Any) -> dict[str, Any]:
        """What happened since `begin`: keys of `Result` (s3, s3_requests, cpu_s, …)."""
        out: dict[str, Any] = {}
        cpu = peer.cpu_total - self._start.get("cpu", peer.cpu_total)
        out["cpu_s"] = round(cpu, 2)
        if getattr(peer, "counts_fuse", False):
            out["fuse_requests"] = peer.fuse_total - self._start.get("fuse", 0)
        s0 = self._start.get("server_cpu")
        s1 = proc_cpu_s(self.server_pid) if self.server_pid else None
        if s0 is not None and s1 is not None:
            out["server_cpu_s"] = round(s1 - s0, 2)
        a, b = self._start.get("proxy"), self._proxy_stats()
        if a is not None and b is not None:
            kinds = _diff(a["requests"], b["requests"])
            total = sum(kinds.values())
            out["s3"] = {k: v for k, v in kinds.items() if v}
            out["s3_requests"] = total
            out["s3_mb_up"] = round((b["bytes_up"] - a["bytes_up"]) / 1e6, 1)
            out["s3_mb_down"] = round((b["bytes_down"] - a["bytes_down"]) / 1e6, 1)
            out["s3_connections"] = b["connections"] - a["connections"]
            if total:
                out["cpu_ms_per_req"] = round(cpu / total * 1000, 3)
            p0, p1 = self._start.get("proxy_cpu"), self.proxy.cpu_s() if self.proxy else None
            if p0 is not None and p1 is not None:
                out["proxy_cpu_s"] = round(p1 - p0, 2)
        return out
