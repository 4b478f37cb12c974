"""In-process checks of the filesystem services (issue 11): no kernel mount, real SeaweedFS.

These drive `FsCore` directly, where an interleaving or a concurrency bound must be exact.
"""

from __future__ import annotations

import threading
import time

import trio

from s3encfs.codec import IdentityCodec
from s3encfs.fs.core import FsConfig, FsCore
from s3encfs.store.s3 import ObjectStore


def _core(bucket, s3server, monkeypatch, tmp_path, **cfg) -> FsCore:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=s3server.endpoint)
    return FsCore(store, IdentityCodec(), "", FsConfig(cache_dir=str(tmp_path / "cache"), **cfg))


# -- issue 11 item 4: worker threads that bypassed the store limiter -----------------------------
def test_uploads_stay_within_the_store_thread_limit(bucket, s3server, monkeypatch, tmp_path):
    """`s3_threads` bounds the worker threads that talk to S3.  Uploads went to a worker thread
    with trio's default limiter (40), so `upload_concurrency` uploads ran at once whatever
    `s3_threads` said.  Before the fix: 6 uploads in flight with s3_threads=2."""
    core = _core(bucket, s3server, monkeypatch, tmp_path, s3_threads=2, upload_concurrency=6,
                 upload_delay=0)
    lock = threading.Lock()
    inside = [0, 0]  # now, most
    real = core.uploader.upload

    def counted(job):  # type: ignore[no-untyped-def]
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        try:
            time.sleep(0.3)  # long enough for every upload the loop started to get here
            return real(job)
        finally:
            with lock:
                inside[0] -= 1

    core.uploader.upload = counted  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            core.start(nursery)
            for i in range(6):
                node = await core.create_file(core.root, f"f{i}", 0o100644, 0, 0)
                await core.open(node, True)
                await core.write(node, 0, b"x" * 1000)
                await core.release(node, True)
            with trio.fail_after(120):
                await core.flush_all()
            nursery.cancel_scope.cancel()

    trio.run(main)
    core.close()
    keys = {o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert {f"f{i}" for i in range(6)} <= keys
    assert inside[1] <= 2, f"{inside[1]} uploads in worker threads at once with s3_threads=2"
