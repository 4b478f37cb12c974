"""Uploads of small new files awaited on the trio thread, with no worker thread per request.

A first backup is thousands of small new files: each one's upload is one PUT of a body read
from its staging file. On the CRT data plane (`ObjectStore.awaitable_puts`) that PUT is awaited
through the CRT's completion callback (store/crt_async.py) instead of a ``trio.to_thread`` call
that parks a thread on it; the body (at most `SMALL` bytes, sealed segment by segment) is built
on the trio thread, which costs less than the thread hand-off it replaces.

Everything else (a file with a base object, multipart, --bwlimit, the boto3 client) goes through
`identity.upload_owned` on a worker thread as before, and so does the rare settling of a failed
precondition: a 412 or 404 answer to the fast PUT hands the job to `upload_owned`, which sends
it again under the same condition and then judges the object by its upload token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from functools import partial

import trio

from s3encfs.codec import Codec
from s3encfs.fs import identity
from s3encfs.fs.nodes import ObjectRef
from s3encfs.fs.uploader import Uploader, UploadJob
from s3encfs.store import errors as store_errors
from s3encfs.store.s3 import ObjectStore

SMALL = 1 << 20  # bodies up to this size are built on the trio thread


async def upload_owned(uploader: Uploader, store: ObjectStore, codec: Codec, job: UploadJob,
                       token: str, tokens: Collection[str],
                       on_round: Callable[[identity.Verdict], None] | None = None,
                       rel_key: Callable[[str], str] = str,
                       run: Callable[..., Awaitable[ObjectRef]] | None = None) -> ObjectRef:
    """`identity.upload_owned(...)`, awaited; a small new file's PUT needs no worker thread.
    `run(fn)` runs the threaded path (the filesystem passes its store-limited `run`)."""
    run = run or (lambda fn: trio.to_thread.run_sync(fn))
    threaded = partial(identity.upload_owned, uploader, store, codec, job, token, tokens,
                       on_round=on_round, rel_key=rel_key)
    body = uploader.small_body(job, SMALL) if store.awaitable_puts else None
    if body is None:
        return await run(threaded)
    try:
        etag = await store.aput(job.key, bytes(body), job.meta, **Uploader._conditions(job))
    except (store_errors.PreconditionFailed, store_errors.NotFound):
        if job.expect_any:
            raise
        return await run(threaded)  # settled by the object's identity
    return ObjectRef(job.key, etag, len(body), job.size, dict(job.meta))
