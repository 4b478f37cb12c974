"""Thread-safe blocking S3 access: one shared boto3 client, botocore retries, SSE on every call.

Called from `trio.to_thread.run_sync` workers. Every method maps botocore failures to
`errors.StoreError` subclasses, strips quotes from ETags, and passes write responses through
`SsePolicy.verify` so that an object stored without the promised encryption is never reported
as durable.

`ObjectStore` is put together from one class per job, each in its own module and each a
subclass of the one below it (docs/INTERNALS.md, "Module tiers"): `writes` (PUT, copy,
delete) -> `multipart` -> `reads` (HEAD, GET, LIST) -> `request` (the client, one call with
its counters, breaker, error mapping and SSE verification); `objinfo` and `stats` hold the
types they return. `from s3encfs.store.s3 import ObjectStore` stays the public name.
"""

from __future__ import annotations

from collections.abc import Callable

from .objinfo import (
    ListPage,
    ObjectInfo,
    _etag,
    _info,
    _KeyIdCache,
    _meta,
    _quoted,
    parse_timestamp,
)
from .request import _kms_hint, _status
from .stats import StoreStats
from .writes import COPY_PART, DELETE_BATCH, MAX_COPY, StoreWrites

__all__ = [
    "COPY_PART", "DELETE_BATCH", "MAX_COPY", "ListPage", "ObjectInfo", "ObjectStore",
    "StoreStats", "_KeyIdCache", "_etag", "_info", "_kms_hint", "_meta", "_quoted", "_status",
    "parse_timestamp",
]


class ObjectStore(StoreWrites):
    """All S3 calls of one mount: a bucket, an SSE policy and one pooled boto3 client."""

    @property
    def verifies_whole_objects(self) -> bool:
        """True for a store whose objects authenticate only as a whole (S3EC: one GCM tag per
        object): it has `read_verified`, and the block cache fills all of a missing object's
        blocks from one verified pass, published once the tag checked (cache/verified.py)."""
        return False

    def read_verified(self, key: str, etag: str, write: Callable[[memoryview], None]) -> int:
        """The whole object's plaintext in order into `write`; its length once authenticated
        (only when `verifies_whole_objects`)."""
        raise NotImplementedError
