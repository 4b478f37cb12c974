"""The workloads W1–W7 and the memory extras, run against one mounted peer at a time.

Each workload owns its mount sessions (cold = new process + empty cache + dropped page cache),
runs its commands under a deadline, and returns a `Result`; a hang becomes ``status="timeout"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.netpath import Meter
from bench.peers import BenchError, Peer

MIB = 1024 * 1024
WORKLOADS = ["W1", "W2", "W2b", "W3", "W4", "W5", "W6", "W4v", "W6a", "W7"]
MEMORY = ["M1", "M2"]


LAST: list[Any] = [0, ""]  # exit code and stderr of the last `run`
RSYNC_PARTIAL = (0, 23, 24)  # 23: some files/attrs not transferred, 24: vanished source files


def rsync_warning() -> str:
    """Summary of the last rsync's partial failure ('' if it exited 0)."""
    code, err = LAST
    if code == 0:
        return ""
    lines = [ln for ln in str(err).splitlines() if ln.startswith("rsync:")]
    first = re.sub(r'"[^"]*"', "PATH", lines[0]).removeprefix("rsync: ")[:120] if lines else ""
    return f"rsync exit {code}: {len(lines)} errors, e.g. {first}"


class WorkloadTimeout(Exception):
    pass


@dataclass
class Result:
    status: str = "ok"  # ok | timeout | error: <why> | skipped
    seconds: float | None = None
    mbps: float | None = None  # 10^6 bytes per second
    iops: float | None = None
    items: int | None = None
    peak_rss_mib: float | None = None
    cpu_s: float | None = None  # CPU seconds of the FS daemon over the workload's sessions
    note: str = ""
    # counted by the proxy over the workload (bench.netpath.Meter); absent without a proxy
    s3: dict[str, int] | None = None  # S3 requests by kind (GET, PUT, HEAD, LIST, …)
    s3_requests: int | None = None
    s3_mb_up: float | None = None
    s3_mb_down: float | None = None
    s3_connections: int | None = None
    cpu_ms_per_req: float | None = None  # daemon CPU / S3 requests
    fuse_requests: int | None = None  # s3encfs only: FUSE requests its `status` counted
    proxy_cpu_s: float | None = None  # the latency proxy's own CPU over the workload
    server_cpu_s: float | None = None  # the S3 server's (SeaweedFS) CPU over the workload
    durable_s: float | None = None  # W4: seconds from rsync's exit until durably unmounted
    warn: str = ""  # the workload finished but not cleanly (e.g. rsync exit 23)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class Plan:
    """Sizes and sources for one run."""

    src: Path  # random file of `size` bytes on local disk
    size: int
    rand_src: Path  # random file for W3
    rand_size: int
    fio_io_size: int
    fio_runtime: int
    tree: Path  # directory rsynced in W4–W6
    timeout: float  # per workload
    mem_size: int  # M1 file size
    mem_entries: int  # M2 directory size


