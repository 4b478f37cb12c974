"""Reads of `ObjectStore` awaited from trio on the CRT data plane, with no worker thread.

`ahead` and `aget_range` are `head` and `get_range` with the request awaited through the CRT's
completion callback (store/crt_async.py) instead of a ``trio.to_thread`` call that parks a
thread on it. Everything around the request is the blocking path's, shared, not copied: the
parameters (`_range_params`), the SSE-C read-key candidates (`_read_candidates`,
`_read_key_opened`, `_no_read_key`), the breaker, counters, error mapping and SSE-C response
verification (`_acall` -> `_failed`/`_answered`), the body accounting (`_read_body`), and the
read timeout and retries (crt_async.send). Only used when `awaitable_reads`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import StoreError
from .objinfo import ObjectInfo, _info
from .reads import StoreReads

T = TypeVar("T")


class StoreAwaitedReads(StoreReads):
    @property
    def awaitable_reads(self) -> bool:
        """`ahead`/`aget_range` can run: the client is a `CrtClient` itself (not a wrapper:
        tests record requests that way), and this store reads as `StoreReads` does (a store
        that transforms reads — S3EC decrypts, as-of views pin versions — never skips them)."""
        return self.stats.client == "crt" and self._untransformed_on_crt(
            ("get_range", StoreReads.get_range), ("head", StoreReads.head))

    @property
    def awaitable_gets(self) -> bool:
        """`aget` can run: `awaitable_reads`, and no subclass transforms `get` either."""
        return self.awaitable_reads and self._untransformed_on_crt(("get", StoreReads.get))

    def _untransformed_on_crt(self, *methods: tuple[str, Any]) -> bool:
        """Whether no subclass overrides any of `methods` ((name, the base function) pairs: a
        store that transforms them) and the client is a `CrtClient` itself, not a wrapper
        (tests record requests that way): the CRT-only fast paths may then skip those methods."""
        if any(getattr(type(self), name) is not base for name, base in methods):
            return False
        from .crt import CrtClient

        return isinstance(self.client, CrtClient)

    async def _awith_read_key(self, key: str,
                              attempt: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """`_with_read_key`, awaited: each candidate SSE-C key until one is accepted."""
        cands = self._read_candidates(key)
        first: StoreError | None = None
        for kid in cands:
            args = self.sse.read_args(kid) if kid else {}
            try:
                result = await attempt(args)
            except StoreError as exc:
                first = self._refused_read_key(cands, exc, first)
                continue
            self._read_key_opened(key, kid)
            return result
        raise self._no_read_key(first)

    async def ahead(self, key: str) -> ObjectInfo:
        """`head`, awaited (only when `awaitable_reads`)."""
        from . import crt_async

        async def attempt(args: dict[str, Any]) -> dict[str, Any]:
            return await self._acall("HeadObject", key, crt_async.head_object, Key=key, **args)

        info = _info(key, await self._awith_read_key(key, attempt))
        self._remember(key, info.metadata)
        return info

    async def aget(self, key: str) -> tuple[bytes, ObjectInfo]:
        """`get` of a whole object, awaited (only when `awaitable_gets`)."""
        from . import crt_async

        async def attempt(args: dict[str, Any]) -> tuple[bytes, ObjectInfo]:
            resp = await self._acall("GetObject", key, crt_async.get_object, Key=key, **args)
            data = self._read_body(key, resp)
            info = _info(key, resp)
            info.size = len(data)
            return data, info

        data, info = await self._awith_read_key(key, attempt)
        self._remember(key, info.metadata)
        return data, info

    async def aget_range(self, key: str, start: int, end: int, *,
                         if_match: str | None = None) -> bytes:
        """`get_range`, awaited (only when `awaitable_reads`)."""
        from . import crt_async

        if end <= start:
            return b""
        params = self._range_params(key, start, end, if_match)

        async def attempt(args: dict[str, Any]) -> bytes:
            try:
                resp = await self._acall("GetObject", key, crt_async.get_object, **params,
                                         **args)
            except StoreError as exc:
                if exc.code == "InvalidRange":
                    return b""
                raise
            return self._read_body(key, resp)

        return await self._awith_read_key(key, attempt)
