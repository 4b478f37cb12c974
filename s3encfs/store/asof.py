"""A read-only view of a versioned bucket as it was at one point in time (``mount --as-of``).

`AsOfStore` is an `ObjectStore` whose listings come from ListObjectVersions: for every key, the
newest version whose LastModified is not after TIME; a key whose newest such version is a
delete marker (or that had no version yet) does not exist.  HEAD/GET/ranged GET fetch exactly
that VersionId, so every encryption mode works unchanged: client mode reads the data key,
sealed attributes and directory index of *that* version (index objects are versioned like any
other), SSE-C tries the keyring's keys on that version as it does on current objects.  Every
write raises `ReadOnly` (EROFS): the filesystem core runs with read_only on, this is the belt
to its braces.

The view of a past moment never changes, so what has been resolved is kept for the life of
the mount: the first listing of a prefix lists all versions below it (1 request per 1,000
versions, whatever the tree's shape), later listings of directories inside it are answered
from memory.  Memory: ~250 bytes per visible key of the mounted prefix.  A key asked for
outside any listed prefix (the key-check blob at mount time) costs one ListObjectVersions
with that key as prefix.

Time resolution is the second (S3's LastModified).  Within one key, versions come newest
first; a version and a delete marker of the same second are told apart by IsLatest only, and
otherwise the version wins (showing a file rather than hiding one).
"""

from __future__ import annotations

import bisect
import errno
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .bodies import FileRange
from .errors import NotFound, StoreError, map_error
from .s3 import ListPage, ObjectInfo, ObjectStore, _info, _quoted

PAGE = 1000


class ReadOnly(StoreError):
    """A write to a point-in-time view (EROFS)."""

    errno = errno.EROFS


@dataclass(slots=True)
class Version:
    """One entry of ListObjectVersions (a delete marker has `deleted` set)."""

    key: str
    version_id: str
    last_modified: float
    size: int
    etag: str
    is_latest: bool
    deleted: bool = False


def iter_versions(store: ObjectStore, prefix: str, delimiter: str | None = None,
                  prefixes: list[str] | None = None) -> Generator[Version]:
    """Every version and delete marker below `prefix`, key by key, newest first within a key
    (delete markers merged into place by time; at equal times IsLatest first).  With a
    delimiter, CommonPrefixes are appended to `prefixes`."""
    params: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix}
    if delimiter:
        params["Delimiter"] = delimiter
    pages = store.client.get_paginator("list_object_versions").paginate(**params)
    pending: list[Version] = []  # the current key's entries (a key may span pages)
    try:
        for page in pages:
            store.stats.record("ListObjectVersions")
            if prefixes is not None:
                prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []) or [])
            batch = [_version(v, False) for v in page.get("Versions", []) or []]
            batch += [_version(v, True) for v in page.get("DeleteMarkers", []) or []]
            batch.sort(key=lambda v: v.key)  # stable: keeps each list's newest-first order
            for v in batch:
                if pending and pending[0].key != v.key:
                    yield from _ordered(pending)
                    pending = []
                pending.append(v)
    except (ClientError, BotoCoreError) as exc:
        store.stats.record("ListObjectVersions", error=True)
        raise map_error(exc, bucket=store.bucket, key=prefix, op="ListObjectVersions") from exc
    yield from _ordered(pending)


def _version(v: Any, deleted: bool) -> Version:
    lm = v.get("LastModified")
    return Version(key=v["Key"], version_id=str(v.get("VersionId") or "null"),
                   last_modified=lm.timestamp() if lm is not None else 0.0,
                   size=int(v.get("Size", 0) or 0), etag=str(v.get("ETag") or "").strip('"'),
                   is_latest=bool(v.get("IsLatest")), deleted=deleted)


def _ordered(entries: list[Version]) -> list[Version]:
    # sort is stable: within one second, IsLatest first, then versions before delete markers
    # (each list arrives newest first already)
    return sorted(entries, key=lambda v: (-v.last_modified, not v.is_latest, v.deleted))


def visible_at(entries: list[Version], as_of: float) -> Version | None:
    """The version of one key that was current at `as_of`; None if there was none."""
    limit = int(as_of)  # LastModified has whole seconds
    for v in entries:
        if v.last_modified <= limit:
            return None if v.deleted else v
    return None


def resolve(versions: Generator[Version], as_of: float) -> dict[str, Version]:
    """key → the version current at `as_of`, for every key that existed then."""
    out: dict[str, Version] = {}
    group: list[Version] = []
    for v in versions:
        if group and group[0].key != v.key:
            if (hit := visible_at(group, as_of)) is not None:
                out[hit.key] = hit
            group = []
        group.append(v)
    if group and (hit := visible_at(group, as_of)) is not None:
        out[hit.key] = hit
    return out


