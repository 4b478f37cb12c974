"""Namespace operations but rename: create, mkdir, symlink, unlink, rmdir.

S3 ordering (a directory's marker before its children) is in docs/INTERNALS.md, "Filesystem
services: who owns what" (namespace).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

from s3encfs.fs.nodes import Node
from s3encfs.fs.state import fuse_error
from s3encfs.fs.writeback import Writeback
from s3encfs.store import errors as store_errors
from s3encfs.store.layout import Attrs, now_ns

log = logging.getLogger("s3encfs.fs")


class Namespace(Writeback):
    def touch_dir(self, d: Node) -> None:
        t = now_ns()
        d.attrs.mtime_ns = d.attrs.ctime_ns = t
        self.schedule_index(d.parent if d.parent is not None else d)

    async def _new_child(self, parent: Node, name: str, mode: int, uid: int, gid: int,
                         rdev: int = 0) -> Node:
        """A new entry in `parent` (checks: read-only, name limits, EEXIST)."""
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        self.check_name(parent, name)
        children = await self.ensure_listed(parent)
        if name in children:
            raise fuse_error(errno.EEXIST)
        t = now_ns()
        node = self._make_node(parent, name, Attrs(mode, uid, gid, 0, t, t, t, rdev))
        children[name] = node
        return node

    async def create_file(self, parent: Node, name: str, mode: int, uid: int, gid: int,
                          rdev: int = 0) -> Node:
        node = await self._new_child(parent, name, mode, uid, gid, rdev)
        self._ensure_content(node)
        self.touch_dir(parent)
        return node

    async def mkdir(self, parent: Node, name: str, mode: int, uid: int, gid: int) -> Node:
        node = await self._new_child(parent, name, stat.S_IFDIR | stat.S_IMODE(mode), uid, gid)
        node.children = {}
        node.listed_at = time.monotonic()
        node.local_only = True
        # the marker goes up in the background like a file (journaled first, so a crash
        # replays it): an rsync creating hundreds of directories does not wait a PUT for each,
        # and a directory removed within the coalescing delay costs no request at all
        node.marker_pending = True
        self.persist(node)
        self.schedule(node)
        self.touch_dir(parent)
        return node

    async def symlink(self, parent: Node, name: str, target: str, uid: int, gid: int) -> Node:
        node = await self.create_file(parent, name, stat.S_IFLNK | 0o777, uid, gid)
        data = os.fsencode(target)
        await self.write(node, 0, data)
        node.link_target = target
        self.persist(node)
        await self.fsync(node)
        return node

    async def _existing_child(self, parent: Node, name: str) -> tuple[dict[str, Node], Node]:
        """(parent's children, the child) for an entry about to be removed (EROFS, ENOENT)."""
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        children = await self.ensure_listed(parent)
        node = children.get(name)
        if node is None:
            raise fuse_error(errno.ENOENT)
        return children, node

    async def unlink(self, parent: Node, name: str) -> None:
        children, node = await self._existing_child(parent, name)
        if node.is_dir:
            raise fuse_error(errno.EISDIR)
        async with node.lock:
            if node.open_count and node.obj is not None:
                await self._materialize(node)
            children.pop(name, None)
            parent.removed_child(name)
            node.unlinked = True
            self.queue.discard(node)
            self._drop_row(node)
            if node.obj is not None:
                try:
                    await self.run(self.store.delete, node.obj.key)
                except store_errors.StoreError as exc:
                    log.error("delete of %r failed: %s", node.path, exc)
                    children[name] = node
                    node.unlinked = False
                    raise fuse_error(errno.EIO) from None
                self.journal.forget_meta(node.obj.key)
                node.obj = None
            elif node.replaced_etag is not None:
                # renamed over an object and unlinked before its upload: that object goes too
                try:
                    await self.run(self.store.delete, self.key_of(node))
                except store_errors.StoreError as exc:
                    log.error("delete of %r failed: %s", node.path, exc)
                    children[name] = node
                    node.unlinked = False
                    raise fuse_error(errno.EIO) from None
                node.replaced_etag = None
            await self._drop_detached_content(node)
        self.touch_dir(parent)

    async def rmdir(self, parent: Node, name: str) -> None:
        children, node = await self._existing_child(parent, name)
        if not node.is_dir:
            raise fuse_error(errno.ENOTDIR)
        sub = await self.ensure_listed(node, force=True)
        if sub:
            raise fuse_error(errno.ENOTEMPTY)
        self.queue.discard(node)
        async with node.lock:  # a marker PUT in flight must not land after the delete
            try:
                await self.run(self.store.delete, self.layout.dir_prefix(node.parts))
                await self.run(self.store.delete, self.layout.index_key(node.parts))
            except store_errors.StoreError as exc:
                log.error("rmdir %r failed: %s", node.path, exc)
                if node.marker_pending:
                    self.schedule(node, 0)
                raise fuse_error(errno.EIO) from None
            node.marker_pending = False
        children.pop(name, None)
        parent.removed_child(name)
        node.unlinked = True
        self.index_queue.discard(node)
        self._drop_row(node)
        self.touch_dir(parent)
