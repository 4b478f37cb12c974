"""Mount-time wiring of bucket history: ``--as-of`` (a read-only past view) and
``--object-lock`` (retention on every write).  mount.py calls `setup` before building the
store and `check_bucket` once the bucket answers."""

from __future__ import annotations

import logging
from typing import Any

from s3encfs.config import MountConfig

log = logging.getLogger("s3encfs.mount")


class HistoryError(Exception):
    """The bucket cannot give what --as-of / --object-lock ask for (a one-line reason)."""


def setup(cfg: MountConfig) -> float | None:
    """Parse --as-of; an as-of mount is read-only and gets its own cache directory (never the
    live mount's: its journal must not be replayed into a read-only view, nor share its lock)."""
    if not cfg.as_of:
        return None
    from s3encfs.timespec import TimeSpecError, format_time, parse_time

    try:
        as_of = parse_time(cfg.as_of)
    except TimeSpecError as exc:
        raise HistoryError(str(exc)) from None
    if "ro" not in cfg.options:
        cfg.options = [*cfg.options, "ro"]
    stamp = format_time(as_of).replace(":", "")
    cfg.cache_dir = f"{cfg.effective_cache_dir.rstrip('/')}.as-of-{stamp}"
    return as_of


def store_class(as_of: float | None) -> Any:
    """The ObjectStore class for this mount (a factory taking ObjectStore's arguments)."""
    from functools import partial

    from s3encfs.store.asof import AsOfStore
    from s3encfs.store.s3 import ObjectStore

    return ObjectStore if as_of is None else partial(AsOfStore, as_of=as_of)


def check_bucket(store: Any, cfg: MountConfig) -> None:
    """Refuse an --as-of mount of a bucket that never had versioning, and an --object-lock
    mount of a bucket without Object Lock; arm the store's retention headers."""
    from s3encfs.objectlock import (
        ObjectLockError,
        bucket_protection,
        parse_object_lock,
        require_lockable,
    )
    from s3encfs.timespec import format_time

    if cfg.as_of:
        p = bucket_protection(store.client, store.bucket)
        if not p.versioning:
            raise HistoryError(f"--as-of needs bucket versioning, and s3://{store.bucket} never "
                               "had it: only the current version of each object exists")
        log.info("read-only view of s3://%s as of %s", store.bucket, format_time(store.as_of))
    if cfg.object_lock:
        retention = parse_object_lock(cfg.object_lock)
        try:
            require_lockable(store.client, store.bucket)
        except ObjectLockError as exc:
            raise HistoryError(str(exc)) from None
        store.object_lock = retention.write_args
        log.info("object lock: %s", retention.describe())
