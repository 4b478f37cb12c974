"""The read path in process (no FUSE): CPU per block GET, per cold 4 KiB random read, and a cold
sequential read through `FsCore.read`, with reads awaited on the CRT or on worker threads.

    python -m bench.read_path [--size 256M] [--mode plain|client] [--threaded] [--profile N]
                              [--timeline]

Starts its own SeaweedFS on loopback (`s3encfs.server.SeaweedS3`). `--threaded` forces the
worker-thread path (`awaitable_reads` False: what every read did before issue 16). CPU is the
process's (all threads: trio, workers, the CRT's event loops) from `time.process_time`; the
server runs in other processes and is not counted. `--endpoint URL` uses a running server
instead (e.g. bench/latency.py's proxy for a 20 ms RTT; credentials from the environment).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import inprocess

MiB = 1024 * 1024


def _size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units \
        else int(text)


def _store(bucket: str, endpoint: str) -> Any:
    from s3encfs.server import REGION
    from s3encfs.store.s3 import ObjectStore

    return ObjectStore(bucket, endpoint_url=endpoint, region=REGION, s3_client="crt")


def _core(bucket: str, endpoint: str, cache: str, mode: str, **cfg: Any) -> Any:
    from s3encfs.codec import IdentityCodec
    from s3encfs.crypto.client_codec import ClientCodec
    from s3encfs.fs.core import FsConfig, FsCore

    codec: Any = IdentityCodec() if mode == "plain" else ClientCodec(
        {"k1": bytes(range(32))}, "k1")
    return FsCore(_store(bucket, endpoint), codec, "", FsConfig(cache_dir=cache, **cfg))


def _cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def write_file(bucket: str, endpoint: str, mode: str, data: bytes, tmp: str) -> None:
    core = _core(bucket, endpoint, os.path.join(tmp, "w"), mode, upload_delay=0)
    inprocess.run_core(core, lambda c: inprocess.write_file(c, "big", data))


def block_gets(bucket: str, endpoint: str, n: int, threaded: bool) -> dict[str, float]:
    """n ranged GETs of 1 MiB, one at a time, awaited or through a worker thread."""
    st = _store(bucket, endpoint)
    body = os.urandom(16 * MiB)
    st.put("blocks/x", body, {})

    async def main() -> None:
        for i in range(n):
            a = (i % 16) * MiB
            if threaded:
                got = await trio.to_thread.run_sync(st.get_range, "blocks/x", a, a + MiB)
            else:
                got = await st.aget_range("blocks/x", a, a + MiB)
            assert len(got) == MiB

    wall, cpu, _ = _cpu(lambda: trio.run(main))
    return {"block_get_ms": round(wall / n * 1000, 3), "block_get_cpu_ms": round(cpu / n * 1000, 3)}


class Timeline:
    """Time-line of a cold sequential read: each GET (start, end, bytes) and each read's wait.
    Shows what bounds it: GETs in flight x each GET's own rate, and how long reads stall."""

    def __init__(self, core: Any) -> None:
        self.gets: list[tuple[float, float, int]] = []
        self.reads: list[float] = []
        real_get, real_read = core.store.aget_range, core.read

        async def aget_range(key: str, start: int, end: int, **kw: Any) -> bytes:
            t = time.perf_counter()
            got = await real_get(key, start, end, **kw)
            self.gets.append((t, time.perf_counter(), end - start))
            return got

        async def read(node: Any, off: int, size: int) -> bytes:
            t = time.perf_counter()
            got = await real_read(node, off, size)
            self.reads.append(time.perf_counter() - t)
            return got

        core.store.aget_range, core.read = aget_range, read

    def summary(self) -> dict[str, float]:
        if not self.gets:
            return {}
        span = max(e for _s, e, _n in self.gets) - min(s for s, _e, _n in self.gets)
        busy = sum(e - s for s, e, _n in self.gets)
        size = sum(n for _s, _e, n in self.gets)
        stalls = [w for w in self.reads if w > 0.002]
        return {"tl_gets_in_flight": round(busy / max(span, 1e-9), 2),
                "tl_get_mib": round(size / len(self.gets) / MiB, 1),
                "tl_get_ms": round(busy / len(self.gets) * 1000, 1),
                "tl_mbps_per_get": round(size / busy / 1e6),
                "tl_read_stalls": len(stalls), "tl_stall_s": round(sum(stalls), 2),
                "tl_read_s": round(sum(self.reads), 2)}


