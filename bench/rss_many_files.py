"""Memory of a mount over many small files: rsync N files in, flush, read the mount process's
peak and current RSS (/proc/PID/status VmHWM/VmRSS); then a second, different N; again.

    python -m bench.rss_many_files [--files 50000] [--mode none|client] [--s3-client crt|boto3]
                                   [--keep-going]

One JSON line per round on stdout (files so far, seconds, VmHWM/VmRSS in MiB, the mount's node
count) and a summary line.  The issue's bar (issue 15 item 9): peak RSS after 50,000 files
<= 200 MiB and flat over a second 50,000.  Set S3ENCFS_TRACEMALLOC=1 to have `status` report
the top allocation sites (s3encfs/memstats.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mounting import S3ENCFS, Mount

from s3encfs.server import SeaweedS3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_tree(root: Path, files: int, seed: int, per_dir: int = 1000) -> None:
    """`files` files of 100-2,000 random bytes, `per_dir` to a directory."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        (d / f"f{i % per_dir:04d}.dat").write_bytes(rng.randbytes(rng.randint(100, 2000)))


def proc_mem(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = round(int(v.split()[0]) / 1024, 1)  # kB -> MiB
    return out


def status(m: Mount) -> dict:
    r = subprocess.run([*S3ENCFS, "status", str(m.mountpoint), "--json"], env=m.env,
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def flush(m: Mount) -> None:
    subprocess.run([*S3ENCFS, "flush", str(m.mountpoint)], env=m.env, check=True,
                   capture_output=True, timeout=1800)


def drop_kernel_caches() -> None:
    """The kernel forgets the dentries/inodes it can (FORGET reaches the mount)."""
    try:
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
    except OSError as exc:
        log(f"drop_caches not possible ({exc}); measuring without it")


def rsync_watched(m: Mount, pid: int, src: Path, dst: Path,
                  every: float) -> subprocess.CompletedProcess:
    """rsync `src` into `dst`; every `every` seconds (0: never) log the mount's RSS, node count
    and why its nodes are kept (`memory.kept`), to see when the table stops following the cap."""
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(["rsync", "-a", "--exclude=.complete", f"{src}/", str(dst)],
                             stdout=subprocess.DEVNULL, stderr=err, text=True)
        deadline = time.monotonic() + 3600
        while True:
            try:
                rc = p.wait(timeout=every or None)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    p.kill()
                    rc = p.wait()
                    break
                mem = status(m).get("memory") or {}
                log(f"{proc_mem(pid)} nodes {mem.get('nodes')} kept {mem.get('kept')} "
                    f"handed back {mem.get('nodes_handed_back')} "
                    f"dropped {mem.get('nodes_dropped_unseen')}")
        err.seek(0)
        return subprocess.CompletedProcess(p.args, rc, "", err.read())


def run(args: argparse.Namespace, work: Path, trees: list[Path]) -> dict:
    server = SeaweedS3(work / "seaweed")
    server.start()
    try:
        server.client().create_bucket(Bucket="rss")
        env = dict(os.environ, **server.env(), S3ENCFS_KEYRING_DIR=str(work / "keys"),
                   S3ENCFS_PASSPHRASE="", S3ENCFS_ALLOW_EMPTY_PASSPHRASE="1")
        if args.mode != "none":
            subprocess.run([*S3ENCFS, "key", "create", "default"], env=env, check=True,
                           capture_output=True)
        m = Mount("s3://rss", work / "mnt", work / "cache", env, encryption=args.mode,
                  extra=["--s3-client", args.s3_client], log_path=work / "mount.log")
        m.start()
        assert m.proc is not None
        pid = m.proc.pid
        rounds = []
        try:
            base = proc_mem(pid)
            log(f"mounted ({args.mode}, {args.s3_client}): {base}")
            for n, tree in enumerate(trees):
                t0 = time.monotonic()
                rs = rsync_watched(m, pid, tree, m.mountpoint / f"r{n}", args.sample_every)
                if rs.returncode:  # recorded, not fatal: the memory is still worth knowing
                    log(f"rsync exited {rs.returncode}: {rs.stderr[-2000:]}")
                t_rsync = time.monotonic() - t0
                flush(m)
                t_flush = time.monotonic() - t0
                mem = proc_mem(pid)
                st = status(m)
                drop_kernel_caches()
                time.sleep(2)
                after = proc_mem(pid)
                st2 = status(m)
                row = {"round": n + 1, "files": args.files * (n + 1),
                       "rsync_rc": rs.returncode, "rsync_s": round(t_rsync, 1),
                       "durable_s": round(t_flush, 1),
                       "hwm_mib": mem["VmHWM"], "rss_mib": mem["VmRSS"],
                       "nodes": st.get("nodes"), "rss_after_drop_mib": after["VmRSS"],
                       "nodes_after_drop": st2.get("nodes"), "memory": st.get("memory"),
                       "memory_after_drop": st2.get("memory")}
                rounds.append(row)
                print(json.dumps(row), flush=True)
        finally:
            m.stop()
        return {"mode": args.mode, "s3_client": args.s3_client, "files_per_round": args.files,
                "base_rss_mib": base["VmRSS"], "rounds": rounds}
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mode", default="none", choices=["none", "client"])
    p.add_argument("--s3-client", default="crt", choices=["crt", "boto3"])
    p.add_argument("--sample-every", type=float, default=30.0,
                   help="seconds between status samples during each rsync (0: none)")
    p.add_argument("--trees", type=Path, help="reuse generated trees here (made if missing)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3encfs-rss-") as tmp:
        work = Path(tmp)
        treedir = args.trees or work / "trees"
        trees = []
        for n in range(args.rounds):
            t = treedir / f"{args.files}-{n}"
            if not (t / ".complete").exists():
                log(f"making {args.files} files in {t}")
                make_tree(t, args.files, seed=n)
                (t / ".complete").write_text("")
            trees.append(t)
        summary = run(args, work, trees)
    hwm = [r["hwm_mib"] for r in summary["rounds"]]
    summary["peak_rss_mib"] = max(hwm)
    summary["growth_second_round_mib"] = round(hwm[-1] - hwm[0], 1) if len(hwm) > 1 else None
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
