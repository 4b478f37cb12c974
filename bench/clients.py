"""S3 client libraries side by side on one server: raw boto3, raw awscrt, and s3encfs's
`ObjectStore` on each (`--s3-client boto3|crt`).

    python -m bench.clients [--endpoint URL] [--puts 2000] [--small 14400] [--size 1G]

Without --endpoint it starts its own loopback SeaweedFS (s3encfs.server). Per client:
- small PUTs: `--puts` objects of `--small` bytes, 16 worker threads for the blocking clients,
  64 requests in flight for raw awscrt; PUT/s and client CPU per PUT (this process's user+system
  CPU, which includes the CRT's own threads; the server runs in another process);
- big: one `--size` object up and down in 16 MiB parts (8 in flight), MB/s and client CPU.
The source lives in memory (blocking clients) or on tmpfs (raw awscrt file transfer), so the
disk is not measured. `ceiling_crt` is also used by bench.run for the W7 ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MIB = 1 << 20
PART = 16 * MIB


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn()."""
    c0, t0 = cpu(), time.monotonic()
    fn()
    return time.monotonic() - t0, cpu() - c0


def crt_client(endpoint: str, access: str, secret: str, region: str = "us-east-1") -> Any:
    from awscrt import auth
    from awscrt import s3 as crt_s3

    provider = auth.AwsCredentialsProvider.new_static(access, secret)
    signing = crt_s3.create_default_s3_signing_config(region=region, credential_provider=provider)
    tls = (crt_s3.S3RequestTlsMode.ENABLED if endpoint.startswith("https")
           else crt_s3.S3RequestTlsMode.DISABLED)
    return crt_s3.S3Client(region=region, tls_mode=tls, signing_config=signing, part_size=PART)


def _crt_request(client: Any, host: str, method: str, path: str, *, body: bytes | None = None,
                 send_file: str | None = None, recv_file: str | None = None,
                 size: int = 0) -> Any:
    from awscrt import http
    from awscrt import s3 as crt_s3

    headers = http.HttpHeaders([("Host", host)])
    stream = None
    if body is not None:
        headers.add("Content-Length", str(len(body)))
        stream = io.BytesIO(body)
    elif send_file:
        headers.add("Content-Length", str(size))
    kind = {"GET": crt_s3.S3RequestType.GET_OBJECT, "PUT": crt_s3.S3RequestType.PUT_OBJECT}
    req = http.HttpRequest(method, path, headers, stream)
    return client.make_request(type=kind[method], request=req, send_filepath=send_file,
                               recv_filepath=recv_file,
                               on_body=None if recv_file or method != "GET" else (lambda **k: None))


def raw_crt_puts(endpoint: str, access: str, secret: str, bucket: str, n: int, body: bytes,
                 inflight: int = 64) -> None:
    host = endpoint.split("://", 1)[1]
    client = crt_client(endpoint, access, secret)
    sem = threading.Semaphore(inflight)
    futures = []
    for i in range(n):
        sem.acquire()
        r = _crt_request(client, host, "PUT", f"/{bucket}/crt/{i:06d}", body=body)
        r.finished_future.add_done_callback(lambda _f: sem.release())
        futures.append(r.finished_future)
    for f in futures:
        f.result()


def ceiling_crt(endpoint: str, access: str, secret: str, bucket: str, src: Path,
                dst: Path) -> tuple[float, float, float, float]:
    """awscrt's own parallel file transfer of `src` up and down: (up s, up CPU, down s, CPU)."""
    host = endpoint.split("://", 1)[1]
    client = crt_client(endpoint, access, secret)
    size = src.stat().st_size
    up = measure(lambda: _crt_request(client, host, "PUT", f"/{bucket}/crt-big.bin",
                                      send_file=str(src), size=size).finished_future.result())
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    down = measure(lambda: _crt_request(client, host, "GET", f"/{bucket}/crt-big.bin",
                                        recv_file=str(dst)).finished_future.result())
    if dst.stat().st_size != size:
        raise RuntimeError("awscrt download has the wrong size")
    return up[0], up[1], down[0], down[1]


