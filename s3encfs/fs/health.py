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

from s3encfs.store import errors as store_errors

STALE_RETRY = 30.0  # seconds a stale listing is used before the next LIST attempt


def is_outage(exc: store_errors.StoreError) -> bool:
    """S3 did not answer, or answered with a server error (after botocore's retries)."""
    if isinstance(exc, (store_errors.AccessDenied, store_errors.BucketMissing,
                        store_errors.NotFound, store_errors.PreconditionFailed)):
        return False
    return isinstance(exc, store_errors.EndpointUnreachable) or (exc.status or 0) >= 500 \
        or exc.status is None
