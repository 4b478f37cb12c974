"""Side objects of long names (name scheme 2, crypto/names.py; docs/FORMAT.md, "Long names").

A component whose padded name is too long to stay inline is a hashed ``gl-…`` component; its
sealed name lives in a *side object* ``dir/gl-X.name`` next to it (gocryptfs does the same).
Every object and marker key with such a component needs its side object, so instead of
teaching each write path in fs/ about them this wrapper sits in front of the store:

- before a PUT, copy or multipart upload lands a key with ``gl-`` components, the side objects
  of those components are written (once per mount; their bodies are deterministic, the codec
  remembers them from encoding the name) — and after it landed they are checked again, so a
  concurrent delete that removed one is undone;
- a delete of a hashed name (a file, or a directory's marker) deletes its side object too,
  under the lock, so a put of the same name that follows writes it again;
- listings hide side objects, and fetch and verify (HMAC) the side object of every ``gl-``
  component they return before the page is used, so `decode_name` finds it. A hashed name
  without a side object, or with one whose HMAC does not match, is an IntegrityError (EIO):
  that name was written by us and something removed or changed its record.

The bookkeeping lock only guards long-name work: keys without ``gl-`` components pass
straight through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from functools import partial
from typing import Any, cast

import trio

from s3encfs.codec import Codec
from s3encfs.crypto.names import SIDE_SUFFIX, is_long
from s3encfs.store.errors import DamagedLongName, NotFound

log = logging.getLogger("s3encfs.store")
_MEMO = 1 << 16


def with_long_names(store: Any, codec: Codec, prefix: str) -> Any:
    """The store as is, or wrapped when the codec writes hashed long names."""
    if getattr(codec, "name_scheme", 1) != 2 or isinstance(store, LongNameStore):
        return store
    return cast(Any, LongNameStore(store, codec, prefix))


def is_side_key(rel: str) -> bool:
    """Whether a key (relative to the prefix) is a long name's side object."""
    last = rel.rsplit("/", 1)[-1]
    return last.endswith(SIDE_SUFFIX) and is_long(last[: -len(SIDE_SUFFIX)])