def store_big(store: Any, key: str, data: bytes) -> tuple[tuple[float, float], tuple[float, float]]:
    parts = [(n + 1, s) for n, s in enumerate(range(0, len(data), PART))]
    mv = memoryview(data)

    def upload() -> None:
        uid = store.create_multipart(key, {})
        with ThreadPoolExecutor(8) as pool:
            etags = list(pool.map(
                lambda p: store.upload_part(key, uid, p[0], bytes(mv[p[1]:p[1] + PART])), parts))
        store.complete_multipart(key, uid, [(p[0], e) for p, e in zip(parts, etags, strict=True)])

    def download() -> None:
        with ThreadPoolExecutor(8) as pool:
            got = sum(pool.map(lambda p: len(store.get_range(key, p[1], p[1] + PART)), parts))
        if got != len(data):
            raise RuntimeError(f"store download got {got} of {len(data)} bytes")

    return measure(upload), measure(download)


def run(endpoint: str, access: str, secret: str, n: int, small: int, size: int) -> dict[str, Any]:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    from s3encfs.store.s3 import ObjectStore

    os.environ.setdefault("AWS_ACCESS_KEY_ID", access)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", secret)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=access, aws_secret_access_key=secret,
                      config=Config(max_pool_connections=64, s3={"addressing_style": "path"},
                                    request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    bucket = f"bench-clients-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(small)
    big = os.urandom(size)
    out: dict[str, Any] = {}

    def small_result(wall: float, c: float) -> dict[str, float]:
        return {"put_per_s": round(n / wall), "cpu_ms_per_put": round(c / n * 1000, 3)}

    def big_result(up: tuple[float, float], down: tuple[float, float]) -> dict[str, float]:
        return {"up_mbps": round(size / up[0] / 1e6), "up_cpu_s": round(up[1], 2),
                "down_mbps": round(size / down[0] / 1e6), "down_cpu_s": round(down[1], 2)}

    # raw boto3
    with ThreadPoolExecutor(16) as pool:
        w = measure(lambda: list(pool.map(
            lambda i: s3.put_object(Bucket=bucket, Key=f"boto3/{i:06d}", Body=body), range(n))))
    cfg = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=8)
    up = measure(lambda: s3.upload_fileobj(io.BytesIO(big), bucket, "boto3-big.bin", Config=cfg))
    sink = io.BytesIO()
    down = measure(lambda: s3.download_fileobj(bucket, "boto3-big.bin", sink, Config=cfg))
    if sink.getbuffer().nbytes != size:
        raise RuntimeError("boto3 download has the wrong size")
    out["raw boto3"] = {**small_result(*w), **big_result(up, down)}

    # raw awscrt
    w = measure(lambda: raw_crt_puts(endpoint, access, secret, bucket, n, body))
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        src = Path(tmp) / "src.bin"
        src.write_bytes(big)
        u, uc, d, dc = ceiling_crt(endpoint, access, secret, bucket, src, Path(tmp) / "dst.bin")
    out["raw awscrt"] = {**small_result(*w), **big_result((u, uc), (d, dc))}

    # the store on each client
    for client in ("boto3", "crt"):
        st = ObjectStore(bucket, endpoint_url=endpoint, region="us-east-1", s3_client=client)
        def puts(st: ObjectStore = st, client: str = client) -> None:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda i: st.put(f"store-{client}/{i:06d}", body,
                                               {"mode": "33188"}), range(n)))

        w = measure(puts)
        up, down = store_big(st, f"store-{client}-big.bin", big)
        out[f"s3encfs store ({client})"] = {**small_result(*w), **big_result(up, down)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint")
    ap.add_argument("--puts", type=int, default=2000)
    ap.add_argument("--small", type=int, default=14400)
    ap.add_argument("--size", type=int, default=1024 * MIB)
    args = ap.parse_args(argv)
    if args.endpoint:
        res = run(args.endpoint, os.environ["AWS_ACCESS_KEY_ID"],
                  os.environ["AWS_SECRET_ACCESS_KEY"], args.puts, args.small, args.size)
    else:
        from s3encfs.server import SeaweedS3

        with tempfile.TemporaryDirectory(prefix="s3encfs-bench-clients-", dir="/var/tmp") as d, \
                SeaweedS3(d) as server:
            res = run(server.endpoint, server.access_key, server.secret_key, args.puts,
                      args.small, args.size)
    print(f"{'client':28} {'PUT/s':>7} {'CPU/PUT ms':>10} {'up MB/s':>8} {'up CPU s':>8} "
          f"{'down MB/s':>9} {'down CPU s':>10}")
    for name, r in res.items():
        print(f"{name:28} {r['put_per_s']:>7} {r['cpu_ms_per_put']:>10} {r['up_mbps']:>8} "
              f"{r['up_cpu_s']:>8} {r['down_mbps']:>9} {r['down_cpu_s']:>10}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