def reads(bucket: str, endpoint: str, mode: str, data: bytes, tmp: str, args: Any,
          prof: cProfile.Profile | None) -> dict[str, float]:
    out: dict[str, float] = {}
    # cold sequential: a new cache, reads of args.read_size in order (the kernel's requests)
    extra = {"download_concurrency": args.dl} if args.dl else {}
    core = _core(bucket, endpoint, os.path.join(tmp, "seq"), mode, **extra)
    timeline = Timeline(core) if args.timeline else None

    nodes: list[Any] = []

    async def seq() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.lookup(core.root, "big")
            nodes.append(node)
            off = 0
            while off < len(data):
                got = await core.read(node, off, args.read_size)
                if args.verify and got != data[off:off + args.read_size]:
                    raise SystemExit(f"wrong bytes at {off}")
                off += len(got)
            if args.warm:
                await warm(node)
            nursery.cancel_scope.cancel()

    async def warm(node: Any) -> None:
        """4 KiB reads at random offsets once every block is local (W3 after its prefetch):
        the read path's own CPU per read, FUSE excluded."""
        rng = random.Random(2)
        offs = [rng.randrange(0, len(data) - 4096) & ~4095 for _ in range(args.warm)]
        await core.read(node, offs[0], 4096)
        w, c = time.perf_counter(), time.process_time()
        for off in offs:
            got = await core.read(node, off, 4096)
            if args.verify and got != data[off:off + 4096]:
                raise SystemExit(f"wrong bytes at {off}")
        out.update(warm_read_us=round((time.perf_counter() - w) / len(offs) * 1e6, 1),
                   warm_read_cpu_us=round((time.process_time() - c) / len(offs) * 1e6, 1))

    if prof:
        prof.enable()
    wall, cpu, _ = _cpu(lambda: trio.run(seq))
    if prof:
        prof.disable()
    core.close()
    if args.ceiling:  # the same object in one GET split by aws-c-s3 (parallel 32 MiB parts)
        obj = nodes[0].obj
        w, c, _ = _cpu(lambda: core.store.get_range(obj.key, 0, obj.obj_size))
        out.update(raw_get_mbps=round(len(data) / w / 1e6), raw_get_cpu_s=round(c, 2))
    out.update(seq_mbps=round(len(data) / wall / 1e6), seq_cpu_s=round(cpu, 2),
               seq_cpu_ms_per_mib=round(cpu / (len(data) / MiB) * 1000, 2),
               seq_gets=core.store.stats.as_dict()["requests"].get("GetObject", 0),
               **(timeline.summary() if timeline else {}))
    # cold 4 KiB random reads, each in a block not read before (a cache too small for the
    # whole-file prefetch, so every read is the miss path: one 1-block GET)
    core = _core(bucket, endpoint, os.path.join(tmp, "rnd"), mode, cache_size=len(data))
    pblock = core.cfg.segs_per_block * core.seg.segment_size  # plaintext bytes per block
    nblocks = len(data) // pblock
    picks = random.Random(1).sample(range(nblocks), min(args.random, nblocks))

    async def rnd() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            node = await core.lookup(core.root, "big")
            for b in picks:
                off = min(b * pblock + 12345, len(data) - 4096)
                got = await core.read(node, off, 4096)
                if got != data[off:off + 4096]:
                    raise SystemExit(f"wrong bytes at {off}")
            nursery.cancel_scope.cancel()

    wall, cpu, _ = _cpu(lambda: trio.run(rnd))
    core.close()
    out.update(rand_read_ms=round(wall / len(picks) * 1000, 3),
               rand_read_cpu_ms=round(cpu / len(picks) * 1000, 3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=_size, default=256 * MiB)
    ap.add_argument("--mode", choices=["plain", "client"], default="plain")
    ap.add_argument("--threaded", action="store_true")
    ap.add_argument("--read-size", type=_size, default=128 * 1024)
    ap.add_argument("--random", type=int, default=200)
    ap.add_argument("--gets", type=int, default=200)
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--warm", type=int, default=0,
                    help="then N 4 KiB random reads with every block local (µs per read)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also GET the whole object at once (aws-c-s3's parallel parts)")
    ap.add_argument("--timeline", action="store_true",
                    help="time-line the sequential read: GETs in flight, their rate, read stalls")
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions (seq)")
    ap.add_argument("--endpoint")
    ap.add_argument("--rtt-ms", type=float, default=0.0,
                    help="put bench/latency.py of --proxy-tree between us and the server")
    ap.add_argument("--proxy-tree", default=str(Path(__file__).resolve().parent.parent),
                    help="the checkout whose bench/latency.py runs (default: this one)")
    ap.add_argument("--ra-window", type=int, help="fs.reader.RA_WINDOW (blocks)")
    ap.add_argument("--ra-get", type=int, help="fs.reader.RA_GET (blocks per read-ahead GET)")
    ap.add_argument("--dl", type=int, help="download_concurrency (read-ahead GETs in flight)")
    ap.add_argument("--split", type=_size, help="store.crt_calls.SPLIT_GET (GET_OBJECT from)")
    args = ap.parse_args()
    from s3encfs.fs import reader
    from s3encfs.store import crt_calls as crt

    if args.split:
        crt.SPLIT_GET = args.split

    if args.ra_window:
        reader.RA_WINDOW = args.ra_window
    if args.ra_get:
        reader.RA_GET = args.ra_get
    if args.threaded:
        from s3encfs.store.areads import StoreAwaitedReads

        StoreAwaitedReads.awaitable_reads = property(lambda self: False)  # type: ignore
    from s3encfs.server import SeaweedS3

    with tempfile.TemporaryDirectory(prefix="s3encfs-readpath-") as tmp:
        server = None
        if args.endpoint:
            endpoint = args.endpoint
        else:
            server = SeaweedS3(Path(tmp) / "srv")
            server.start()
            os.environ.update(server.env())
            endpoint = server.endpoint
        proxy = _latency(endpoint, args) if args.rtt_ms else None
        if proxy is not None:
            endpoint = proxy[1]
        try:
            import boto3

            from s3encfs.server import REGION

            bucket = f"readpath-{os.getpid()}"
            boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
                Bucket=bucket)
            data = os.urandom(args.size)
            write_file(bucket, endpoint, args.mode, data, tmp)
            prof = cProfile.Profile() if args.profile else None
            from s3encfs.fs import reader
            from s3encfs.store import crt_calls as crt

            res = {"mode": args.mode, "threaded": args.threaded, "size_mib": args.size // MiB,
                   "ra": (reader.RA_WINDOW, reader.RA_GET, args.dl or 8),
                   "split_mib": crt.SPLIT_GET / MiB,
                   **block_gets(bucket, endpoint, args.gets, args.threaded),
                   **reads(bucket, endpoint, args.mode, data, tmp, args, prof)}
            print(res)
            if prof:
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
        finally:
            if proxy is not None:
                proxy[0].terminate()
                proxy[0].wait(10)
            if server is not None:
                server.stop()


def _latency(upstream: str, args: Any) -> tuple[subprocess.Popen[str], str]:
    """bench/latency.py from another tree, as its own process (its CPU is not ours)."""
    host = upstream.split("//", 1)[-1]
    p = subprocess.Popen([sys.executable, "-m", "bench.latency", "--upstream", host,
                          "--rtt-ms", str(args.rtt_ms)], cwd=args.proxy_tree,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("endpoint "):
            threading.Thread(target=p.stdout.read, daemon=True).start()  # keep it drained
            return p, line.split()[1]
    raise SystemExit("latency proxy did not start")


if __name__ == "__main__":
    main()
