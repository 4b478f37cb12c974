"""CRT requests awaited from trio without a worker thread.

`CrtClient` answers boto3-shaped calls by blocking a worker thread on each request's future;
with ``trio.to_thread`` that is a thread hand-off, two GIL switches and a wake-up of the trio
loop per request. Here the request is started on the trio thread and the CRT's completion
callback (it runs on one of the CRT's event-loop threads) hands the wake-up to trio with
``TrioToken.run_sync_soon``: no Python thread waits at all.

Behaves like the blocking path: the same headers, signing, aws-c-s3 retries, the read timeout
(a request that receives no byte for ``read_timeout`` seconds is cancelled and retried with
backoff) and the same botocore exceptions. The wait is shielded from trio cancellation, as a
``trio.to_thread.run_sync`` call is: a request that was sent always finishes (or fails) before
the caller hears of it, so nothing can land in S3 after its caller gave up on it.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from botocore.exceptions import ReadTimeoutError

from . import crt_wire as wire
from .crt import CrtClient


async def _finished(request: Any) -> None:
    """Return when the CRT request has finished (any outcome)."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_future: Any) -> None:  # on a CRT thread (or at once, if already done)
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass  # the trio loop has ended: nobody waits any more

    request.finished_future.add_done_callback(wake)
    await done.wait()


async def _once(client: CrtClient, op: str, method: str, host: str, path: str,
                headers: list[tuple[str, str]], body: bytes | None,
                split: bool) -> tuple[int, list[tuple[str, str]], bytes]:
    request, ex, idle_limit = client._start(op, method, host, path, headers, body, split)
    with trio.CancelScope(shield=True):  # like to_thread: a sent request is seen through
        while True:
            with trio.move_on_after(max(0.05, ex.last + idle_limit - time.monotonic())):
                await _finished(request)
                break
            if time.monotonic() - ex.last >= idle_limit:
                await trio.to_thread.run_sync(client._abandon, request)  # raises
    return client._result(op, method, request, ex)


async def send(client: CrtClient, op: str, method: str, bucket: str, key: str | None, *,
               query: str = "", headers: list[tuple[str, str]] | None = None,
               body: bytes | None = None,
               split: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
    """`CrtClient._send`, awaited: (status, headers, body)."""
    host, path = client._address(bucket, key, query)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _once(client, op, method, host, path, headers or [], body, split)
        except ReadTimeoutError:
            if attempt > client.max_retries:
                raise
            await trio.sleep(client.read_timeout_backoff(attempt))


async def put_object(client: CrtClient, *, Bucket: str, Key: str, Body: bytes = b"",
                     **params: Any) -> dict[str, Any]:
    """`CrtClient.put_object`, awaited (boto3's parameters and response dict)."""
    body = bytes(Body)
    checksum = wire.body_checksum(params, body)
    status, headers, _ = await send(client, "PutObject", "PUT", Bucket, Key,
                                    headers=wire.request_headers(params) + checksum, body=body)
    return wire.response_fields(status, headers)
