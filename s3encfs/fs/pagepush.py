"""Random reads answered by the kernel: a clean file that is fetched whole because it is read
at random offsets (fs/reader.py `_prefetch_whole`) has its plaintext stored into the kernel's
page cache as its blocks land (FUSE_NOTIFY_STORE, `pyfuse3.notify_store`). The reader's next
4 KiB reads are then page-cache hits: no FUSE request, no Python.

docs/INTERNALS.md, "Pages pushed into the kernel (W3)".
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Iterable

import trio

from s3encfs.fs.nodes import Node, ObjectRef

log = logging.getLogger("s3encfs.fs")

MAX_PUSH = 512 * 1024 * 1024  # bytes of a file pushed at most (the page cache is shared)
MAX_FILES = 64  # pushes remembered at once


class _Push:
    """One file's push: `busy` stores in flight on worker threads, `quiet` set when none."""

    __slots__ = ("busy", "node", "obj", "quiet", "stop")

    def __init__(self, node: Node, obj: ObjectRef):
        self.node, self.obj = node, obj
        self.stop = False
        self.busy = 0
        self.quiet = trio.Event()
        self.quiet.set()


class PagePusher:
    """Runs on the trio thread; the store itself (a write to /dev/fuse that can wait for a page
    a pending FUSE read holds locked) runs on a worker thread, so the trio thread stays free to
    answer that read. Never stores into a file that has local content or a writer: `stop`
    (called by open for write and truncate) waits for a store in flight before they go on."""

    def __init__(self) -> None:
        self.store_fn: Callable[[int, int, bytes | memoryview], None] | None = None  # FUSE mount
        self._pushes: dict[tuple[str, str], _Push] = {}
        self.pushed = 0  # bytes stored into the kernel

    def start(self, node: Node, obj: ObjectRef) -> bool:
        """Push `node`'s blocks from now on (the caller fetches them); False if not wanted."""
        ident = (obj.key, obj.etag)
        if self.store_fn is None or node.content is not None or obj.plain_size > MAX_PUSH \
                or ident in self._pushes:
            return False
        if len(self._pushes) >= MAX_FILES:
            # forget the oldest push with no store in flight (`stop` could not wait for one
            # it no longer finds); it stores nothing more
            old = next((k for k, st in self._pushes.items() if st.busy == 0), None)
            if old is None:
                return False
            self._pushes.pop(old).stop = True
        self._pushes[ident] = _Push(node, obj)
        return True

    def get(self, obj: ObjectRef) -> _Push | None:
        return self._pushes.get((obj.key, obj.etag))

    def _valid(self, st: _Push) -> bool:
        n = st.node
        return (not st.stop and self.store_fn is not None and n.content is None
                and n.obj is st.obj and n.attrs.size == st.obj.plain_size and not n.unlinked)

    async def push(self, st: _Push, ranges: Iterable[tuple[int, int]],
                   ensure: Callable[[int, int], Awaitable[None]],
                   read_local: Callable[[int, int], bytes | memoryview | None]) -> None:
        """Store plaintext [lo, hi) of each range into the kernel. `ensure` brings its blocks
        into the block cache (waits for a fetch in flight), `read_local` reads it from local
        blocks only (authenticated in client mode) or returns None: that range is left to FUSE
        reads."""
        for lo, hi in ranges:
            if not self._valid(st) or hi <= lo:
                continue
            try:
                await ensure(lo, hi)
            except Exception as exc:  # a failed fetch: FUSE reads of that range try again
                log.debug("page cache store of %r skips [%d, %d): %s", st.node.path, lo, hi,
                          exc)
                continue
            data = read_local(lo, hi) if self._valid(st) else None
            if data is None or not self._valid(st):
                continue
            await self._store(st, lo, data)

    async def _store(self, st: _Push, off: int, data: bytes | memoryview) -> None:
        fn = self.store_fn
        assert fn is not None
        if st.busy == 0:
            st.quiet = trio.Event()
        st.busy += 1
        try:
            await trio.to_thread.run_sync(fn, st.node.inode, off, data)
            self.pushed += len(data)
        except OSError as exc:
            st.stop = True
            if exc.errno == errno.ENOSYS:
                self.store_fn = None  # the kernel cannot: never again on this mount
            log.debug("page cache store of %r failed: %s", st.node.path, exc)
        finally:
            st.busy -= 1
            if st.busy == 0:
                st.quiet.set()

    async def stop(self, node: Node) -> None:
        """No more stores into `node`; returns once none is in flight (the caller then writes
        or truncates, and the kernel's pages are its own)."""
        for ident, st in list(self._pushes.items()):
            if st.node is node:
                st.stop = True
                del self._pushes[ident]
                with trio.CancelScope(shield=True):
                    await st.quiet.wait()
