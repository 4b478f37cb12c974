"""Streaming multipart: upload the parts of a big file while a sequential writer is still writing.

A part is sent once every segment in it is dirty and the writer has moved past it (so none of
its segments can be the file's last one, whose AEAD seal differs).  A later write into a sent
part invalidates it; at close the uploader reuses every still-valid part and sends the rest.
The upload id is journaled as soon as it exists, so a crash leaves no orphaned upload: the next
mount aborts it (and replays the file from its staging copy).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from s3encfs.fs.identity import new_token
from s3encfs.fs.nodes import Content
from s3encfs.fs.uploader import seal_staged, staged_range
from s3encfs.store.bodies import FileRange
from s3encfs.store.errors import NotFound

if TYPE_CHECKING:
    from s3encfs.cache.journal import Journal
    from s3encfs.fs.nodes import Node
    from s3encfs.store.layout import Attrs
    from s3encfs.store.s3 import ObjectStore

log = logging.getLogger("s3encfs.upload")


@dataclass
class StreamState:
    key: str
    per: int  # segments per part
    token: str  # upload token the completed object will carry (fs/identity.py)
    upload_id: str | None = None
    next_part: int = 0  # index (0-based) of the next part to consider
    parts: dict[int, str] = field(default_factory=dict)  # part number (1-based) -> etag
    inflight: set[int] = field(default_factory=set)
    invalid: set[int] = field(default_factory=set)
    failed: bool = False
    idle: trio.Event = field(default_factory=trio.Event)
    create_lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass
class StreamDeps:
    """What the streamer needs from the filesystem, passed in (no back-reference to it)."""

    store: ObjectStore
    journal: Journal
    run: Callable[..., Awaitable[Any]]  # a blocking call on a worker thread (the store limiter)
    key_of: Callable[[Node], str]
    object_meta: Callable[[dict[str, str], Attrs, str, str], dict[str, str]]
    nursery: Callable[[], trio.Nursery | None]  # None before the mount starts
    segment_size: int
    part_segments: int
    overhead: int = 0  # the object format's bytes per segment beyond its plaintext


# streamed parts in flight, whatever `upload_concurrency` (which small files need high at WAN
# latency): each holds a part's body in memory, and 4 of 8 MiB already keep the server busy
# (the link's bandwidth-delay product at 20 ms RTT is ~3 MB)
STREAM_PARTS = 4


class Streamer:
    def __init__(self, deps: StreamDeps, upload_concurrency: int):
        self.deps = deps
        self.limiter = trio.CapacityLimiter(max(2, min(STREAM_PARTS, upload_concurrency // 2)))

    def on_write(self, node: Node, c: Content, off: int, end: int) -> None:
        deps = self.deps
        S = deps.segment_size
        per = deps.part_segments
        st: StreamState | None = c.stream
        if st is not None:
            first_part = off // S // st.per
            last_part = (end - 1) // S // st.per
            for k in range(first_part, last_part + 1):
                if (k + 1) in st.parts or (k + 1) in st.inflight:
                    st.parts.pop(k + 1, None)
                    st.invalid.add(k + 1)
        nursery = deps.nursery()
        if nursery is None or end < 2 * per * S:
            return
        if st is None:
            if c.token_used:  # that token named an upload already: this one gets its own
                c.token, c.token_used = new_token(), False
            st = c.stream = StreamState(deps.key_of(node), per, c.token)
            st.idle.set()
        if st.failed:
            return
        last_full = end // S - 1  # highest segment index completely written up to `end`
        while (st.next_part + 1) * st.per - 1 < last_full:
            k = st.next_part
            first, stop = k * st.per, (k + 1) * st.per
            if not all(i in c.dirty for i in range(first, stop)):
                st.next_part += 1
                continue
            st.next_part += 1
            st.inflight.add(k + 1)
            st.invalid.discard(k + 1)
            st.idle = trio.Event()
            nursery.start_soon(self._send, node, c, st, k)

    async def _send(self, node: Node, c: Content, st: StreamState, k: int) -> None:
        deps = self.deps
        number = k + 1
        try:
            async with self.limiter:
                if st.failed or number in st.invalid:
                    return
                async with st.create_lock:
                    if st.upload_id is None:
                        meta = deps.object_meta(c.cipher_meta, node.attrs, st.key, st.token)
                        st.upload_id = await deps.run(deps.store.create_multipart, st.key, meta)
                        deps.journal.set_kv(f"mpu:{st.upload_id}", st.key)
                first, stop = k * st.per, (k + 1) * st.per
                cipher, staging = c.cipher, c.staging
                S = deps.segment_size
                # plain mode, and client mode's whole slots: the CRT reads the staging file
                rng = staged_range(deps.store, cipher, staging, c.dirty, S, first, stop,
                                   stop * S + 1)  # (+1: no segment of the part is the last)
                upload_id = st.upload_id

                def send() -> str:
                    body: bytearray | FileRange = rng if rng is not None else \
                        seal_staged(cipher, staging, first, stop, S + deps.overhead)
                    return deps.store.upload_part(st.key, upload_id, number, body)

                etag = await deps.run(send)
                if number not in st.invalid:
                    st.parts[number] = etag
        except Exception as exc:
            log.warning("streaming part %d of %s failed (sent again at close): %s",
                        number, st.key, exc)
        finally:
            st.inflight.discard(number)
            if not st.inflight:
                st.idle.set()

    async def settle(self, c: Content) -> StreamState | None:
        """Wait for parts in flight; the state to hand to the uploader (None = nothing sent)."""
        st: StreamState | None = c.stream
        if st is None:
            return None
        await st.idle.wait()
        return st if st.upload_id is not None else None

    async def discard(self, c: Content) -> None:
        """Abort a streamed upload that can no longer be used."""
        st: StreamState | None = c.stream
        c.stream = None
        if st is None:
            return
        st.failed = True
        await st.idle.wait()
        if st.upload_id is not None:
            await self.forget(st.key, st.upload_id)

    async def forget(self, key: str, upload_id: str) -> None:
        try:
            await self.deps.run(self.deps.store.abort_multipart, key, upload_id)
        except NotFound:
            pass  # already completed or aborted
        except Exception as exc:
            log.warning("could not abort multipart upload of %s: %s", key, exc)
            return
        self.deps.journal.delete_kv(f"mpu:{upload_id}")
