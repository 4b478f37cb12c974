"""`make bench`: one SeaweedFS, five filesystems, workloads W1–W7, a table and a JSON file.

    python -m bench.run [--quick] [--size 1G] [--only s3encfs-plain,s3fs,...]
                        [--workloads W1,W2,...] [--memory] [--timeout 420]

Needs root (FUSE mounts, drop_caches). Every mount is torn down and the server stopped on exit,
including on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.peers import VENV_BIN, Ctx, Peer, RclonePeer, S3encfsPeer, S3fsPeer
from bench.workloads import (
    MEMORY,
    MIB,
    WORKLOADS,
    Plan,
    Result,
    Runner,
    ceiling,
    ceiling_awscrt,
    make_many,
)

ALL_PEERS = ["s3encfs-plain", "s3encfs-client", "s3fs", "rclone", "rclone-crypt"]
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
    if name == "s3fs":
        return S3fsPeer(ctx)
    if name in ("rclone", "rclone-crypt"):
        return RclonePeer(ctx, crypt=name == "rclone-crypt", rc_port=free_port())
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
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench needs root (FUSE mounts, drop_caches)")
    selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(selected) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    plan = build_plan(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    from s3encfs.server import SeaweedS3

    workdir = Path(tempfile.mkdtemp(prefix="s3encfs-bench-", dir="/var/tmp"))
    server = SeaweedS3(str(workdir / "seaweed"))
    peers: list[Peer] = []
    results: dict[str, dict[str, dict[str, Any]]] = {}
    t_start = time.monotonic()
    load_start = os.getloadavg()

    def put(w: str, peer: str, r: Result) -> None:
        results.setdefault(w, {})[peer] = r.to_json()

    try:
        log(f"starting SeaweedFS in {workdir}")
        server.start()
        ctx = Ctx(
            endpoint=server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            env=dict(server.env()),
            workdir=workdir,
            s3=server.client(),
        )
        if "W7" in selected:
            log("W7 ceiling (boto3)")
            for w, r in ceiling(ctx.s3, plan, workdir).items():
                put(w, "boto3", r)
                log(f"  {w}: {r.to_json()}")
            log("W7 ceiling (awscrt)")
            for w, r in ceiling_awscrt(ctx, plan, workdir).items():
                put(w, "awscrt", r)
                log(f"  {w}: {r.to_json()}")
        many_bucket = None
        if args.memory:
            log(f"creating {plan.mem_entries} objects for M2")
            secs = make_many(ctx.s3, "bench-many", plan.mem_entries)
            log(f"  made in {secs:.1f}s")
            many_bucket = "bench-many"
        not_ready = s3encfs_ready() if any(n.startswith("s3encfs") for n in names) else None
        for name in names:
            peer = make_peer(name, ctx)
            peers.append(peer)
            work = [w for w in selected if w != "W7"] + (MEMORY if args.memory else [])
            if name.startswith("s3encfs") and not_ready:
                for w in work:
                    put(w, name, Result(status="skipped", note=not_ready))
                continue
            log(f"peer {name}")
            try:
                peer.setup()
            except (subprocess.SubprocessError, OSError) as e:
                for w in work:
                    put(w, name, Result(status=f"error: setup: {e}"[:300]))
                continue
            runner = Runner(peer, plan, log)
            for w, r in runner.run_all(selected).items():
                put(w, name, r)
            if args.memory:
                for w, r in runner.run_memory(many_bucket).items():
                    put(w, name, r)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
    finally:
        for p in peers:
            if p.proc is not None:
                p.abort()
        log("stopping SeaweedFS")
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    peer_names = [p for p in names if any(p in r for r in results.values())]
    meta = {
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
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "argv": sys.argv[1:] if argv is None else argv,
        # other work on the machine skews every number; a load above the CPU count is a warning
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    report.write_json(args.json, meta, results, peer_names)
    print(report.render(results, peer_names))
    print(
        f"\nJSON: {args.json}   total {meta['elapsed_s']}s   "
        f"load average start/end: {load_start[0]:.1f}/{os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
