"""open, flush and release: a closed version is journaled before close() returns, then queued.

docs/INTERNALS.md, "Filesystem services: who owns what" (handles).
"""

from __future__ import annotations

import errno

import pyfuse3
import trio

from s3encfs.fs.diskfull import failure_errno, mark_failed
from s3encfs.fs.nodes import Content, Node
from s3encfs.fs.state import fuse_error
from s3encfs.fs.tasks import background
from s3encfs.fs.writeback import Writeback


class OpenFiles(Writeback):
    async def open(self, node: Node, write: bool) -> None:
        if write and self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        if write and node.content is not None and node.content.writers == 0 and \
                node.content.journal_gen >= 0:
            # a closed version is journaled: get it into S3 before new writes can tear it
            await self.fsync(node)
        node.open_count += 1
        if write:
            self._ensure_content(node).writers += 1
            await self.pages.stop(node)  # no page of the object stored over the writer's

    async def release(self, node: Node, write: bool) -> None:
        node.open_count -= 1
        c = node.content
        if write and c is not None:
            c.writers -= 1
        if node.unlinked:
            if node.open_count == 0 and c is not None:
                self._drop_content(node)
                if node.lookups == 0:
                    self.inodes.pop(node.inode, None)
            return
        if write and c is not None and c.writers == 0:
            if c.gen != c.journal_gen and not c.failed:
                self._persist_or_fail(node, c)
            if c.failed:
                await self._abandon(node, c)
                return
            self.schedule(node)
        elif c is not None and c.writers == 0 and c.journal_gen < 0 and not c.dirty.any() \
                and node.obj is not None and c.gen == 0:
            self._drop_content(node)  # opened for writing, nothing written

    async def flush(self, node: Node) -> None:
        c = node.content
        # only for a writer: a reader's close of a file whose upload landed while it was open
        # journaled a row that nothing uploaded or removed (replayed at the next mount)
        if c is not None and c.writers and c.gen != c.journal_gen and not node.unlinked \
                and not c.failed:
            self._persist_or_fail(node, c)
        if c is not None and c.failed and not node.unlinked:
            raise fuse_error(c.failed)  # close() reports the failed write, every time

    def _persist_or_fail(self, node: Node, c: Content) -> None:
        try:
            self.persist(node)
        except OSError as exc:  # the journal cannot take the row (full disk)
            mark_failed(c, failure_errno(exc), node.path)

    async def _abandon(self, node: Node, c: Content) -> None:
        """The last writer closed a failed version: drop it; the file is what S3 holds."""
        self.queue.discard(node)
        if c.stream is not None:
            await self.streamer.discard(c)
        self._drop_row(node)
        self._drop_content(node)
        node.version += 1  # the kernel's pages of the failed version go at the next open
        node.attrs.size = node.obj.plain_size if node.obj is not None else 0
        # a new file stays, empty and local: nothing goes up for a close that failed
        if self.nursery is not None:  # with the writeback cache the kernel trusts its size
            self.nursery.start_soon(background, trio.to_thread.run_sync,
                                    pyfuse3.invalidate_inode, node.inode)
