"""CRT requests awaited from trio without a worker thread.

`CrtClient` answers boto3-shaped calls by blocking a worker thread on each request's future;
with ``trio.to_thread`` that is a thread hand-off, two GIL switches and a wake-up of the trio
loop per request. Here the request is queued to one long-lived submitter thread (aws-c-s3's
`make_request` can wait on its locks, and the trio thread is the one that answers FUSE), and
the CRT's completion callback (on one of the CRT's event-loop threads) hands the wake-up to
trio with ``TrioToken.run_sync_soon``: no thread per request, and no thread waits on one.

Behaves like the blocking path: the same headers, signing, aws-c-s3 retries, the read timeout
(a request that receives no byte for ``read_timeout`` seconds is cancelled and retried with
backoff) and the same botocore exceptions. The wait is shielded from trio cancellation, as a
``trio.to_thread.run_sync`` call is: a request that was sent always finishes (or fails) before
the caller hears of it, so nothing can land in S3 after its caller gave up on it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import trio
from botocore.exceptions import ReadTimeoutError

from . import crt_wire as wire
from .crt import CrtClient


class _Submitter:
    """One long-lived thread that starts CRT requests (`make_request` can wait on aws-c-s3's
    locks, and the trio thread also answers FUSE): the trio thread only queues a closure."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="crt-submit",
                                                    daemon=True)
                    self._thread.start()
        self._queue.put(fn)

    def _run(self) -> None:
        while True:
            self._queue.get()()


_SUBMITTER = _Submitter()


class _Pending:
    """One request in flight: set from the submitter thread, read on the trio thread."""

    __slots__ = ("error", "ex", "idle_limit", "request")

    def __init__(self) -> None:
        self.request: Any = None
        self.ex: Any = None
        self.idle_limit = 0.0
        self.error: BaseException | None = None


async def _once(client: CrtClient, op: str, method: str, host: str, path: str,
                headers: list[tuple[str, str]], body: bytes | None,
                split: bool) -> tuple[int, list[tuple[str, str]], bytes]:
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    p = _Pending()

    def wake(_future: Any = None) -> None:  # on a CRT thread or the submitter thread
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass  # the trio loop has ended: nobody waits any more

    def start() -> None:  # on the submitter thread
        try:
            p.request, p.ex, p.idle_limit = client._start(op, method, host, path, headers,
                                                          body, split)
        except BaseException as exc:
            p.error = exc
            wake()
            return
        p.request.finished_future.add_done_callback(wake)

    _SUBMITTER.submit(start)
    started = time.monotonic()
    while not done.is_set():
        last = p.ex.last if p.ex is not None else started
        limit = p.idle_limit if p.ex is not None else client.read_timeout
        wait = max(0.05, last + limit - time.monotonic())
        # like to_thread: a sent request is seen through (shielded); one scope per wait holds
        # both the shield and the idle deadline (a scope each cost ~5 % of the trio thread
        # on an rsync of small files); no checkpoint between the scopes lets a cancel in
        with trio.CancelScope(shield=True, deadline=trio.current_time() + wait):
            await done.wait()
        if not done.is_set() and p.request is not None and \
                time.monotonic() - p.ex.last >= p.idle_limit:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(client._abandon, p.request)  # raises
    if p.error is not None:
        raise p.error
    return client._result(op, method, p.request, p.ex)


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


async def head_object(client: CrtClient, *, Bucket: str, Key: str,
                      **params: Any) -> dict[str, Any]:
    """`CrtClient.head_object`, awaited."""
    status, headers, _ = await send(client, "HeadObject", "HEAD", Bucket, Key,
                                    **client.read_request(params, get=False))
    return wire.response_fields(status, headers)


async def get_object(client: CrtClient, *, Bucket: str, Key: str,
                     **params: Any) -> dict[str, Any]:
    """`CrtClient.get_object`, awaited (the body is read in full before it returns)."""
    status, headers, data = await send(client, "GetObject", "GET", Bucket, Key,
                                       **client.read_request(params, get=True))
    return client.get_response(status, headers, data)
