"""pyfuse3's request loop with fewer trips through trio's scheduler (issue 16, W4).

pyfuse3 reaches trio only through its module attribute ``pyfuse3.trio`` (``pyfuse3.asyncio``
swaps it the same way). Each worker task of its loop takes a `trio.Lock` (the *read lock*: one
task waits on the FUSE fd at a time), waits until the fd is readable, releases the lock and
handles one request. Two things there cost a scheduler pass each without doing any work:

- `trio.Lock.acquire` yields even when the lock is free, and its release hands the lock to the
  next waiter, which must run before anyone reads the next request; `_ReadLock` takes a free
  lock at once and lets the releasing task take it back (`_ReadLock`'s docstring).
- `wait_readable` parks the task until the next epoll round even when a request is already
  queued (rsync's generator and receiver, the kernel's own setattr/getattr, keep several in
  flight); `_wait_readable` first polls the fd without blocking. At most `BURST` requests in a
  row skip the scheduler, so uploads and timers keep getting their turn.

Behaviour is otherwise pyfuse3's: same lock discipline, same errors (ClosedResourceError at
unmount ends the loop). docs/INTERNALS.md, "The FUSE request loop".
"""

from __future__ import annotations

import select
import types
from typing import Any

import trio

BURST = 16  # requests in a row that may skip the scheduler (then one ordinary wait)


class _ReadLock:
    """pyfuse3's read lock, without a scheduler pass for a free lock and without handing it
    over on release: trio.Lock gives a released lock to the next waiter, so every request
    woke another task and cost a pass even when the releasing task came straight back for
    the next request. Here a release wakes one waiter (unless one is already woken and has
    not run yet) and the lock is free for whoever comes first: a task whose handler did not
    block takes it again at once; a woken waiter that finds it held parks again."""

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()
        self._woken = False  # a waiter was unparked and has not run yet

    async def __aenter__(self) -> None:
        while self._held:
            await self._lot.park()
            self._woken = False
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        if self._lot and not self._woken:
            self._woken = True
            self._lot.unpark()


class _Poller:
    """Non-blocking readiness checks of the FUSE fd (one `select.poll` object per fd)."""

    def __init__(self) -> None:
        self._polls: dict[int, Any] = {}
        self.streak = 0  # requests taken in a row without the scheduler
        self.fast = 0  # counters for `status` (fuse_loop): taken at once / waited for
        self.waited = 0

    def ready(self, fd: int) -> bool:
        p = self._polls.get(fd)
        if p is None:
            p = self._polls[fd] = select.poll()
            p.register(fd, select.POLLIN)
        return bool(p.poll(0))

    async def wait_readable(self, fd: int) -> None:
        if self.streak < BURST and self.ready(fd):
            self.streak += 1
            self.fast += 1
            return
        self.streak = 0
        self.waited += 1
        await trio.lowlevel.wait_readable(fd)


POLLER = _Poller()


def _shim() -> types.SimpleNamespace:
    low = trio.lowlevel
    lowlevel = types.SimpleNamespace(
        current_task=low.current_task, current_trio_token=low.current_trio_token,
        notify_closing=low.notify_closing, wait_readable=POLLER.wait_readable)
    return types.SimpleNamespace(
        Lock=_ReadLock, lowlevel=lowlevel, ClosedResourceError=trio.ClosedResourceError,
        open_nursery=trio.open_nursery, from_thread=trio.from_thread, to_thread=trio.to_thread)


def install() -> None:
    """Point pyfuse3 at the shim (before `pyfuse3.main`)."""
    import pyfuse3

    pyfuse3.trio = _shim()  # type: ignore[attr-defined]


def stats() -> dict[str, int]:
    return {"fast": POLLER.fast, "waited": POLLER.waited}
