"""What can any client push into this SeaweedFS, and through the counting proxy? W1's ceiling.

    python -m bench.upload_ceiling [--size 1G] [--via direct,proxy] [--only NAME,…] [--rtt 0]

Starts its own loopback SeaweedFS (and `bench.latency` at `--rtt` ms for `--via proxy`), then
uploads the same `--size` of random bytes once per variant:

- `crt-file pP cC`: awscrt's own PUT_OBJECT of a file (aws-c-s3 splits it into P MiB parts and
  sends up to C at once; C 0 = its default for the throughput target) — W7's awscrt ceiling;
- `crt-mem pP nN`: a multipart upload made by hand as s3encfs makes it (create, N UploadParts of
  P MiB in flight from `bytes` in memory, one DEFAULT request each, complete);
- `filer`: one HTTP PUT of the file straight to SeaweedFS's filer (no S3 gateway, no SigV4):
  what the server stores when the S3 layer is not in the way;
- `disk`: `dd` of the file to the scratch disk with `conv=fdatasync` (the disk tier's rate).

Per variant: wall seconds, MB/s (10^6 B/s), this process's CPU (all threads, the CRT's too),
the SeaweedFS process's CPU and the proxy's over the upload. Every variant reads its source from
the page cache (warmed before), so the source disk is not measured; the machine's two cores are
shared by client, proxy and server, so `cpu total / wall` near 2.0 means CPU-bound.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1 << 20
DEFAULT_VARIANTS = [
    "crt-file p16 c0", "crt-file p8 c0", "crt-file p32 c0", "crt-file p8 c4", "crt-file p8 c8",
    "crt-file p16 c16", "crt-mem p8 n4", "crt-mem p8 n8", "crt-mem p16 n4", "crt-mem p16 n8",
    "crt-mem p32 n4", "filer", "disk",
]


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pid_cpu(pid: int | None) -> float:
    from bench.netpath import proc_cpu_s

    return (proc_cpu_s(pid) or 0.0) if pid else 0.0


def crt(endpoint: str, access: str, secret: str, part: int, conns: int) -> Any:
    from awscrt import auth
    from awscrt import s3 as crt_s3

    provider = auth.AwsCredentialsProvider.new_static(access, secret)
    signing = crt_s3.create_default_s3_signing_config(region="us-east-1",
                                                      credential_provider=provider)
    return crt_s3.S3Client(region="us-east-1", tls_mode=crt_s3.S3RequestTlsMode.DISABLED,
                           signing_config=signing, part_size=part,
                           max_active_connections_override=conns or None)


def _request(client: Any, host: str, method: str, path: str, *, body: bytes | None = None,
             file: str | None = None, size: int = 0, put_object: bool = False) -> bytes:
    """One request to its end; the response body (DEFAULT requests) or b""."""
    from awscrt import http
    from awscrt import s3 as crt_s3

    headers = http.HttpHeaders([("Host", host)])
    stream = None
    if body is not None:
        headers.add("Content-Length", str(len(body)))
        stream = io.BytesIO(body)
    elif file:
        headers.add("Content-Length", str(size))
    elif method in ("PUT", "POST"):
        headers.add("Content-Length", "0")
    out = bytearray()
    status: list[int] = []
    kind = crt_s3.S3RequestType.PUT_OBJECT if put_object else crt_s3.S3RequestType.DEFAULT
    req = client.make_request(
        type=kind, request=http.HttpRequest(method, path, headers, stream), send_filepath=file,
        operation_name=None if put_object else method,
        on_headers=lambda status_code, headers, **_: status.append(status_code),
        on_body=lambda chunk, **_: out.extend(chunk))
    req.finished_future.result()
    return bytes(out)


def crt_file(endpoint: str, creds: tuple[str, str], bucket: str, src: Path, part: int,
             conns: int) -> None:
    client = crt(endpoint, *creds, part, conns)
    _request(client, endpoint.split("://", 1)[1], "PUT", f"/{bucket}/file-{part}-{conns}",
             file=str(src), size=src.stat().st_size, put_object=True)


def crt_mem(endpoint: str, creds: tuple[str, str], bucket: str, data: bytes, part: int,
            inflight: int) -> None:
    """Create, parts from memory with `inflight` at once, complete: s3encfs's shape."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    client = crt(endpoint, *creds, 32 * MIB, 0)
    host = endpoint.split("://", 1)[1]
    key = f"/{bucket}/mem-{part}-{inflight}"
    xml = _request(client, host, "POST", key + "?uploads")
    m = re.search(rb"<UploadId>([^<]+)</UploadId>", xml)
    assert m, xml[:200]
    uid = m.group(1).decode()
    etags: dict[int, str] = {}
    view = memoryview(data)

    def send(n: int) -> None:
        off = (n - 1) * part
        body = bytes(view[off:off + part])  # as s3encfs joins a part's segments into one bytes
        got: list[str] = []
        from awscrt import http
        from awscrt import s3 as crt_s3

        h = http.HttpHeaders([("Host", host), ("Content-Length", str(len(body)))])
        req = client.make_request(
            type=crt_s3.S3RequestType.DEFAULT, operation_name="UploadPart",
            request=http.HttpRequest("PUT", f"{key}?partNumber={n}&uploadId={uid}", h,
                                     io.BytesIO(body)),
            on_headers=lambda headers, **_: got.extend(
                v for k, v in headers if k.lower() == "etag"))
        req.finished_future.result()
        etags[n] = got[0]

    count = -(-len(data) // part)
    with ThreadPoolExecutor(inflight) as pool:
        list(pool.map(send, range(1, count + 1)))
    body = ("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etags[n]}</ETag></Part>"
        for n in range(1, count + 1)) + "</CompleteMultipartUpload>").encode()
    _request(client, host, "POST", f"{key}?uploadId={uid}", body=body)


