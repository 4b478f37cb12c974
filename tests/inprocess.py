"""An FsCore driven in process, without a kernel mount: the helpers the read-path tests and the
in-process benchmarks (bench/read_path.py, bench/s3ec_path.py) share."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from s3encfs.codec import IdentityCodec
from s3encfs.crypto.client_codec import ClientCodec
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store.s3 import ObjectStore

MiB = 1024 * 1024


def plain_or_client_core(endpoint: str, bucket: str, mode: str, cache: Path | str,
                         **cfg: Any) -> FsCore:
    """An FsCore over `bucket` on the crt client: `mode` "none" (or "plain") or "client" (a
    fixed test master key); no upload delay unless `cfg` says otherwise."""
    store = ObjectStore(bucket, endpoint_url=endpoint, s3_client="crt")
    codec: Any = IdentityCodec() if mode in ("none", "plain") else ClientCodec(
        {"k1": bytes(range(32))}, "k1")
    return FsCore(store, codec, "", FsConfig(cache_dir=str(cache), **{"upload_delay": 0, **cfg}))


def run_core(core: FsCore, job: Callable[[FsCore], Awaitable[Any]], *, close: bool = True) -> Any:
    """trio.run the core's background tasks around `await job(core)`; its result."""
    out: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            out.append(await job(core))
            nursery.cancel_scope.cancel()

    trio.run(main)
    if close:
        core.close()
    return out[0]


def uploaded_random_file(s3server: Any, bucket: str, mode: str, tmp_path: Path,
                         monkeypatch: Any, size: int) -> bytes:
    """`size` random bytes written as "f" in the root of `bucket` by an in-process core of
    `mode` (its cache under tmp_path/"w"), until S3 has them; the server's credentials set in
    the environment for the cores the test makes next. Returns the bytes."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    data = os.urandom(size)
    run_core(plain_or_client_core(s3server.endpoint, bucket, mode, tmp_path / "w"),
             lambda c: write_file(c, "f", data))
    return data


async def write_file(core: FsCore, name: str, data: bytes, *, chunk: int = MiB) -> None:
    """Create `name` in the root, write `data` in `chunk` writes, close it and wait until S3 has
    it (flush_all)."""
    node = await core.create_file(core.root, name, 0o100644, 0, 0)
    await core.open(node, True)
    for off in range(0, len(data), chunk):
        await core.write(node, off, data[off:off + chunk])
    await core.release(node, True)
    await core.flush_all()