class AsOfStore(ObjectStore):
    """`ObjectStore` reading the bucket as of `as_of` (Unix seconds); writes raise EROFS."""

    def __init__(self, bucket: str, *, as_of: float, **kwargs: Any) -> None:
        super().__init__(bucket, **kwargs)
        self.as_of = as_of
        self._history_lock = threading.Lock()
        self._visible: dict[str, Version] = {}
        self._keys: list[str] = []  # sorted keys of _visible
        self._covered: list[str] = []  # prefixes whose every visible key is in _visible
        self._single: dict[str, Version | None] = {}  # lookups outside covered prefixes

    # -- resolution -------------------------------------------------------------------------

    def _is_covered(self, key: str) -> bool:
        return any(key.startswith(p) for p in self._covered)

    def _cover(self, prefix: str) -> None:
        with self._history_lock:
            if self._is_covered(prefix):
                return
        found = resolve(iter_versions(self, prefix), self.as_of)
        with self._history_lock:
            if self._is_covered(prefix):
                return
            self._visible.update(found)
            self._keys = sorted(self._visible)
            self._covered = [p for p in self._covered if not p.startswith(prefix)] + [prefix]

    def version_of(self, key: str) -> Version:
        """The version of `key` current at `as_of`; NotFound if it did not exist then."""
        with self._history_lock:
            known = self._is_covered(key) or key in self._single
            v = self._visible.get(key) if self._is_covered(key) else self._single.get(key)
        if not known:
            group = []
            for e in iter_versions(self, key):
                if e.key != key:
                    break  # keys that have `key` as a prefix come after it
                group.append(e)
            v = visible_at(group, self.as_of)
            with self._history_lock:
                self._single[key] = v
        if v is None:
            raise NotFound(f"s3://{self.bucket}/{key}: did not exist at the as-of time",
                           code="NoSuchKey", status=404, bucket=self.bucket, key=key)
        return v

    # -- reads ------------------------------------------------------------------------------

    def list_pages(self, prefix: str, delimiter: str | None = "/") -> Generator[ListPage]:
        self._cover(prefix)
        with self._history_lock:
            keys, visible = self._keys, self._visible
        i = bisect.bisect_left(keys, prefix)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        while i < len(keys) and keys[i].startswith(prefix):
            key = keys[i]
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter or "")]
                prefixes.append(common)
                i = bisect.bisect_left(keys, common + "\U0010ffff", i)
            else:
                v = visible[key]
                objects.append(ObjectInfo(key, v.size, v.etag, v.last_modified, None))
                i += 1
            if len(objects) + len(prefixes) >= PAGE:
                yield ListPage(objects, prefixes)
                objects, prefixes = [], []
        yield ListPage(objects, prefixes)  # like S3, a last (possibly empty) page

    def head(self, key: str) -> ObjectInfo:
        vid = self.version_of(key).version_id
        resp = self._with_read_key(key, lambda a: self._call(
            "HeadObject", key, self.client.head_object, Key=key, VersionId=vid, **a))
        info = _info(key, resp)
        self._remember(key, info.metadata)
        return info

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if end <= start:
            return b""
        vid = self.version_of(key).version_id
        cond: dict[str, Any] = {"IfMatch": _quoted(if_match)} if if_match else {}

        def attempt(args: dict[str, Any]) -> bytes:
            try:
                resp = self._call("GetObject", key, self.client.get_object, Key=key,
                                  VersionId=vid, Range=f"bytes={start}-{end - 1}", **cond, **args)
            except StoreError as exc:
                if exc.code == "InvalidRange":
                    return b""
                raise
            return self._read_body(key, resp)

        return self._with_read_key(key, attempt)

    def raw_get_range(self, key: str, start: int, end: int, *,
                      if_match: str | None = None) -> bytes:
        return AsOfStore.get_range(self, key, start, end, if_match=if_match)

    def get(self, key: str, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        vid = self.version_of(key).version_id
        cond: dict[str, Any] = {"IfMatch": _quoted(if_match)} if if_match else {}

        def attempt(args: dict[str, Any]) -> tuple[bytes, ObjectInfo]:
            resp = self._call("GetObject", key, self.client.get_object, Key=key, VersionId=vid,
                              **cond, **args)
            data = self._read_body(key, resp)
            info = _info(key, resp)
            info.size = len(data)
            return data, info

        data, info = self._with_read_key(key, attempt)
        self._remember(key, info.metadata)
        return data, info

    def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, float]]:
        return []  # the live tree's uploads in progress are none of this view's business

    # -- writes -----------------------------------------------------------------------------

    def _refuse(self, key: str | None) -> ReadOnly:
        return ReadOnly(f"s3://{self.bucket}/{key or ''}: read-only point-in-time view",
                        code="ReadOnly", bucket=self.bucket, key=key)

    def put(self, key: str, body: bytes, metadata: dict[str, str], **_kw: Any) -> str:
        raise self._refuse(key)

    def copy(self, src: str, dst: str, **_kw: Any) -> str:
        raise self._refuse(dst)

    def delete(self, key: str) -> None:
        raise self._refuse(key)

    def delete_many(self, keys: list[str]) -> None:
        raise self._refuse(keys[0] if keys else None)

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        raise self._refuse(key)

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    body: bytes | bytearray | FileRange) -> str:
        raise self._refuse(key)

    def upload_part_copy(self, key: str, upload_id: str, part_number: int, src: str,
                         start: int, end: int, *, src_etag: str | None = None) -> str:
        raise self._refuse(key)

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]],
                           **_kw: Any) -> str:
        raise self._refuse(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise self._refuse(key)
