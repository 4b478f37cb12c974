"""W7, the ceiling: the raw S3 clients (boto3's s3transfer, awscrt's S3Client) moving the big
file with no filesystem; and `make_many`, the M2 fixture."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.workloads import MIB, Plan, Result, drop_caches


def make_many(s3: Any, bucket: str, n: int, threads: int = 32) -> float:
    """Create `n` empty objects many/f000000… directly with boto3; returns seconds."""
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(Bucket=bucket, Key=f"many/f{i:07d}", Body=b""), range(n)
            )
        )
    return time.monotonic() - t0


def ceiling(s3: Any, plan: Plan, workdir: Path) -> dict[str, Result]:
    """W7: boto3/s3transfer upload and download of the big file (16 MiB parts, 10 threads)."""
    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(
        multipart_threshold=16 * MIB, multipart_chunksize=16 * MIB, max_concurrency=10
    )
    bucket = "bench-ceiling"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="warmup", Body=os.urandom(16 * MIB))  # volume growth
    t0 = time.monotonic()
    s3.upload_file(str(plan.src), bucket, "big.bin", Config=cfg)
    up = time.monotonic() - t0
    dst = workdir / "ceiling-download.bin"
    drop_caches()
    t0 = time.monotonic()
    s3.download_file(bucket, "big.bin", str(dst), Config=cfg)
    down = time.monotonic() - t0
    ok = dst.stat().st_size == plan.size
    dst.unlink()
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "big.bin"}, {"Key": "warmup"}]})
    return {
        "W7up": Result(seconds=up, mbps=plan.size / up / 1e6),
        "W7down": Result(
            status="ok" if ok else "error: size", seconds=down, mbps=plan.size / down / 1e6
        ),
    }


def ceiling_awscrt(ctx: Any, plan: Plan, workdir: Path) -> dict[str, Result]:
    """W7 with awscrt's S3Client (aws-c-s3's own parallel parts, 16 MiB): the best raw client
    on this machine for downloads, so the ceiling s3encfs is measured against."""
    from bench.clients import ceiling_crt

    bucket = "bench-ceiling"
    with contextlib.suppress(ctx.s3.exceptions.BucketAlreadyOwnedByYou):
        ctx.s3.create_bucket(Bucket=bucket)
    dst = workdir / "ceiling-crt-download.bin"
    drop_caches()
    up, _, down, _ = ceiling_crt(ctx.endpoint, ctx.access_key, ctx.secret_key, bucket,
                                 plan.src, dst)
    dst.unlink()
    ctx.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "crt-big.bin"}]})
    return {
        "W7up": Result(seconds=up, mbps=plan.size / up / 1e6),
        "W7down": Result(seconds=down, mbps=plan.size / down / 1e6),
    }
