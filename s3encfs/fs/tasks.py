"""Background tasks that cannot take the mount down.

A task started in the mount's nursery that raises ends the nursery, and with it the mount: an
OverflowError from foreign metadata in a background listing once killed the daemon on `ls`.
`background` runs such a task (listing, HEADs, prefetch, read-ahead) and logs what escapes it —
the foreground request that needs the result reports its own error.  Upload and index tasks have
their own handlers (they retry).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("s3encfs.fs")
_reported: set[tuple[str, str]] = set()


async def background(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception as exc:  # trio.Cancelled is a BaseException: cancellation still works
        what = (getattr(fn, "__name__", "task"), type(exc).__name__)
        if what not in _reported and len(_reported) < 1000:
            _reported.add(what)
            log.exception("background %s failed (the mount goes on; reported once)", what[0])
        else:
            log.debug("background %s failed: %r", what[0], exc)
