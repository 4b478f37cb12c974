"""pyfuse3 request handlers: thin translation between FUSE and `FsCore`."""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pyfuse3

from s3encfs.crypto.names import MAX_PLAIN
from s3encfs.fs.core import FsCore, fuse_error
from s3encfs.fs.nodes import Node

log = logging.getLogger("s3encfs.fs")

XATTR_ALLOWED = (b"user.",)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


def _guarded(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An unexpected exception fails one request with EIO (and a log line with the traceback)
    instead of escaping into pyfuse3, which would end the whole mount."""

    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts = args[0].fuse_requests  # per-op FUSE request counts, shown by `status`
        counts[name] = counts.get(name, 0) + 1
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # cache disk full: say so, not EIO
                log.error("%s: %s", fn.__name__, exc)
                raise pyfuse3.FUSEError(exc.errno) from None
            log.exception("internal error in %s; returning EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("internal error in %s; returning EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _guard_handlers(cls: type) -> type:
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(value):
            setattr(cls, name, _guarded(value))
    return cls


@_guard_handlers
class Operations(pyfuse3.Operations):
    enable_writeback_cache = True
    supports_dot_lookup = True

    def __init__(self, core: FsCore):
        super().__init__()
        self.core = core
        # lives in core.stats, so `s3encfs status` reports it as `fuse_requests`
        self.fuse_requests: dict[str, int] = core.stats.setdefault("fuse_requests", {})
        self._handles: dict[int, tuple[Node, bool]] = {}
        self._dir_handles: dict[int, list[tuple[str, Node]]] = {}
        self._next_fh = 1
        # the longest name a component may have: scheme-1 encrypted names carry a SIV tag and
        # base32 inside S3's 255-character key components, scheme 2 hashes long ones
        # (crypto/names.py), plain ones do not
        self.name_max = getattr(core.codec, "name_max", MAX_PLAIN) \
            if core.codec.encrypts_names else 255

    # -- helpers -----------------------------------------------------------------------------
    def _node(self, inode: int) -> Node:
        node = self.core.inodes.get(inode)
        if node is None:
            raise fuse_error(errno.ENOENT)
        return node

    def _entry(self, node: Node) -> pyfuse3.EntryAttributes:
        a = node.attrs
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.inode
        e.generation = 0
        e.entry_timeout = self.core.cfg.entry_ttl
        # provisional attributes (LIST only) must not be cached: the kernel asks again
        e.attr_timeout = 0 if node.provisional else self.core.cfg.entry_ttl
        e.st_mode = a.mode
        e.st_nlink = 0 if node.unlinked else 2 if node.is_dir else 1  # fstat after unlink: 0
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = a.rdev
        e.st_size = a.size
        e.st_blksize = 128 * 1024
        e.st_blocks = (a.size + 511) // 512
        e.st_atime_ns = a.atime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def _lookup_ref(self, node: Node) -> pyfuse3.EntryAttributes:
        node.lookups += 1
        return self._entry(node)

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # -- lookups -----------------------------------------------------------------------------
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        n = _name(name)
        if n == ".":
            return self._lookup_ref(parent)
        if n == "..":
            return self._lookup_ref(parent.parent or parent)
        if not parent.is_dir:
            raise fuse_error(errno.ENOTDIR)
        if len(name) > self.name_max:
            raise fuse_error(errno.ENAMETOOLONG)  # no such name can exist (was ENOENT)
        node = await self.core.lookup(parent, n)
        if node is None:
            e = pyfuse3.EntryAttributes()
            e.st_ino = 0
            # a negative entry lives as long as a positive one (--attr-timeout): rsync asks for
            # each new name 3 times (the generator's lstat, the receiver's open of a basis
            # file, the rename); another writer's new file shows within --dir-ttl anyway
            e.entry_timeout = self.core.cfg.entry_ttl
            return e
        await self.core.resolve(node)
        return self._lookup_ref(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, n in inode_list:
            self.core.forget(inode, n)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        await self.core.resolve(node)
        return self._entry(node)

    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any, fh: Any, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        kw: dict[str, Any] = {}
        if fields.update_mode:
            kw["mode"] = attr.st_mode
        if fields.update_uid:
            kw["uid"] = attr.st_uid
        if fields.update_gid:
            kw["gid"] = attr.st_gid
        if fields.update_size:
            self._check_size(attr.st_size)
            kw["size"] = attr.st_size
        if fields.update_atime:
            kw["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            kw["mtime_ns"] = attr.st_mtime_ns
        await self.core.setattr(node, **kw)
        return self._entry(node)

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self._node(inode)
        if not stat.S_ISLNK(node.attrs.mode):
            raise fuse_error(errno.EINVAL)
        return os.fsencode(await self.core.readlink(node))

    # -- directories -------------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        children = await self.core.ensure_listed(node)
        self.core.prefetch_subdirs(node)
        fh = self._fh()
        dots = [(".", node), ("..", node.parent or node)]
        self._dir_handles[fh] = dots + sorted(children.items())
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dir_handles.get(fh, [])
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            if node.unlinked:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(node), i + 1):
                return
            if i >= 2:  # the kernel takes no reference for "." and ".."
                node.lookups += 1
                # forgotten while this handle was open: the kernel knows it again
                self.core.inodes.setdefault(node.inode, node)

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.core.flush_all_bounded()

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        node = await self.core.mkdir(
            parent, _name(name), mode & ~ctx.umask, ctx.uid, self._gid(parent, ctx)
        )
        return self._lookup_ref(node)

    def _gid(self, parent: Node, ctx: Any) -> int:
        if parent.attrs.mode & stat.S_ISGID:
            return parent.attrs.gid
        return int(ctx.gid)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.core.rmdir(self._node(parent_inode), _name(name))

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.core.unlink(self._node(parent_inode), _name(name))

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.core.rename(
            self._node(parent_inode_old),
            _name(name_old),
            self._node(parent_inode_new),
            _name(name_new),
            flags,
        )

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise fuse_error(errno.EPERM)  # hard links cannot be represented 1:1 in S3

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        node = await self.core.symlink(
            parent, _name(name), os.fsdecode(target), ctx.uid, self._gid(parent, ctx)
        )
        return self._lookup_ref(node)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        node = await self.core.create_file(
            parent, _name(name), mode & ~ctx.umask, ctx.uid, self._gid(parent, ctx), rdev
        )
        self.core.created(node)
        return self._lookup_ref(node)

    # -- files ---------------------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise fuse_error(errno.EISDIR)
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        if node.corrupt and not write and node.content is None:
            # e.g. a body truncated to 0 bytes: the kernel never calls read() for a size-0 file,
            # so refusing here is the only way the reader sees EIO instead of an empty file.
            log.error(
                "open of %r (%s) refused: %s",
                node.path,
                node.obj.key if node.obj else "?",
                node.corrupt,
            )
            raise fuse_error(errno.EIO)
        await self.core.open(node, write)
        if write and flags & os.O_TRUNC and node.attrs.size:
            # libfuse3 enables FUSE_CAP_ATOMIC_O_TRUNC: the kernel sends no setattr(size=0)
            # and leaves the truncation to open(); without this the old tail stayed in S3.
            try:
                await self.core.truncate(node, 0)
            except BaseException:
                await self.core.release(node, write)
                raise
        fh = self._fh()
        self._handles[fh] = (node, write)
        keep = node.version == node.cached_version  # kernel pages still match S3
        node.cached_version = node.version
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        node = await self.core.create_file(
            parent, _name(name), mode & ~ctx.umask, ctx.uid, self._gid(parent, ctx)
        )
        await self.core.open(node, True)
        fh = self._fh()
        self._handles[fh] = (node, True)
        return pyfuse3.FileInfo(fh=fh), self._lookup_ref(node)

    def _handle(self, fh: int) -> tuple[Node, bool]:
        h = self._handles.get(fh)
        if h is None:
            raise fuse_error(errno.EBADF)
        return h

    async def read(self, fh: int, off: int, size: int) -> bytes:
        node, _w = self._handle(fh)
        # a read-only view of a cached block, not a copy: pyfuse3 replies from any buffer
        return await self.core.read(node, off, size)  # type: ignore[return-value]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node, _w = self._handle(fh)
        self._check_size(off + len(buf))
        return await self.core.write(node, off, buf)

    def _check_size(self, size: int) -> None:
        """EFBIG past the codec's limit (s3ec: one AES-GCM stream, 2^36 - 32 bytes)."""
        limit = getattr(self.core.codec, "max_file_size", None)
        if limit is not None and size > limit:
            raise pyfuse3.FUSEError(errno.EFBIG)

    async def flush(self, fh: int) -> None:
        node, _w = self._handle(fh)
        await self.core.flush(node)

    async def release(self, fh: int) -> None:
        node, write = self._handles.pop(fh, (None, False))
        if node is not None:
            await self.core.release(node, write)

    async def fsync(self, fh: int, datasync: bool) -> None:
        node, _w = self._handle(fh)
        self.core.persist(node) if node.content is not None else None
        await self.core.fsync(node)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = 128 * 1024
        s.f_frsize = 4096
        total = 1 << 50  # S3 has no fixed size: report 1 PiB, all free
        s.f_blocks = total // s.f_frsize
        s.f_bfree = s.f_bavail = s.f_blocks
        s.f_files = 1 << 32
        s.f_ffree = s.f_favail = s.f_files
        s.f_namemax = self.name_max
        return s

    # -- xattrs ----------------------------------------------------------------------------------
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        node = self._node(inode)
        try:
            return node.attrs.xattrs[name]
        except KeyError:
            raise fuse_error(pyfuse3.ENOATTR) from None

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return list(self._node(inode).attrs.xattrs)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        if not name.startswith(XATTR_ALLOWED):
            raise fuse_error(errno.ENOTSUP)
        node = self._node(inode)
        x = dict(node.attrs.xattrs)
        x[name] = value
        await self.core.set_xattrs(node, x)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        node = self._node(inode)
        if name not in node.attrs.xattrs:
            raise fuse_error(pyfuse3.ENOATTR)
        x = dict(node.attrs.xattrs)
        del x[name]
        await self.core.set_xattrs(node, x)
