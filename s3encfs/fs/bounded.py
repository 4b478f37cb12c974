"""Bounded waits for S3 work (docs/INTERNALS.md, "Faults: full disk, outages, bounded waits").

An fsync must not block for the whole of an S3 outage.  The upload it waits for runs in a worker
thread that trio cannot cancel, so the wait is not a cancel scope around the upload: the upload
runs as its own task in the mount's nursery, and the caller stops *waiting* at the deadline
(SyncTimeout → EIO) while the upload carries on and is retried as usual.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pyfuse3
import trio

log = logging.getLogger("s3encfs.fs")


class SyncTimeout(Exception):
    """The work did not finish before the deadline (it goes on in the background)."""


async def bounded(nursery: trio.Nursery | None, work: Callable[[], Awaitable[object]],
                  deadline: float, what: str) -> None:
    """Run `work()` and wait for it until trio time `deadline`; re-raises its exception."""
    if nursery is None:  # no mount around us (in-process tests): nothing to detach into
        try:
            with trio.fail_at(deadline):
                await work()
        except trio.TooSlowError:
            raise SyncTimeout(f"{what}: S3 did not take it within the sync timeout") from None
        return
    done = trio.Event()
    error: list[BaseException] = []

    async def run() -> None:
        try:
            await work()
        except Exception as exc:
            error.append(exc)
        finally:
            done.set()

    nursery.start_soon(run)
    with trio.move_on_at(deadline):
        await done.wait()
    if not done.is_set():
        raise SyncTimeout(f"{what}: S3 did not take it within the sync timeout; it stays "
                          "journaled and is retried in the background")
    if error:
        raise error[0]


@asynccontextmanager
async def lock_within(lock: trio.Lock, seconds: float, what: str) -> AsyncIterator[None]:
    """Hold `lock`, but give up with EIO after `seconds`: a write to a file whose upload holds
    the lock (S3 stalled) fails in bounded time instead of hanging the writer for the outage.
    A free lock is taken at once: no cancel scope, no trip through trio's scheduler (every
    write request takes it, and nearly always finds it free)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        with trio.move_on_after(seconds) as scope:
            await lock.acquire()
        if scope.cancelled_caught:
            log.error("%s: its upload has held the file for %.0fs (S3 stalled?); EIO", what,
                      seconds)
            raise pyfuse3.FUSEError(errno.EIO) from None
    try:
        yield
    finally:
        lock.release()
