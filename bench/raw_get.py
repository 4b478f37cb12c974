"""What the machine can download: awscrt GETs of one object into memory, side by side, through
the counting proxy (bench/latency.py at 0 ms, as every mount in `bench.run`) and direct.

    python -m bench.raw_get [--size 1G] [--rounds 2] [--cases meta16,ranges8x8,...] [--no-drop]

Starts its own loopback SeaweedFS (or `--endpoint URL`, credentials from the environment),
PUTs one random object, then for each case and path: drops the page cache (as `bench.run`
does before every cold mount, so the server reads its volume from disk too), GETs the whole
object and keeps every byte in memory (a `bytes` per body callback, as s3encfs's exchange
does). W7 measures awscrt file to file (its writes to disk included); this does not.

Cases (`P` = MiB):
- `metaP`: one GET_OBJECT meta request for the whole object, the client's part size P
  (aws-c-s3 splits it into parallel ranged parts itself);
- `rangesPxK`: K ranged GETs of P MiB in flight (a sliding window, DEFAULT requests: one
  HTTP request each, what s3fs's parallel ranges do);
- `splitPxK`: the same ranges as GET_OBJECT meta requests with a 32 MiB part size (what
  s3encfs's read-ahead sends: store/crt_calls.py `SPLIT_GET`, `GET_PART_BYTES`).

CPU is this process's (all threads, the CRT's event loops included; the server and the proxy
run in other processes: the proxy's CPU is printed beside).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.workloads import drop_caches

MIB = 1 << 20


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _client(endpoint: str, access: str, secret: str, part: int) -> Any:
    from awscrt import auth
    from awscrt import s3 as crt_s3

    provider = auth.AwsCredentialsProvider.new_static(access, secret)
    signing = crt_s3.create_default_s3_signing_config(region="us-east-1",
                                                      credential_provider=provider)
    return crt_s3.S3Client(region="us-east-1", tls_mode=crt_s3.S3RequestTlsMode.DISABLED,
                           signing_config=signing, part_size=part)


def _get(client: Any, host: str, path: str, rng: tuple[int, int] | None, meta: bool,
         sink: list[bytes]) -> Any:
    from awscrt import http
    from awscrt import s3 as crt_s3

    headers = http.HttpHeaders([("Host", host)])
    if rng is not None:
        headers.add("Range", f"bytes={rng[0]}-{rng[1] - 1}")
    kind = crt_s3.S3RequestType.GET_OBJECT if meta else crt_s3.S3RequestType.DEFAULT

    def on_body(chunk: Any, offset: int, **_: Any) -> None:
        sink.append(bytes(chunk))

    return client.make_request(type=kind, request=http.HttpRequest("GET", path, headers),
                               operation_name="GetObject", on_body=on_body)


CHUNKS = [0]  # body callbacks of the last case


def _whole(client: Any, host: str, path: str, size: int) -> int:
    sink: list[bytes] = []
    _get(client, host, path, None, True, sink).finished_future.result()
    CHUNKS[0] = len(sink)
    return sum(map(len, sink))


def _ranges(client: Any, host: str, path: str, size: int, part: int, inflight: int,
            meta: bool) -> int:
    todo = [(o, min(o + part, size)) for o in range(0, size, part)]
    sem = threading.Semaphore(inflight)
    sinks: list[list[bytes]] = []
    futures = []
    for r in todo:
        sem.acquire()
        sink: list[bytes] = []
        sinks.append(sink)
        req = _get(client, host, path, r, meta, sink)
        req.finished_future.add_done_callback(lambda _f: sem.release())
        futures.append(req.finished_future)
    for f in futures:
        f.result()
    CHUNKS[0] = sum(map(len, sinks))
    return sum(len(c) for s in sinks for c in s)


def run_case(case: str, endpoint: str, access: str, secret: str, bucket: str, key: str,
             size: int) -> tuple[float, float]:
    """(MB/s, CPU seconds) of one whole-object download."""
    host = endpoint.split("://", 1)[1]
    path = f"/{bucket}/{key}"
    if case.startswith("meta"):
        client = _client(endpoint, access, secret, int(case[4:]) * MIB)

        def go() -> int:
            return _whole(client, host, path, size)
    else:
        kind, spec = ("split", case[5:]) if case.startswith("split") else ("ranges", case[6:])
        p, k = (int(x) for x in spec.split("x"))
        client = _client(endpoint, access, secret, 32 * MIB)

        def go() -> int:
            return _ranges(client, host, path, size, p * MIB, k, kind == "split")
    c0, t0 = _cpu(), time.perf_counter()
    got = go()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    if got != size:
        raise RuntimeError(f"{case}: {got} of {size} bytes")
    return size / wall / 1e6, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cases", default="meta8,meta16,meta32,ranges8x4,ranges8x8,ranges8x16,"
                                       "ranges16x8,ranges32x4,split8x6,split8x8,split8x16")
    ap.add_argument("--paths", default="proxy,direct")
    ap.add_argument("--no-drop", action="store_true", help="keep the page cache (warm server)")
    ap.add_argument("--endpoint")
    args = ap.parse_args()
    size = int(float(args.size[:-1]) * {"M": MIB, "G": 1024 * MIB}[args.size[-1]])
    import boto3

    from bench.netpath import ProxyProcess
    from s3encfs.server import SeaweedS3

    with tempfile.TemporaryDirectory(prefix="s3encfs-rawget-") as tmp:
        server = None
        if args.endpoint:
            endpoint = args.endpoint
            access = os.environ["AWS_ACCESS_KEY_ID"]
            secret = os.environ["AWS_SECRET_ACCESS_KEY"]
        else:
            server = SeaweedS3(Path(tmp) / "srv")
            server.start()
            endpoint, access, secret = server.endpoint, server.access_key, server.secret_key
        proxy = ProxyProcess(endpoint.split("//", 1)[1], 0, Path(tmp) / "proxy.log").start()
        try:
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=access, aws_secret_access_key=secret)
            bucket, key = f"rawget-{os.getpid()}", "big.bin"
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key="warmup", Body=os.urandom(16 * MIB))
            from boto3.s3.transfer import TransferConfig

            body = os.urandom(size)
            import io

            s3.upload_fileobj(io.BytesIO(body), bucket, key,
                              Config=TransferConfig(multipart_chunksize=16 * MIB))
            del body
            paths = {"proxy": proxy.endpoint, "direct": endpoint}
            for rnd in range(args.rounds):
                for case in args.cases.split(","):
                    for name in args.paths.split(","):
                        if not args.no_drop:
                            drop_caches()
                        p0 = proxy.cpu_s() or 0.0
                        mbps, cpu = run_case(case, paths[name], access, secret, bucket, key,
                                             size)
                        pcpu = (proxy.cpu_s() or 0.0) - p0
                        per = cpu / (size / MIB) * 1000
                        print(f"round {rnd + 1} {case:12s} {name:6s} {mbps:7.0f} MB/s  "
                              f"client CPU {cpu:5.2f} s ({per:.2f} ms/MiB)  proxy CPU "
                              f"{pcpu:5.2f} s  {CHUNKS[0]} callbacks  load "
                              f"{os.getloadavg()[0]:.1f}", flush=True)
        finally:
            proxy.stop()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
