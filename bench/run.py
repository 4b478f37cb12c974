"""`make bench`: one SeaweedFS, six filesystems, workloads W1–W7, a table and a JSON file.

    python -m bench.run [--quick] [--size 1G] [--only s3encfs-plain,s3fs,...]
                        [--workloads W1,W2,...] [--memory] [--timeout 420] [--rtt 0,20]

Each `--rtt` value is one set: every mount and the W7 raw clients reach S3 through
`bench.latency` with that round-trip time (0: loopback, still counting S3 requests; `direct`: no
proxy). Needs root (FUSE mounts, drop_caches). Every mount is torn down and the server stopped
on exit, including on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report
from bench.ceiling import ceiling, ceiling_awscrt, make_many
from bench.netpath import Meter, ProxyProcess
from bench.peer_rclone import RclonePeer
from bench.peers import VENV_BIN, Ctx, Peer, S3encfsPeer, S3fsPeer
from bench.workloads import MEMORY, MIB, WORKLOADS, Plan, Result, Runner

ALL_PEERS = ["s3encfs-plain", "s3encfs-client", "s3encfs-s3ec",
             "s3fs", "rclone", "rclone-tuned", "rclone-crypt"]
# the workloads of a set with latency (the issue's 20 ms targets, and the W7 ceiling): W3's
# psync random reads only measure one RTT per read for everyone, W4v and W6a are s3encfs-only
WAN_WORKLOADS = ["W1", "W2", "W4", "W5", "W6", "W7"]
SRC_CACHE = Path("/var/tmp/s3encfs-bench-src")  # random source files, generated once
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def random_file(size: int, tag: str) -> Path:
    """A file of random bytes on local disk, made once and reused by later runs."""
    SRC_CACHE.mkdir(parents=True, exist_ok=True)
    path = SRC_CACHE / f"{tag}-{size}.bin"
    if not path.exists() or path.stat().st_size != size:
        log(f"generating {size // MIB} MiB of random data in {path}")
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 4 * MIB))
                f.write(chunk)
                left -= len(chunk)
        tmp.rename(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def s3encfs_ready() -> str | None:
    """None when `s3encfs mount` is usable, else why not."""
    exe = VENV_BIN / "s3encfs"
    if not exe.exists():
        return "s3encfs not installed in .venv"
    r = subprocess.run([str(exe), "mount", "--help"], check=False, capture_output=True, timeout=60)
    return None if r.returncode == 0 else "`s3encfs mount --help` fails"


def make_peer(name: str, ctx: Ctx) -> Peer:
    for mode, label in (("none", "plain"), ("client", "client")):
        for lib in ("boto3", "crt"):  # e.g. s3encfs-plain-boto3: one data-plane library
            if name == f"s3encfs-{label}-{lib}":
                return S3encfsPeer(ctx, mode, lib)
    if name == "s3encfs-plain":
        return S3encfsPeer(ctx, "none")
    if name == "s3encfs-client":
        return S3encfsPeer(ctx, "client")
    if name == "s3encfs-s3ec":  # S3 Encryption Client format, raw-AES keyring (see S3encfsPeer)
        return S3encfsPeer(ctx, "s3ec")
    if name == "s3fs":
        return S3fsPeer(ctx)
    if name in ("rclone", "rclone-crypt", "rclone-tuned"):
        return RclonePeer(
            ctx, crypt=name == "rclone-crypt", rc_port=free_port(), tuned=name == "rclone-tuned"
        )
    raise SystemExit(f"unknown peer {name!r}; choose from {', '.join(ALL_PEERS)}")


def build_plan(args: argparse.Namespace) -> Plan:
    size = parse_size(args.size) if args.size else (64 * MIB if args.quick else 1024 * MIB)
    rand_size = 32 * MIB if args.quick else 256 * MIB
    tree = Path(args.tree or ("/usr/include/linux" if args.quick else "/usr/include"))
    return Plan(
        src=random_file(size, "src"),
        size=size,
        rand_src=random_file(rand_size, "rand"),
        rand_size=rand_size,
        fio_io_size=(8 if args.quick else 64) * MIB,
        fio_runtime=30 if args.quick else 60,
        tree=tree,
        timeout=args.timeout,
        mem_size=parse_size(args.mem_size)
        if args.mem_size
        else (4 if not args.quick else 2) * size,
        mem_entries=args.mem_entries or (10_000 if args.quick else 100_000),
    )



def parse_rtts(text: str) -> list[float | None]:
    """`--rtt 0,20` -> [0.0, 20.0]; `direct` (no proxy) -> None."""
    out: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            out.append(None if part == "direct" else float(part))
    if not out:
        raise SystemExit("--rtt needs at least one value")
    return out


def set_key(rtt: float | None) -> str:
    return "direct" if rtt is None else f"rtt{rtt:g}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB file, /usr/include/linux tree")
    ap.add_argument("--size", help="W1/W2 file size, e.g. 1G (default), 256M")
    ap.add_argument("--only", default=",".join(ALL_PEERS), help="comma-separated peers")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. W1,W2,W4")
    ap.add_argument(
        "--memory", action="store_true", help="also M1 (4x size write) and M2 (100k ls)"
    )
    ap.add_argument("--mem-size", help="M1 file size (default 4x --size)")
    ap.add_argument("--mem-entries", type=int, help="M2 directory size (default 100000)")
    ap.add_argument("--tree", help="directory for W4-W6 (default /usr/include)")
    ap.add_argument("--timeout", type=float, default=420, help="seconds per workload")
    ap.add_argument("--rtt", default="0", help="sets: RTTs in ms through bench.latency, "
                    "comma-separated; `direct` = no proxy (default 0)")
    ap.add_argument("--wan-workloads", default=",".join(WAN_WORKLOADS),
                    help="the workloads of sets with RTT > 0 (of those --workloads selects)")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return ap.parse_args(argv)


class BenchSet:
    """One network set: a proxy (or none), its own buckets and scratch, and its results."""

    def __init__(self, base: Ctx, rtt: float | None, first: bool) -> None:
        self.rtt = rtt
        self.key = set_key(rtt)
        self.first = first
        self.base = base
        self.proxy: ProxyProcess | None = None
        self.ctx = base
        self.results: dict[str, dict[str, dict[str, Any]]] = {}
        self.peers: list[Peer] = []
        self.info: dict[str, Any] = {"rtt_ms": rtt, "proxy": rtt is not None}

    def put(self, w: str, peer: str, r: Result) -> None:
        self.results.setdefault(w, {})[peer] = r.to_json()

    def start(self) -> None:
        workdir = self.base.workdir / self.key
        workdir.mkdir(parents=True, exist_ok=True)
        endpoint = self.base.endpoint
        if self.rtt is not None:
            upstream = self.base.endpoint.split("://", 1)[1]
            self.proxy = ProxyProcess(upstream, self.rtt, workdir / "proxy.log").start()
            endpoint = self.proxy.endpoint
            log(f"set {self.key}: latency proxy {endpoint} (RTT {self.rtt:g} ms)")
        self.ctx = replace(
            self.base, endpoint=endpoint, env={**self.base.env, "AWS_ENDPOINT_URL": endpoint},
            workdir=workdir, tag="" if self.first else f"-{self.key}",
        )  # fmt: skip

    def stop(self) -> None:
        for p in self.peers:
            if p.proc is not None:
                p.abort()
        if self.proxy is not None:
            with contextlib.suppress(OSError, ValueError):
                self.info["proxy_totals"] = self.proxy.stats()
            self.info["proxy_cpu_s"] = self.proxy.cpu_s()
            self.proxy.stop()

    def doc(self, names: list[str]) -> dict[str, Any]:
        peers = [p for p in names if any(p in r for r in self.results.values())]
        return {**self.info, "peers": peers, "results": self.results}


def boto3_via(ctx: Ctx) -> Any:
    """A boto3 client for `ctx.endpoint` (the proxy, in a set that has one)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=ctx.endpoint, aws_access_key_id=ctx.access_key,
        aws_secret_access_key=ctx.secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )  # fmt: skip


