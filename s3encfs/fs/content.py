"""A file's local bytes: staging writes, truncation, materializing base segments, and what an
upload that landed leaves of them.  Dirty-byte accounting goes through `self.dirty`
(fs/dirty.py) after every change of a dirty set.  docs/INTERNALS.md, "Filesystem services: who
owns what" (content).
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import secrets

import pyfuse3
import trio

from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.codec import IntegrityError
from s3encfs.fs import identity
from s3encfs.fs.bounded import lock_within
from s3encfs.fs.diskfull import failure_errno, mark_failed
from s3encfs.fs.nodes import Content, Node, ObjectRef
from s3encfs.fs.reader import Reader
from s3encfs.fs.state import fuse_error
from s3encfs.fs.uploader import SegmentSource
from s3encfs.store import errors as store_errors
from s3encfs.store.layout import now_ns

log = logging.getLogger("s3encfs.fs")


class LocalContent(Reader):
    def _ensure_content(self, node: Node) -> Content:
        if node.content is not None:
            return node.content
        file_id = secrets.token_hex(12)
        if node.obj is not None and node.corrupt is None:
            cipher = self.cipher_for(node.obj)
            meta = dict(node.obj.meta)
            base: ObjectRef | None = node.obj
            base_segs = -(-node.obj.plain_size // self.seg.segment_size)
            if self.codec.fresh_key_per_version:  # the base is read, never reused as is
                cipher, meta = self.codec.new_object()
        else:
            cipher, meta = self.codec.new_object()
            base, base_segs = None, 0
        cipher_meta = self._cipher_meta(meta)
        # client mode: whole slots are sealed as this version's own segments (ObjectSlots)
        staging = StagingFile(os.path.join(self.staging_dir, file_id), file_id,
                              self.seg.segment_size, self.slots.for_content(cipher),
                              pool=self.staging_pool)
        node.content = Content(staging, cipher, cipher_meta, base, base_segs,
                               token=identity.new_token())
        return node.content

    async def write(self, node: Node, off: int, data: bytes) -> int:
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        await self._wait_for_space()
        if self.journal.short_of_space():  # the journal's reserve is spent: the disk is full
            raise fuse_error(errno.ENOSPC)
        async with lock_within(node.lock, self.cfg.sync_timeout, node.path):
            c = self._ensure_content(node)
            if c.failed:  # this version is never uploaded: every later write says why
                raise fuse_error(c.failed)
            src = self._source(node)
            S = self.seg.segment_size
            end = off + len(data)
            first, last = off // S, (end - 1) // S if data else off // S
            fast = self.slots.overhead == 0
            # small writes that need no base bytes from S3 (new files, rewritten segments) are
            # a local pwrite: done here, as a worker-thread hop would cost more than the write
            inline = len(data) <= 256 * 1024 and \
                not any(src.base_backed(i) for i in range(first, last + 1))
            try:
                if inline:
                    _write_segments(c, src, S, off, data, fast)
                else:
                    await self.run(_write_segments, c, src, S, off, data, fast)
            except (OSError, IntegrityError, store_errors.StoreError) as exc:
                raise _failed_write(node, c, exc) from None
            finally:
                self.dirty.sync(c)  # counts what the write marked dirty, even if it failed midway
            c.gen += 1
            self.streamer.on_write(node, c, off, end)
            if end > node.attrs.size:
                node.attrs.size = end
            t = now_ns()
            node.attrs.mtime_ns = node.attrs.ctime_ns = t
        return len(data)

    async def _wait_for_space(self) -> None:
        """Writers wait while the bytes or the files not yet in S3 are over their limits
        (`dirty_limit`: every waiting file goes up now; `pending_limit`: the oldest beyond it
        go up now, the rest keep their upload delay, which lets rsync's rename of its temp file
        come first).  The file count is not waited on while S3 is unreachable."""
        while True:
            over_bytes = self.dirty.total > self.cfg.dirty_limit
            excess = self._pending_excess()
            if not over_bytes and excess <= 0:
                return
            drainable = [n for n in self.queue if n.content and n.content.writers == 0]
            if not drainable and not self.running:
                return
            if not over_bytes:  # enough to keep every upload slot busy
                now, want = trio.current_time(), max(excess, self.cfg.upload_concurrency)
                drainable = [n for n in heapq.nsmallest(want, drainable,
                                                        key=lambda n: n.upload_due)
                             if n.upload_due > now and n not in self._failures]
            for n in drainable:
                self._enqueue(n, 0)
            self._kick.set()
            with trio.move_on_after(1):
                await self._space.wait()

    def _pending_excess(self) -> int:
        if self.store.stats.unreachable_since is not None:
            return 0
        return len(self.queue) + len(self.running) - self.cfg.pending_limit

    async def truncate(self, node: Node, size: int) -> None:
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        await self.pages.stop(node)  # fs/pagepush.py: none in flight past the new size
        async with lock_within(node.lock, self.cfg.sync_timeout, node.path):
            c = self._ensure_content(node)
            src = self._source(node)
            S = self.seg.segment_size
            old = node.attrs.size
            if c.stream is not None:
                await self.streamer.discard(c)
            if size < old:
                b, r = divmod(size, S)

                def work() -> None:
                    if r:
                        cur = bytearray(src.plain(b))
                        cur[r:] = bytes(S - r)
                        c.staging.write_segment(b, bytes(cur))
                        c.dirty.add(b)
                    c.dirty.discard_from(-(-size // S))
                    c.staging.truncate_segments(-(-size // S))

                try:
                    await self.run(work)
                except (IntegrityError, store_errors.StoreError, OSError) as exc:
                    mark_failed(c, failure_errno(exc) if isinstance(exc, OSError) else errno.EIO,
                                node.path)
                    log.error("truncate of %r failed: %s", node.path, exc)
                    raise fuse_error(c.failed) from None
                finally:
                    self.dirty.sync(c)
                c.base_segs = min(c.base_segs, size // S)
            c.gen += 1
            if size != old:  # POSIX: times change only if the size does (as the kernel shows)
                node.attrs.size = size
                node.attrs.mtime_ns = node.attrs.ctime_ns = now_ns()

    async def _materialize(self, node: Node) -> None:
        """Copy every base segment into staging, so the file outlives its object."""
        c = self._ensure_content(node)
        src = self._source(node)

        def work() -> None:
            for i in range(c.base_segs):
                if i not in c.dirty:
                    c.staging.write_segment(i, src.plain(i))
                    c.dirty.add(i)

        try:
            await self.run(work)
        finally:
            self.dirty.sync(c)
        c.base = None
        c.base_segs = 0

    def _finish_content(self, node: Node) -> StagingFile | None:
        """The upload of node.content landed: start over from the new object if the file is
        open, else drop the content; returns the staging file, which the caller removes once the
        journal row is gone (if the content was dropped)."""
        c = node.content
        assert c is not None
        if c.writers or node.open_count:
            # still open: keep the staging file but start over from the new object
            assert node.obj is not None
            c.base = node.obj
            c.base_segs = -(-node.attrs.size // self.seg.segment_size)
            c.dirty = DirtySet()
            c.gen += 1
            c.journal_gen = -1
            c.token, c.token_used = identity.new_token(), False  # the next version's
            c.cipher = self.cipher_for(node.obj)
            if self.codec.fresh_key_per_version:  # the next upload is a new version
                c.cipher, fresh = self.codec.new_object()
                c.cipher_meta = self._cipher_meta(fresh)
            # the next version's slots are sealed with its own key (reads in flight of the
            # landed version's slots still open them: the previous key is kept)
            c.staging.cipher = self.slots.for_content(c.cipher, c.staging.cipher)
            node.content = c
            node.content = None if not c.writers and not node.open_count else c
        else:
            node.content = None
        return c.staging

    def _drop_content(self, node: Node) -> None:
        """Forget a file's local content: its dirty bytes, its staging file, the content itself
        (the one place that does; its journal row is the caller's)."""
        c = node.content
        if c is None:
            return
        self.dirty.drop(c)
        c.staging.remove()
        node.content = None

    async def _drop_detached_content(self, node: Node) -> None:
        """`node` was unlinked or replaced by a rename: its streamed upload is aborted, and its
        local bytes go unless the file is still open (reads through an open fd go on)."""
        if node.content is not None and node.content.stream is not None:
            await self.streamer.discard(node.content)
        if node.content is not None and not node.open_count:
            self._drop_content(node)


def _write_segments(c: Content, src: SegmentSource, S: int, off: int, data: bytes,
                    fast: bool) -> None:
    """Put `data` at `off` into the staging file, segment by segment, and mark them dirty.  A
    partial segment that S3 backs is completed from the base first (unless `fast` storage can
    take the span as is)."""
    end = off + len(data)
    first, last = off // S, (end - 1) // S if data else off // S
    view = memoryview(data)
    i = first
    while i <= last:
        s0 = i * S
        a, b = max(off, s0), min(end, s0 + S)
        chunk = view[a - off:b - off]
        full = a == s0 and b == s0 + S
        if full and not fast:  # this and the next whole segments: sealed straight from the
            stop = min(last + 1, end // S)  # caller's buffer, side by side, written at once
            c.staging.write_segments(i, view[s0 - off:stop * S - off])
            for j in range(i, stop):
                c.dirty.add(j)
            i = stop
            continue
        was_dirty = i in c.dirty
        if fast and (full or was_dirty or not src.base_backed(i)):
            c.staging.write_plain_span(a, chunk)
        elif a == s0 and not was_dirty and not src.base_backed(i):
            c.staging.write_segment(i, chunk)  # the rest is zeros (`plain` of a new segment)
        else:
            cur = bytearray(src.plain(i))
            cur[a - s0:b - s0] = chunk
            c.staging.write_segment(i, memoryview(cur))
        if not was_dirty:
            c.dirty.add(i)
        i += 1


def _failed_write(node: Node, c: Content, exc: Exception) -> pyfuse3.FUSEError:
    """Mark this version failed (it is never uploaded) and say why: ENOSPC, else EIO."""
    if isinstance(exc, OSError):
        mark_failed(c, failure_errno(exc), node.path)
        if exc.errno == errno.ENOSPC:
            return fuse_error(errno.ENOSPC)
        log.error("write to %r failed: %s", node.path, exc)
        return fuse_error(errno.EIO)
    mark_failed(c, errno.EIO, node.path)
    log.error("write to %r needed unreadable base data: %s", node.path, exc)
    return fuse_error(errno.EIO)
