"""chmod, chown, utime, truncate through setattr, and xattrs; a change is journaled and queued.

Re-sealing attributes that did not authenticate is refused (docs/INTERNALS.md, "Client format
v2").
"""

from __future__ import annotations

import errno
import logging
import stat

from s3encfs.fs import identity
from s3encfs.fs.nodes import Node
from s3encfs.fs.state import fuse_error
from s3encfs.fs.writeback import Writeback
from s3encfs.store.layout import Attrs, attrs_to_meta, now_ns

log = logging.getLogger("s3encfs.fs")


class Attributes(Writeback):
    def attrs_changed(self, node: Node) -> None:
        node.attrs.ctime_ns = now_ns()
        if node.is_dir:
            self.persist(node)
            target = node.parent if node.parent is not None else node
            self.schedule_index(target)
            return
        if node.content is None:
            if node.obj is None:
                return
            node.meta_dirty = True
        self.persist(node)
        self.schedule(node)

    async def setattr(self, node: Node, *, mode: int | None = None, uid: int | None = None,
                      gid: int | None = None, size: int | None = None,
                      atime_ns: int | None = None, mtime_ns: int | None = None) -> None:
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        self._refuse_laundering(node, size)
        if size is not None:
            if node.is_dir:
                raise fuse_error(errno.EISDIR)
            if node.content is not None and node.content.writers == 0 and \
                    node.content.journal_gen >= 0:
                await self.fsync(node)
            await self.truncate(node, size)
        a = node.attrs
        if size is None and (mode is None or stat.S_IMODE(mode) == stat.S_IMODE(a.mode)) \
                and uid in (None, a.uid) and gid in (None, a.gid) \
                and atime_ns in (None, a.atime_ns) and mtime_ns in (None, a.mtime_ns):
            # nothing changes (rsync's chmod to the mode a file already has; the kernel writing
            # back an mtime it got from us): no journal write, no upload
            a.ctime_ns = now_ns()
            return
        if mode is not None:
            a.mode = stat.S_IFMT(a.mode) | stat.S_IMODE(mode)
        if uid is not None:
            a.uid = uid
        if gid is not None:
            a.gid = gid
        if atime_ns is not None:
            a.atime_ns = atime_ns
        if mtime_ns is not None:
            a.mtime_ns = mtime_ns
        if node.content is not None and node.content.writers:
            node.attrs.ctime_ns = now_ns()
            return  # persisted at close
        self.attrs_changed(node)

    def _refuse_laundering(self, node: Node, size: int | None = None) -> None:
        """Re-sealing the attrs of an object whose own do not authenticate would make a planted
        or moved object valid: refused (EIO) unless the file's content is being replaced."""
        if node.corrupt and node.content is None and size != 0 and \
                self.codec.authenticates_attrs:
            log.error("changing attributes of %r (%s) refused: %s", node.path,
                      node.obj.key if node.obj else "?", node.corrupt)
            raise fuse_error(errno.EIO)

    async def set_xattrs(self, node: Node, xattrs: dict[bytes, bytes]) -> None:
        self._refuse_laundering(node)
        meta = attrs_to_meta(Attrs(node.attrs.mode, xattrs=xattrs))
        if len(meta.get("xattr", "")) > 1500:
            raise fuse_error(errno.ENOSPC)
        # A sealing codec has a smaller budget (sealed attrs + key entries must fit S3's 2 KB):
        # refuse here, or the file's every upload would fail and its data never reach S3.
        cipher_meta = node.content.cipher_meta if node.content is not None else \
            self._cipher_meta(node.obj.meta) if node.obj is not None else None
        if cipher_meta is not None and not node.is_dir:
            trial = node.attrs.copy()
            trial.xattrs = xattrs
            try:
                self.object_meta(cipher_meta, trial, self.key_of(node), identity.new_token())
            except ValueError:
                raise fuse_error(errno.ENOSPC) from None
        node.attrs.xattrs = xattrs
        self.attrs_changed(node)