class LongNameStore:
    """Any object store, with side objects kept in step with the keys that need them."""

    _inner: Any
    _codec: Any  # a ClientCodec with name scheme 2 (long_body, learn_long)
    _prefix: str
    _lock: threading.Lock
    _ensured: set[str]
    _control: str

    def __init__(self, inner: Any, codec: Codec, prefix: str) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_codec", codec)
        object.__setattr__(self, "_prefix", prefix.strip("/") + "/" if prefix.strip("/") else "")
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_ensured", set())  # side keys this mount wrote or verified
        object.__setattr__(self, "_control", self._prefix + ".s3encfs/")

    # everything else is the inner store's (attributes set on the wrapper go there too)
    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    # -- which side objects a key needs
    def _sides(self, key: str) -> list[tuple[str, str]]:
        """(side key, hashed component) for each hashed component of `key`."""
        if not key.startswith(self._prefix) or key.startswith(self._control):
            return []
        rel = key[len(self._prefix):]
        if "gl-" not in rel:
            return []
        out = []
        parts = rel.split("/")
        for i, comp in enumerate(parts):
            if is_long(comp):
                out.append((self._prefix + "/".join(parts[: i + 1]) + SIDE_SUFFIX, comp))
        return out

    def _write_side(self, side: str, hashed: str) -> None:
        body = self._codec.long_body(hashed)
        if body is None:  # not encoded by this mount lately: it must already be there
            try:
                self._inner.head(side)
            except NotFound:
                raise DamagedLongName(f"no record of the long name "
                                      f"{side[: -len(SIDE_SUFFIX)]}", side) from None
        else:
            self._inner.put(side, body, {})
        if len(self._ensured) >= _MEMO:
            self._ensured.clear()
        self._ensured.add(side)

    def _ensure(self, key: str, *, refresh: bool = False) -> None:
        """Write the side objects `key` needs that this mount has not written or seen;
        `refresh`: the name the key itself creates is written again anyway (another mount
        may have deleted it since — one small PUT per write of a long name)."""
        sides = self._sides(key)
        if not sides:
            return
        last = sides[-1][0] if refresh and is_long(key.rstrip("/").rsplit("/", 1)[-1]) \
            else None
        with self._lock:
            for side, hashed in sides:
                if side not in self._ensured or side == last:
                    self._write_side(side, hashed)

    def _in_use(self, name_key: str) -> bool:
        try:
            self._inner.head(name_key)
            return True
        except NotFound:
            pass
        for page in self._inner.list_pages(name_key + "/", None):
            if page.objects or page.prefixes:
                return True
            break
        return False

    # -- writes
    def put(self, key: str, *args: Any, **kw: Any) -> Any:
        self._ensure(key, refresh=True)
        out = self._inner.put(key, *args, **kw)
        self._ensure(key)  # a delete of the same name meanwhile may have taken the side object
        return out

    async def aput(self, key: str, *args: Any, **kw: Any) -> Any:
        """`ObjectStore.aput` for keys with no hashed component; a long name's PUT runs `put`
        (its side objects first and after) on a worker thread, never the inner store's alone."""
        if not self._sides(key):
            return await self._inner.aput(key, *args, **kw)
        return await trio.to_thread.run_sync(partial(self.put, key, *args, **kw))

    def copy(self, src: str, dst: str, *args: Any, **kw: Any) -> Any:
        self._ensure(dst, refresh=src != dst)  # a copy onto itself (metadata) names nothing
        out = self._inner.copy(src, dst, *args, **kw)
        self._ensure(dst)
        return out

    def create_multipart(self, key: str, *args: Any, **kw: Any) -> Any:
        self._ensure(key, refresh=True)
        return self._inner.create_multipart(key, *args, **kw)

    def complete_multipart(self, key: str, *args: Any, **kw: Any) -> Any:
        self._ensure(key)
        out = self._inner.complete_multipart(key, *args, **kw)
        self._ensure(key)
        return out

    def delete(self, key: str) -> None:
        name_key = key.rstrip("/")
        sides = self._sides(key)
        if not sides or not is_long(name_key.rsplit("/", 1)[-1]):
            self._inner.delete(key)
            return
        side = sides[-1][0]
        with self._lock:  # a put of the same name waits, then writes the side object again
            self._inner.delete(key)
            self._ensured.discard(side)
            self._inner.delete(side)

    def delete_many(self, keys: list[str]) -> None:
        """Side objects of names deleted here (a file, or a directory whose marker is in
        `keys`) go in the same batch, right before their name: after anything below it (the
        caller orders children first) — an object deleted below an already deleted marker
        would leave SeaweedFS listing the emptied directory."""
        gone = {k.rstrip("/") for k in keys}
        extra: dict[str, str] = {}  # name key -> side key
        for k in keys:
            for side, _hashed in self._sides(k):
                name_key = side[: -len(SIDE_SUFFIX)]
                if name_key in gone:
                    extra.setdefault(name_key, side)
        if not extra:
            self._inner.delete_many(keys)
            return
        batch: list[str] = []
        for k in keys:
            if k.rstrip("/") in extra:
                batch.append(extra.pop(k.rstrip("/")))
            batch.append(k)
        with self._lock:
            self._ensured.difference_update(batch)
            self._inner.delete_many(batch)

    # -- listings
    def list_pages(self, prefix: str, delimiter: str | None = "/") -> Generator[Any]:
        for page in self._inner.list_pages(prefix, delimiter):
            objects = [o for o in page.objects
                       if not (o.key.startswith(self._prefix)
                               and is_side_key(o.key[len(self._prefix):]))]
            if len(objects) == len(page.objects) and not any(
                    "gl-" in k for k in (*page.prefixes, *(o.key for o in objects))):
                yield page
                continue
            for o in objects:
                self._verify_sides(o.key, prefix)
            # SeaweedFS keeps listing an emptied directory as a common prefix after its
            # objects went (a directory rename): a hashed one whose side object is gone too
            # is such a ghost when nothing is under it, and is left out
            prefixes = [p for p in page.prefixes if self._verify_sides(p, prefix, ghost=True)]
            yield type(page)(objects, prefixes)

    def _verify_sides(self, key: str, listed: str, ghost: bool = False) -> bool:
        """Fetch and check the side objects `key` needs; False for a ghost prefix."""
        for side, hashed in self._sides(key):
            if side in self._ensured or not side.startswith(listed):
                continue  # known, or a component above the listing (verified by its parent's)
            try:
                body, _info = self._inner.get(side)
            except NotFound:
                if ghost and not self._in_use(side[: -len(SIDE_SUFFIX)]):
                    return False
                log.error("long name %s has no side object", side[: -len(SIDE_SUFFIX)])
                raise DamagedLongName(f"long name {side[: -len(SIDE_SUFFIX)]} has no side "
                                      "object", side) from None
            if not self._codec.learn_long(hashed, body):
                log.error("side object %s does not authenticate", side)
                raise DamagedLongName(f"side object {side} does not authenticate", side)
            with self._lock:
                if len(self._ensured) >= _MEMO:
                    self._ensured.clear()
                self._ensured.add(side)
        return True