def run_ceiling(bs: BenchSet, plan: Plan, workdir: Path) -> None:
    """W7 through the set's path ("boto3", "awscrt"); in the 0 ms set also direct to the server
    ("boto3-direct", "awscrt-direct"): the difference is the proxy's own cost."""
    paths = [("", bs.ctx)]
    if bs.rtt == 0:
        paths.append(("-direct", bs.base))
    for suffix, ctx in paths:
        s3 = ctx.s3 if ctx is bs.base or bs.proxy is None else boto3_via(ctx)
        for client in ("boto3", "awscrt"):
            log(f"W7 ceiling ({client}{suffix})")
            try:
                got = (ceiling(s3, plan, workdir) if client == "boto3"
                       else ceiling_awscrt(ctx, plan, workdir))  # fmt: skip
            except Exception as e:  # a failed ceiling must not end the set
                got = {w: Result(status=f"error: {e}"[:300]) for w in ("W7up", "W7down")}
            for w, r in got.items():
                bs.put(w, f"{client}{suffix}", r)
                log(f"  {w}: {r.to_json()}")


TREE = ("W4", "W5", "W6", "W4v", "W6a")


def run_peer(bs: BenchSet, name: str, plan: Plan, work: list[str], extra: dict[str, Any]) -> None:
    """Set up one peer and run its workloads in this set (`extra`: memory, skip, not_ready)."""
    peer = make_peer(name, bs.ctx)
    bs.peers.append(peer)
    memory = MEMORY if extra["memory"] else []
    skipped = [w for w in work if w in TREE and name in extra["tree_failed"]]
    for w in skipped:
        note = "W4 failed or took > timeout/2 in an earlier set"
        bs.put(w, name, Result(status="skipped", note=note))
    work = [w for w in work if w not in skipped]
    if name.startswith("s3encfs") and extra["not_ready"]:
        for w in work + memory:
            bs.put(w, name, Result(status="skipped", note=extra["not_ready"]))
        return
    log(f"peer {name} ({bs.key})")
    try:
        peer.setup()
    except (subprocess.SubprocessError, OSError) as e:
        for w in work + memory:
            bs.put(w, name, Result(status=f"error: setup: {e}"[:300]))
        return
    runner = Runner(peer, plan, log, Meter(bs.proxy, bs.ctx.server_pid))
    for w, r in runner.run_all(work).items():
        bs.put(w, name, r)
    if memory:
        for w, r in runner.run_memory(extra["many_bucket"]).items():
            bs.put(w, name, r)