def drop_caches() -> None:
    """Drop clean page cache, dentries and inodes (no sync: a hung FUSE mount must not block)."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3")


def run(
    cmd: list[str] | str, peer: Peer, timeout: float, ok_codes: tuple[int, ...] = (0,)
) -> tuple[float, str]:
    """Run a command (a string goes to bash with pipefail); returns (seconds, stdout).

    Exit codes in `ok_codes` count as success (exit code and stderr are kept in `LAST`).
    On timeout the command's process group is killed and the peer's mount is aborted, so a
    process stuck in the FUSE mount is released too.
    """
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
    t0 = time.monotonic()
    p = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        peer.abort()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.communicate(timeout=10)
        raise WorkloadTimeout(f"{argv[-1]!s:.80} after {timeout:.0f}s") from None
    elapsed = time.monotonic() - t0
    LAST[:] = [p.returncode, err.decode(errors="replace")]
    if p.returncode not in ok_codes:
        raise BenchError(
            f"{argv[-1]!s:.80} exited {p.returncode}: {err.decode(errors='replace')[-300:]}"
        )
    return elapsed, out.decode(errors="replace")


def list_sizes(peer: Peer, bucket: str | None = None) -> list[int]:
    sizes: list[int] = []
    pages = peer.ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket or peer.bucket)
    for page in pages:
        sizes += [o["Size"] for o in page.get("Contents", [])]
    return sizes


def verify_object(peer: Peer, plain_size: int) -> None:
    lo, hi = peer.object_size_range(plain_size)
    sizes = list_sizes(peer)
    if not any(lo <= s <= hi for s in sizes):
        raise BenchError(
            f"no object of size {lo}..{hi} in {peer.bucket} (have {sorted(sizes)[-5:]})"
        )


class Runner:
    """Runs the selected workloads for one peer, in dependency order."""

    def __init__(
        self, peer: Peer, plan: Plan, log: Callable[[str], None], meter: Meter | None = None
    ):
        self.peer = peer
        self.plan = plan
        self.log = log
        self.meter = meter
        self.have_big = False
        self.have_rand = False
        self.have_tree = False
        self.versioned_done_at = 0.0  # W4v's end: the time W6a's --as-of view shows

    def guarded(self, name: str, fn: Callable[[], Result]) -> Result:
        self.log(f"  {self.peer.name} {name} …")
        if self.meter is not None:
            self.meter.begin(self.peer)
        try:
            res = fn()
        except WorkloadTimeout as e:
            res = Result(status="timeout", note=str(e))
        except (BenchError, subprocess.SubprocessError, OSError) as e:
            res = Result(status=f"error: {e}"[:400])
        finally:
            if self.peer.proc is not None:
                self.peer.abort()
        if self.meter is not None:
            for key, value in self.meter.end(self.peer).items():
                setattr(res, key, value)
        self.log(f"  {self.peer.name} {name}: {res.to_json()}")
        return res

    def run_all(self, selected: list[str]) -> dict[str, Result]:
        out: dict[str, Result] = {}
        if {"W1", "W2", "W2b"} & set(selected):
            res = self.guarded("W1", self.w1)
            if "W1" in selected:
                out["W1"] = res
        if {"W2", "W2b"} & set(selected):
            if self.have_big:
                w2 = self.guarded("W2", self.w2)
                out["W2"], out["W2b"] = w2, getattr(self, "_w2b", Result(status="skipped"))
            else:
                out["W2"] = out["W2b"] = Result(status="skipped", note="W1 failed")
            for k in ("W2", "W2b"):
                if k not in selected:
                    out.pop(k, None)
        if "W3" in selected:
            out["W3"] = self.guarded("W3", self.w3)
        if {"W4", "W5", "W6"} & set(selected):
            res = self.guarded("W4", self.w4)
            if "W4" in selected:
                out["W4"] = res
            for k, fn in (("W5", self.w5), ("W6", self.w6)):
                if k in selected:
                    out[k] = (
                        self.guarded(k, fn)
                        if self.have_tree
                        else Result(status="skipped", note="W4 failed")
                    )
        versioned = [k for k in ("W4v", "W6a") if k in selected]
        if versioned and not self.peer.name.startswith("s3encfs"):
            out.update({k: Result(status="skipped", note="s3encfs only") for k in versioned})
        elif versioned:
            # W4 into a versioned bucket of its own: the peers' W4 buckets are not versioned,
            # so neither is ours (a versioned bucket's cost is this figure); W6a reads its
            # history
            res = self.guarded("W4v", self.w4v)
            if "W4v" in selected:
                out["W4v"] = res
            if "W6a" in selected:
                out["W6a"] = (self.guarded("W6a", self.w6a) if self.versioned_done_at
                              else Result(status="skipped", note="W4v failed"))
        return out

    def run_memory(self, many_bucket: str | None) -> dict[str, Result]:
        out = {"M1": self.guarded("M1", self.m1)}
        if many_bucket and not self.peer.encrypts:
            out["M2"] = self.guarded("M2", lambda: self.m2(many_bucket))
        else:
            out["M2"] = Result(status="skipped", note="needs objects written by this FS")
        return out

    # -- helpers ---------------------------------------------------------------------------
    def deadline(self) -> float:
        return time.monotonic() + self.plan.timeout

    def left(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WorkloadTimeout("deadline passed")
        return remaining

    def cold_mount(self, bucket: str | None = None) -> Path:
        drop_caches()
        return self.peer.mount(bucket)

    def durable_unmount(self, deadline: float) -> float:
        """Unmount with the peer's durable rule; returns peak RSS (MiB) of the session."""
        try:
            return self.peer.unmount_durable(self.left(deadline)) / 1024
        except subprocess.TimeoutExpired:
            raise WorkloadTimeout("unmount") from None
        except BenchError as e:
            if "pending" in str(e) or "still running" in str(e):
                raise WorkloadTimeout(str(e)) from None
            raise

    # -- workloads -------------------------------------------------------------------------
    def w1(self) -> Result:
        """Sequential write of the big file, until durable (write + durable unmount)."""
        dl = self.deadline()
        mnt = self.cold_mount()
        t0 = time.monotonic()
        run(["dd", f"if={self.plan.src}", f"of={mnt}/big.bin", "bs=1M"], self.peer, self.left(dl))
        rss = self.durable_unmount(dl)
        secs = time.monotonic() - t0
        verify_object(self.peer, self.plan.size)
        self.have_big = True
        return Result(seconds=secs, mbps=self.plan.size / secs / 1e6, peak_rss_mib=rss,
                      cpu_s=self.peer.last_cpu_s)

    def w2(self) -> Result:
        """Cold sequential read; then, same mount, page cache dropped, the warm read (W2b)."""
        dl = self.deadline()
        mnt = self.cold_mount()
        read = ["dd", f"if={mnt}/big.bin", "of=/dev/null", "bs=1M"]
        secs, _ = run(read, self.peer, self.left(dl))
        drop_caches()
        secs_b, _ = run(read, self.peer, self.left(dl))
        run(["cmp", str(self.plan.src), f"{mnt}/big.bin"], self.peer, self.left(dl))
        rss = self.durable_unmount(dl)
        self._w2b = Result(seconds=secs_b, mbps=self.plan.size / secs_b / 1e6, peak_rss_mib=rss)
        return Result(
            seconds=secs,
            mbps=self.plan.size / secs / 1e6,
            peak_rss_mib=rss,
            note="content verified with cmp",
        )

    def w3(self) -> Result:
        """Cold 4 KiB random reads with fio (psync, one job) on a file written beforehand."""
        if not self.have_rand:
            dl = self.deadline()
            mnt = self.cold_mount()
            run(["cp", str(self.plan.rand_src), f"{mnt}/rand.bin"], self.peer, self.left(dl))
            self.durable_unmount(dl)
            self.have_rand = True
            if self.meter is not None:
                self.meter.begin(self.peer)  # count the random reads, not the file's upload
        dl = self.deadline()
        mnt = self.cold_mount()
        runtime = int(min(self.plan.fio_runtime, self.left(dl) - 5))
        _, out = run(
            [
                "fio",
                "--name=r",
                "--rw=randread",
                "--bs=4k",
                f"--size={self.plan.rand_size}",
                f"--filename={mnt}/rand.bin",
                f"--io_size={self.plan.fio_io_size}",
                f"--runtime={runtime}",
                "--ioengine=psync",
                "--numjobs=1",
                "--direct=0",
                "--readonly",
                "--output-format=json",
            ],
            self.peer,
            self.left(dl),
        )
        job = json.loads(out[out.index("{") :])["jobs"][0]["read"]
        rss = self.durable_unmount(dl)
        return Result(
            seconds=job["runtime"] / 1000,
            iops=job["iops"],
            peak_rss_mib=rss,
            note=f"{job['io_bytes'] // 4096} reads",
        )

    def tree_count(self) -> int:
        return sum(len(d) + len(f) for _, d, f in os.walk(self.plan.tree))

    def w4(self) -> Result:
        """`rsync -a TREE/ MNT/inc/` until durable."""
        res = self._rsync_tree(self.peer.bucket)
        self.have_tree = True
        return res

    @property
    def versioned_bucket(self) -> str:
        return self.peer.bucket + "-ver"

    def w4v(self) -> Result:
        """W4 into a fresh bucket with versioning enabled (s3encfs only): the history W6a
        reads, and what backing up into a versioned bucket costs."""
        s3, bucket = self.peer.ctx.s3, self.versioned_bucket
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        res = self._rsync_tree(bucket)
        self.versioned_done_at = time.time()
        return res

    def _rsync_tree(self, bucket: str) -> Result:
        dl = self.deadline()
        mnt = self.cold_mount(bucket)
        t0 = time.monotonic()
        run(
            ["rsync", "-a", f"{self.plan.tree}/", f"{mnt}/inc/"],
            self.peer,
            self.left(dl),
            RSYNC_PARTIAL,
        )
        warn = rsync_warning()
        t_rsync = time.monotonic()
        rss = self.durable_unmount(dl)
        secs = time.monotonic() - t0
        durable = time.monotonic() - t_rsync
        n = self.tree_count()
        objects = len(list_sizes(self.peer, bucket))
        return Result(
            seconds=secs,
            items=n,
            peak_rss_mib=rss,
            cpu_s=self.peer.last_cpu_s,
            warn=warn,
            note=f"{n} entries, {objects} objects in bucket",
            durable_s=round(durable, 2),
        )

    def w5(self) -> Result:
        """Fresh mount, rsync the same tree again: time and items rsync thinks changed."""
        dl = self.deadline()
        mnt = self.cold_mount()
        secs, out = run(
            ["rsync", "-a", "--itemize-changes", f"{self.plan.tree}/", f"{mnt}/inc/"],
            self.peer,
            self.left(dl),
            RSYNC_PARTIAL,
        )
        warn = rsync_warning()
        lines = [ln for ln in out.splitlines() if ln.strip()]
        rss = self.durable_unmount(dl)
        return Result(
            seconds=secs,
            items=len(lines),
            peak_rss_mib=rss,
            warn=warn,
            note=("e.g. " + "; ".join(lines[:3]))[:200] if lines else "",
        )

    def w6(self) -> Result:
        """Fresh mount: stat every entry of the tree."""
        dl = self.deadline()
        mnt = self.cold_mount()
        secs, out = run(
            f"find '{mnt}/inc' -print0 | xargs -0 stat --format=%s | wc -l",
            self.peer,
            self.left(dl),
        )
        rss = self.durable_unmount(dl)
        return Result(seconds=secs, items=int(out.strip() or 0), peak_rss_mib=rss)

    def w6a(self) -> Result:
        """W6 through a read-only `--as-of` mount of the time W4v finished (s3encfs only), in
        W4v's versioned bucket. The view lists every version of the tree while the mount
        starts, so both it and a normal cold mount are timed from the mount command to the
        end of the walk."""
        if not self.peer.name.startswith("s3encfs") or not self.versioned_done_at:
            return Result(status="skipped", note="s3encfs only, after W4v")
        dl = self.deadline()
        times: dict[str, tuple[float, float]] = {}
        out = ""
        rss = 0.0
        for kind, extra in (("normal", []),
                            ("as-of", ["--as-of", f"@{self.versioned_done_at}"])):
            self.peer.extra_args = extra
            try:
                drop_caches()
                t0 = time.monotonic()
                mnt = self.peer.mount(self.versioned_bucket)
                up = time.monotonic() - t0
                secs, out = run(f"find '{mnt}/inc' -print0 | xargs -0 stat --format=%s | wc -l",
                                self.peer, self.left(dl))
                rss = self.durable_unmount(dl)
            finally:
                self.peer.extra_args = []
            times[kind] = (up, secs)
        (nu, nw), (au, aw) = times["normal"], times["as-of"]
        return Result(seconds=au + aw, items=int(out.strip() or 0), peak_rss_mib=rss,
                      note=f"as-of mount {au:.1f}s + walk {aw:.1f}s; normal mount {nu:.1f}s + "
                           f"walk {nw:.1f}s; ratio {(au + aw) / (nu + nw):.2f}")

    # -- memory extras ---------------------------------------------------------------------
    def m1(self) -> Result:
        """Write a big file (`mem_size`, from repeats of the source file) until durable."""
        dl = self.deadline()
        mnt = self.cold_mount()
        reps = max(1, self.plan.mem_size // self.plan.size)
        t0 = time.monotonic()
        run(
            f"for i in $(seq {reps}); do cat '{self.plan.src}'; done "
            f"| dd of='{mnt}/mem.bin' bs=1M iflag=fullblock",
            self.peer,
            self.left(dl),
        )
        rss = self.durable_unmount(dl)
        secs = time.monotonic() - t0
        verify_object(self.peer, reps * self.plan.size)
        return Result(
            seconds=secs,
            mbps=reps * self.plan.size / secs / 1e6,
            peak_rss_mib=rss,
            note=f"{reps * self.plan.size // MIB} MiB",
        )

    def m2(self, bucket: str) -> Result:
        """List a directory of `mem_entries` objects (made with boto3) through a cold mount."""
        dl = self.deadline()
        mnt = self.cold_mount(bucket)
        secs, out = run(f"ls -f '{mnt}/many' | grep -cvxE '[.]{{1,2}}'", self.peer, self.left(dl))
        rss = self.durable_unmount(dl)
        n = int(out.strip())  # entries other than . and .. (not every FS lists those)
        status = "ok" if n == self.plan.mem_entries else f"error: listed {n}"
        return Result(status=status, seconds=secs, items=n, peak_rss_mib=rss)