def filer_put(filer: str, src: Path) -> None:
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(src),
                    f"{filer}/ceiling/filer.bin"], check=True)


def disk_write(src: Path, scratch: Path) -> None:
    dst = scratch / "disk.bin"
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fdatasync", "status=none"],
                   check=True)
    dst.unlink()


def measure(fn: Callable[[], Any], pids: dict[str, int | None]) -> dict[str, float]:
    before = {k: pid_cpu(p) for k, p in pids.items()}
    c0, t0 = self_cpu(), time.monotonic()
    fn()
    wall, cpu = time.monotonic() - t0, self_cpu() - c0
    out = {"s": round(wall, 2), "client_cpu": round(cpu, 2)}
    out.update({f"{k}_cpu": round(pid_cpu(p) - before[k], 2) for k, p in pids.items()})
    return out


def run_variant(name: str, ctx: dict[str, Any], via: str) -> dict[str, float]:
    endpoint = ctx["proxy"] if via == "proxy" else ctx["endpoint"]
    creds, bucket, src, data = ctx["creds"], ctx["bucket"], ctx["src"], ctx["data"]
    kind, *opts = name.split()
    arg = {o[0]: int(o[1:]) for o in opts}
    fn: Callable[[], Any]
    if kind == "crt-file":
        def fn() -> None:
            crt_file(endpoint, creds, bucket, src, arg["p"] * MIB, arg["c"])
    elif kind == "crt-mem":
        def fn() -> None:
            crt_mem(endpoint, creds, bucket, data, arg["p"] * MIB, arg["n"])
    elif kind == "filer":
        def fn() -> None:
            filer_put(ctx["filer"], src)
    elif kind == "disk":
        def fn() -> None:
            disk_write(src, ctx["scratch"])
    else:
        raise SystemExit(f"unknown variant {name!r}")
    res = measure(fn, {"server": ctx["server_pid"], "proxy": ctx.get("proxy_pid")})
    res["mbps"] = round(len(data) / res["s"] / 1e6, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upload_ceiling",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--via", default="direct,proxy")
    ap.add_argument("--only", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--rtt", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    unit = {"G": 1 << 30, "M": MIB}
    size = int(float(args.size[:-1]) * unit[args.size[-1]]) if args.size[-1] in unit \
        else int(args.size)

    import boto3

    from bench.netpath import ProxyProcess
    from s3encfs.server import REGION, SeaweedS3

    with tempfile.TemporaryDirectory(prefix="s3encfs-upceil-", dir="/var/tmp") as tmp:
        scratch = Path(tmp)
        src = scratch / "src.bin"
        data = os.urandom(size)
        src.write_bytes(data)
        server = SeaweedS3(scratch / "srv")
        server.start()
        proxy = None
        try:
            s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                              aws_access_key_id=server.access_key,
                              aws_secret_access_key=server.secret_key)
            s3.create_bucket(Bucket="ceiling")
            s3.put_object(Bucket="ceiling", Key="warmup", Body=os.urandom(16 * MIB))
            ctx: dict[str, Any] = {
                "endpoint": server.endpoint, "creds": (server.access_key, server.secret_key),
                "bucket": "ceiling", "src": src, "data": data, "scratch": scratch,
                "filer": f"http://127.0.0.1:{server.ports['filer']}",
                "server_pid": server._proc.pid if server._proc else None,
            }
            if "proxy" in args.via:
                proxy = ProxyProcess(server.endpoint.split("://", 1)[1], args.rtt,
                                     scratch / "proxy.log").start()
                ctx["proxy"] = proxy.endpoint
                ctx["proxy_pid"] = proxy.proc.pid if proxy.proc else None
            for r in range(args.rounds):
                for name in args.only.split(","):
                    for via in args.via.split(","):
                        if name in ("filer", "disk") and via == "proxy":
                            continue
                        res = run_variant(name.strip(), ctx, via)
                        print(json.dumps({"round": r, "variant": name, "via": via,
                                          "load": round(os.getloadavg()[0], 1), **res}),
                              flush=True)
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
