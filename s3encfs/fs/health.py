"""What the mount does while S3 is unreachable (docs/INTERNALS.md, "Faults: full disk, outages,
bounded waits").

A directory this mount has listed before stays usable when a refresh LIST fails because S3 is
down: create and mkdir in it are journaled locally (their uploads wait and retry, with
If-None-Match so another writer's object is never overwritten), lookups and readdir see what was
known.  The stale listing is then trusted for `STALE_RETRY` seconds before S3 is asked again, so
an outage does not cost a full retry schedule on every access.  Errors that are answers (denied,
missing bucket) are not outages: they still fail the request.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio

from s3encfs.store import errors as store_errors
from s3encfs.store.breaker import mark_background

if TYPE_CHECKING:
    from s3encfs.fs.nodes import Node
    from s3encfs.fs.state import FsState

STALE_RETRY = 30.0  # seconds a stale listing is used before the next LIST attempt


def stale_listing_usable(d: Node, exc: store_errors.StoreError) -> bool:
    """The listing S3 could not refresh may answer instead: only when it is complete.  A
    directory that forgot children (fs/nodes.py `drop_forgotten`, listed_at = -inf) lacks
    names S3 holds: answering from it said ENOENT for them (and readdir left them out)."""
    return d.children is not None and not math.isinf(d.listed_at) and is_outage(exc)


def is_outage(exc: store_errors.StoreError) -> bool:
    """S3 did not answer, or answered with a server error (after botocore's retries)."""
    if isinstance(exc, (store_errors.AccessDenied, store_errors.BucketMissing,
                        store_errors.NotFound, store_errors.PreconditionFailed)):
        return False
    return isinstance(exc, store_errors.EndpointUnreachable) or (exc.status or 0) >= 500 \
        or exc.status is None


# -- the store's circuit breaker (store/breaker.py), seen from the filesystem ----------------
def breaker_status(store: Any) -> dict[str, Any]:
    """`status` fields: s3_breaker (open/closed), since when, foreground requests refused."""
    b = getattr(store, "breaker", None)
    if b is None:
        return {}
    st = b.state()
    out = {"s3_breaker": st["state"], "s3_breaker_open_since": st["open_since"],
           "s3_fast_failures": st["refused"]}
    if st["state"] == "open" and store.stats.unreachable_since is None:
        # no request has ended its retries yet (they are cut short, or still retrying)
        out["s3_unreachable_since"] = st["down_since"]
    return out


def start_upload_loop(core: FsState) -> None:
    """The first line of the upload loop: it and every upload/index task it starts are
    background work (an open breaker never refuses them), and uploads resume at S3's return."""
    mark_background()
    if core.nursery is not None:
        core.nursery.start_soon(resume_after_outage, core)


async def resume_after_outage(core: FsState, every: float = 0.5) -> None:
    """Started by the upload loop (so it runs as background work).  When the breaker closes,
    uploads that failed during the outage go now instead of at the end of their backoff
    (up to 60 s): what was written during the outage lands within seconds of S3's return."""
    b = getattr(core.store, "breaker", None)
    if b is None:
        return
    seen = b.closings
    while True:
        await trio.sleep(every)
        if b.closings == seen:
            continue
        seen = b.closings
        now = trio.current_time()
        for node in list(core._failures):
            if node in core.queue:
                core._enqueue(node, now)
        core._failures.clear()
        for d in core.index_queue:
            d.index_due = min(d.index_due, now)
        core._index_next = min(core._index_next, now)
        core._kick.set()
