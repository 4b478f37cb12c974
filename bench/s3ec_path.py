"""S3EC (or client mode) against plain in process (no FUSE): CPU and wall of a sequential write
until durable (W1's path: `FsCore.write` in 1 MiB calls as the kernel sends them to a mount,
`--chunk` to change it; release, `flush_all`) and of a cold sequential read
(W2's: `FsCore.read` in 128 KiB calls on a fresh cache), the modes alternating round by round.

    python -m bench.s3ec_path [--size 256M] [--rounds 3] [--modes plain,s3ec,client]
    S3ENCFS_PROFILE=w.prof S3ENCFS_PROFILE_CLOCK=cpu S3ENCFS_PROFILE_THREADS=1 \
        python -m bench.s3ec_path --modes client --rounds 1 --no-read   # cProfile of the write

Starts its own SeaweedFS on loopback. CPU is this process's (trio, worker threads, the CRT's
event loops; `time.process_time`), the server's is not counted. The mount's malloc settings
(`mount._fixed_mmap_threshold`) are applied first, as buffer costs depend on them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import inprocess

MiB = 1024 * 1024
KEK = bytes(range(32))


def _core(bucket: str, endpoint: str, cache: str, mode: str) -> Any:
    from s3encfs.codec import IdentityCodec
    from s3encfs.fs.core import FsConfig, FsCore
    from s3encfs.server import REGION
    from s3encfs.store.s3 import ObjectStore

    cfg = FsConfig(cache_dir=cache, upload_delay=0)
    args: dict[str, Any] = {"endpoint_url": endpoint, "region": REGION, "s3_client": "crt"}
    if mode == "plain":
        return FsCore(ObjectStore(bucket, **args), IdentityCodec(), "", cfg)
    if mode == "client":
        return inprocess.plain_or_client_core(endpoint, bucket, "client", cache)
    from s3encfs.crypto.s3ec_codec import S3ECCodec
    from s3encfs.crypto.s3ec_keyrings import AesKeyring, S3ECKeys
    from s3encfs.store.s3ec import S3ECStore

    store = S3ECStore(bucket, s3ec=S3ECKeys([AesKeyring("bench", KEK, {})]),
                      spool_dir=os.path.join(cache, "s3ec"), **args)
    return FsCore(store, S3ECCodec(), "", cfg)


def _timed(core: Any, job: Any) -> tuple[float, float, int]:
    """Wall and process CPU seconds of `job` run on `core`, and the S3 requests it made."""
    from s3encfs.profiling import run_profiled  # S3ENCFS_PROFILE=FILE: cProfile of the job

    w, c = time.perf_counter(), time.process_time()
    run_profiled(lambda: inprocess.run_core(core, job, close=False))
    w, c = time.perf_counter() - w, time.process_time() - c
    reqs = sum(core.store.stats.as_dict()["requests"].values())
    core.close()
    return w, c, reqs


def write(bucket: str, endpoint: str, mode: str, data: bytes, cache: str,
          chunk: int = MiB) -> dict[str, float]:
    core = _core(bucket, endpoint, cache, mode)
    w, c, reqs = _timed(core, lambda c: inprocess.write_file(c, "big", data, chunk=chunk))
    return {"w_s": round(w, 2), "w_cpu": round(c, 2), "w_reqs": reqs}


def read(bucket: str, endpoint: str, mode: str, data: bytes, cache: str) -> dict[str, float]:
    core = _core(bucket, endpoint, cache, mode)
    first: list[float] = []

    async def job(core: Any) -> None:
        node = await core.lookup(core.root, "big")
        off, t0 = 0, time.perf_counter()
        while off < len(data):
            got = await core.read(node, off, 128 * 1024)
            if not first:
                first.append(time.perf_counter() - t0)
            if got != data[off:off + len(got)]:
                raise SystemExit(f"{mode}: wrong bytes at {off}")
            off += len(got)

    w, c, reqs = _timed(core, job)
    return {"r_s": round(w, 2), "r_cpu": round(c, 2), "r_first_s": round(first[0], 2),
            "r_reqs": reqs}


def _size(text: str) -> int:
    unit = {"k": 1024, "m": MiB}.get(text[-1].lower())
    return int(float(text[:-1]) * unit) if unit else int(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="plain,s3ec")
    ap.add_argument("--no-read", action="store_true", help="the write only")
    ap.add_argument("--chunk", default="1M",
                    help="write call size (writes of 256K or less are made on the trio thread)")
    args = ap.parse_args()
    size = _size(args.size)
    chunk = _size(args.chunk)
    from s3encfs.mount import _fixed_mmap_threshold
    from s3encfs.server import REGION, SeaweedS3

    _fixed_mmap_threshold()
    import boto3

    with tempfile.TemporaryDirectory(prefix="s3encfs-s3ecpath-", dir="/var/tmp") as tmp:
        server = SeaweedS3(Path(tmp) / "srv")
        server.start()
        os.environ.update(server.env())
        try:
            s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
            data = os.urandom(size)
            for r in range(args.rounds):
                for mode in args.modes.split(","):
                    bucket = f"s3ecpath-{mode}-{r}"
                    s3.create_bucket(Bucket=bucket)
                    res = {"round": r, "mode": mode, "mib": size // MiB,
                           "load": round(os.getloadavg()[0], 1),
                           **write(bucket, server.endpoint, mode, data,
                                   os.path.join(tmp, f"w-{bucket}"), chunk),
                           **({} if args.no_read else
                              read(bucket, server.endpoint, mode, data,
                                   os.path.join(tmp, f"r-{bucket}")))}
                    print(res, flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
