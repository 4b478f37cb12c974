"""A past view (``mount --as-of``) of a bucket of S3 Encryption Client objects.

`S3ECStore` decrypts and verifies over its base class's reads (``super().head/get/get_range``
and `raw_get_range`); `AsOfStore` pins every one of those reads to the version current at the
as-of time and refuses every write. Stacked in this order (method resolution: S3ECAsOfStore →
S3ECStore → AsOfStore → ObjectStore), S3EC's checks run on the pinned versions — the object,
its instruction file and its sealed attributes all as of the same time — and nothing is written.
"""

from __future__ import annotations

from typing import Any

from .asof import AsOfStore
from .s3ec import S3ECStore


class S3ECAsOfStore(S3ECStore, AsOfStore):
    """S3ECStore over an as-of view: ``S3ECAsOfStore(bucket, as_of=..., s3ec=..., ...)``."""

    # A past view writes nothing: refused here, before S3EC would seal anything (the mount is
    # read-only too; AsOfStore refuses every other write).
    def put(self, key: str, body: bytes, metadata: dict[str, str], **_kw: Any) -> str:
        raise self._refuse(key)

    def copy(self, src: str, dst: str, **_kw: Any) -> str:
        raise self._refuse(dst)

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]],
                           **_kw: Any) -> str:
        raise self._refuse(key)