def tree_failures(sets: list[BenchSet], timeout: float) -> set[str]:
    """Peers whose W4 did not finish in an earlier set, or took over half the timeout there:
    with more latency it would only spend the whole timeout (s3fs: ~30 requests per file)."""
    return {
        p
        for bs in sets
        for p, r in bs.results.get("W4", {}).items()
        if r.get("status", "ok") not in ("ok", "skipped")
        or (r.get("status", "ok") == "ok" and (r.get("seconds") or 0) > timeout / 2)
    }


def run_set(bs: BenchSet, args: argparse.Namespace, plan: Plan, ctx_extra: dict[str, Any],
            earlier: list[BenchSet]) -> None:
    selected, names = ctx_extra["selected"], ctx_extra["names"]
    if bs.rtt:
        wan = {w.strip() for w in args.wan_workloads.split(",")}
        selected = [w for w in selected if w in wan]
    bs.info["workloads"] = selected
    if not selected:
        return
    bs.start()
    if "W7" in selected:
        run_ceiling(bs, plan, bs.ctx.workdir)
    work = [w for w in selected if w != "W7"]
    extra = {
        "memory": args.memory and bs.first,
        "many_bucket": ctx_extra["many_bucket"],
        "not_ready": ctx_extra["not_ready"],
        "tree_failed": tree_failures(earlier, args.timeout),
    }
    for name in names:
        if work or extra["memory"]:
            run_peer(bs, name, plan, work, extra)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench needs root (FUSE mounts, drop_caches)")
    selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(selected) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    rtts = parse_rtts(args.rtt)
    plan = build_plan(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    from s3encfs.server import SeaweedS3

    workdir = Path(tempfile.mkdtemp(prefix="s3encfs-bench-", dir="/var/tmp"))
    server = SeaweedS3(str(workdir / "seaweed"))
    sets: list[BenchSet] = []
    t_start = time.monotonic()
    load_start = os.getloadavg()
    try:
        log(f"starting SeaweedFS in {workdir}")
        server.start()
        base = Ctx(endpoint=server.endpoint, access_key=server.access_key,
                   secret_key=server.secret_key, env=dict(server.env()), workdir=workdir,
                   s3=server.client(), server_pid=server.pid)  # fmt: skip
        extra = {"selected": selected, "names": names, "many_bucket": None,
                 "not_ready": s3encfs_ready() if any(n.startswith("s3encfs") for n in names)
                 else None}  # fmt: skip
        if args.memory:
            log(f"creating {plan.mem_entries} objects for M2")
            log(f"  made in {make_many(base.s3, 'bench-many', plan.mem_entries):.1f}s")
            extra["many_bucket"] = "bench-many"
        for i, rtt in enumerate(rtts):
            bs = BenchSet(base, rtt, first=i == 0)
            sets.append(bs)
            try:
                run_set(bs, args, plan, extra, sets[:-1])
            finally:
                bs.stop()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
    finally:
        log("stopping SeaweedFS")
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = run_meta(args, plan, argv, t_start, load_start)
    docs = {bs.key: bs.doc(names) for bs in sets}
    report.write_json(args.json, meta, docs)
    print(report.render_sets(docs))
    print(
        f"\nJSON: {args.json}   total {meta['elapsed_s']}s   "
        f"load average start/end: {load_start[0]:.1f}/{os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    return 0


def run_meta(args: argparse.Namespace, plan: Plan, argv: list[str] | None, t_start: float,
             load_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "size": plan.size,
        "rand_size": plan.rand_size,
        "fio_io_size": plan.fio_io_size,
        "tree": str(plan.tree),
        "quick": args.quick,
        "memory": args.memory,
        "mem_size": plan.mem_size,
        "mem_entries": plan.mem_entries,
        "rtt": args.rtt,
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "argv": sys.argv[1:] if argv is None else argv,
        # other work on the machine skews every number; a load above the CPU count is a warning
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    sys.exit(main())
