"""The node tree: directory listings merged into nodes, HEAD-resolved attributes, forgetting.

A listing never replaces a busy node (local state S3 does not show yet).  docs/INTERNALS.md,
"Filesystem services: who owns what" (tree).
"""

from __future__ import annotations

import errno
import logging
import math
import stat
import time

import pyfuse3

from s3encfs.fs import health
from s3encfs.fs.health import STALE_RETRY
from s3encfs.fs.listing import (
    DirIndex,
    Entry,
    attrs_from_object,
    entries_read_ahead,
    head_many,
    load_directory,
)
from s3encfs.fs.nodes import Node, ObjectRef, drop_forgotten, forgettable
from s3encfs.fs.pending import PendingRows
from s3encfs.fs.state import fuse_error
from s3encfs.fs.tasks import background
from s3encfs.fs.treelist import DirListing
from s3encfs.store import errors as store_errors
from s3encfs.store.s3 import ObjectInfo

log = logging.getLogger("s3encfs.fs")
# `listed_at` while a LIST of the directory runs: stale, like -inf, but told apart from the
# -inf a child forgotten meanwhile leaves (`drop_forgotten`).  That child may have landed after
# the LIST was asked: the listing lacks it, and it is no longer a node `_merge` could keep, so
# the directory is listed again at its next use instead of answering ENOENT for --dir-ttl.
LISTING = -1e300
INLINE_ENTRIES = 2000  # a listing read ahead up to this size becomes entries on the trio thread


class Tree(PendingRows):
    async def ensure_listed(self, d: Node, *, force: bool = False) -> dict[str, Node]:
        if not d.is_dir:
            raise fuse_error(errno.ENOTDIR)
        fresh = d.children is not None and (time.monotonic() - d.listed_at) < self.cfg.dir_ttl
        if fresh and not force:
            assert d.children is not None
            return d.children
        if d.local_only and d.children is not None:
            d.listed_at = time.monotonic()
            return d.children
        async with d.lock:
            if d.children is not None and not force and \
                    (time.monotonic() - d.listed_at) < self.cfg.dir_ttl:
                return d.children
            known = {c.obj.key: (c.obj.etag, c.obj.meta) for c in (d.children or {}).values()
                     if c.obj is not None and not c.provisional}
            # LISTING (see there) from before the listing read ahead is taken: a prefetch of
            # its parent's subdirectories leaves it alone meanwhile (fs/dirprefetch.py)
            before, d.listed_at = d.listed_at, LISTING
            try:
                listed, listed_at, ahead = await self._prelisted_for(d, force)
                asked_at = listed_at
                entries, index = await self._load(d, known, listed, ahead)
            except store_errors.StoreError as exc:
                d.listed_at = before if d.listed_at == LISTING else d.listed_at
                return self._listing_failed(d, exc)
            except BaseException:  # cancelled: not left looking "being listed" for ever
                d.listed_at = before if d.listed_at == LISTING else d.listed_at
                raise
            if d is self.root and index is not None and index.self_attrs and d.row_id is None:
                self._apply_self_attrs(d, index.self_attrs)
            self._merge(d, entries, asked_at)
            d.listed_at = listed_at if d.listed_at == LISTING else -math.inf
            if self.nursery is not None and any(e.provisional for e in entries):
                self.nursery.start_soon(background, self._resolve_children, d)
            assert d.children is not None
            return d.children

    async def _load(self, d: Node, known: dict[str, tuple[str, dict[str, str]]],
                    listed: tuple[list[ObjectInfo], list[str]] | None,
                    ahead: tuple[DirIndex | None] | None,
                    ) -> tuple[list[Entry], DirIndex | None]:
        """`load_directory` in a worker thread; a listing and index read ahead whose files
        the index knows (a cold walk's) are turned into entries here, with no thread hop
        (826 of them in a walk of /usr/include), if small enough not to hold FUSE up."""
        if listed is not None and ahead is not None and \
                len(listed[0]) + len(listed[1]) <= INLINE_ENTRIES:
            entries = entries_read_ahead(self.layout, d.parts, self.cfg.uid, self.cfg.gid,
                                         self.mount_time, known, listed, ahead[0])
            if entries is not None:
                return entries, ahead[0]
        return await self.run(load_directory, self.store, self.layout, self.journal,
                              self.pool, d.parts, self.cfg.uid, self.cfg.gid, self.mount_time,
                              known, listed, ahead)

    def _listing_failed(self, d: Node, exc: store_errors.StoreError) -> dict[str, Node]:
        """What this mount knew of `d`, when a refresh LIST failed in an outage; else EIO."""
        if d.children is not None and health.stale_listing_usable(d, exc):
            log.warning("listing %r failed (%s); using what this mount knew",
                        d.path or "/", exc)
            d.listed_at = time.monotonic() - self.cfg.dir_ttl + STALE_RETRY
            return d.children
        log.error("listing %r failed: %s", d.path or "/", exc)
        raise fuse_error(errno.EIO) from None

    async def _prelisted_for(self, d: Node, force: bool,
                             ) -> tuple[tuple[list[ObjectInfo], list[str]] | None, float,
                                        tuple[DirIndex | None] | None]:
        """A first listing may come from a subtree LIST taken earlier (within --dir-ttl): its
        files and prefixes, when S3 answered (the listing is trusted from then, not longer)
        and the directory's index if it was read ahead (fs/dirprefetch.py; a GET of it in
        flight is waited for); else (None, now, None).  The index read ahead is as good as
        one read now: it only serves a directory with no children in memory (a first
        listing), so nothing this mount changed since is in it — the listing voided by a
        FORGET or a directory rename (`_void_prelisted`, `_tree_gen`) takes it along."""
        now = time.monotonic()
        if d.children is None and not force:
            pre = self._take_prelisted(self.layout.dir_prefix(d.parts))
            if pre is not None and now - pre.at < self.cfg.dir_ttl:
                if pre.index is None and pre.index_reading is not None:
                    await pre.index_reading.wait()
                return (pre.files, pre.sorted_prefixes()), pre.at, pre.index
        return None, now, None

    def _void_prelisted(self, d: Node) -> None:
        """`d` leaves memory (the kernel forgot it): made again, it takes its first listing
        from `prelisted`, and one of a subtree LIST taken before this mount's newest names
        under it landed lacks them (issue 15: rsync's mkstemp got ENOENT in a directory it had
        just made).  Such listings of `d` and below go, and a subtree LIST still running over
        `d` stops (`_tree_gen`); later listings are taken after everything `d` held landed."""
        prefix = self.layout.dir_prefix(d.parts)
        for p in [p for p in self.prelisted if p.startswith(prefix)]:
            self._take_prelisted(p)
        if any(prefix.startswith(p) for p in self._fast_lists):
            self._tree_gen += 1

    def _take_prelisted(self, prefix: str) -> DirListing | None:
        listing = self.prelisted.pop(prefix, None)
        if listing is not None:
            self._prelisted_keys -= len(listing.files) + len(listing.prefixes)
        return listing

    async def _resolve_children(self, d: Node) -> None:
        """Background HEADs for a big directory listed with LIST-only attributes."""
        todo = [c for c in (d.children or {}).values() if c.provisional and c.obj is not None]
        for i in range(0, len(todo), 1024):
            batch = [n for n in todo[i:i + 1024] if n.provisional]
            infos = await self.run(
                head_many, self.store, self.journal, self.pool,
                [n.obj.key for n in batch if n.obj is not None])
            for n in batch:
                info = infos.get(n.obj.key) if n.obj is not None else None
                if info is not None and n.provisional:
                    self._apply_head(n, info)

    def _apply_head(self, node: Node, info: ObjectInfo) -> None:
        attrs, corrupt = attrs_from_object(self.layout, info, info.metadata or {},
                                           self.cfg.uid, self.cfg.gid)
        node.attrs = attrs
        node.obj = ObjectRef(info.key, info.etag, info.size, attrs.size, info.metadata or {})
        node.corrupt = corrupt
        node.provisional = False

    async def resolve(self, node: Node) -> None:
        """Real attributes of a provisional node (one HEAD), before the kernel sees them."""
        if not node.provisional or node.obj is None:
            return
        try:
            key = node.obj.key
            if self.store.awaitable_reads:  # on the CRT, awaited with no worker thread
                info = await self.store.ahead(key)
            else:
                info = await self.run(self.store.head, key)
        except store_errors.StoreError as exc:
            log.warning("HEAD %s failed: %s", node.obj.key, exc)
            node.provisional = False
            return
        if node.provisional:
            self._apply_head(node, info)

    async def load_root(self) -> None:
        """Root attributes live in the root index (S3 has no object for the mount root)."""
        try:
            await self.ensure_listed(self.root, force=True)
        except pyfuse3.FUSEError:
            log.warning("could not list the mount root yet; it will be retried on access")

    def _apply_self_attrs(self, d: Node, meta: dict[str, str]) -> None:
        from s3encfs.store.layout import meta_to_attrs
        a = meta_to_attrs(meta, default_mode=d.attrs.mode, size=0,
                          last_modified=self.mount_time, uid=self.cfg.uid, gid=self.cfg.gid)
        a.mode = stat.S_IFDIR | stat.S_IMODE(a.mode)
        d.attrs = a

    def _busy(self, node: Node) -> bool:
        return (node.content is not None or node.meta_dirty or node.row_id is not None
                or node.local_only or node in self.running)

    def _kernel_size_stale(self, node: Node, e: Entry) -> bool:
        """Another writer replaced a clean file the kernel holds an inode for.  With the
        writeback cache on, the kernel never takes a regular file's size or mtime from us
        for an inode it already has (nor does `invalidate_inode` reset them): reads of the new
        version would stop at the old size or be padded with NUL bytes.  So the new version
        gets a new Node, hence a new inode number; the kernel drops its dentry at the next
        lookup (a new node id) and builds a fresh inode from our attributes.  The old Node
        stays in `inodes` until the kernel forgets it (`drop_forgotten` leaves the new one
        in the listing).  A file open here keeps its node and version (`_merge`).
        docs/SEMANTICS.md, "What a warm mount sees of another writer"."""
        return (not node.is_dir and e.obj is not None and node.obj is not None
                and node.obj.etag != e.obj.etag and node.lookups > 0
                and forgettable(node, (self.queue, self.running, self.index_queue)))

    def _merge(self, d: Node, entries: list[Entry], asked_at: float = math.inf) -> None:
        """Fold a listing S3 answered for a request made at `asked_at` (monotonic) into `d`.
        What this mount changed since then is newer than the listing and is kept as it is: a
        node whose object or place changed (`Node.touched`, e.g. an upload that landed while
        the LIST ran, which dropped the name and broke rsync's rename of its temp file), and a
        name removed here (`Node.gone`), which the listing must not bring back."""
        old = d.children or {}
        new: dict[str, Node] = {}
        gone = d.gone or {}
        for e in entries:
            node = old.get(e.name)
            if node is None and gone.get(e.name, -math.inf) >= asked_at:
                continue  # removed here after S3 answered
            if node is not None and node.touched >= asked_at:
                new[e.name] = node  # changed here after S3 answered: ours is newer
                continue
            if node is not None and node.is_dir != (e.obj is None):
                node = None if not self._busy(old[e.name]) else old[e.name]
            if node is not None and self._kernel_size_stale(node, e):
                node = None  # a new inode: the kernel keeps the old one's size (see above)
            if node is None:
                node = self._make_node(d, e.name, e.attrs)
                node.obj = e.obj
                node.corrupt = e.corrupt
                node.provisional = e.provisional
            elif not self._busy(node) and not node.open_count:
                # a file open here keeps the version it was opened at until its last close
                # (its kernel inode keeps that size); the next listing then gives a new inode
                self._refresh(d, node, e)
            new[e.name] = node
        self._keep_unlisted(old, new, asked_at)
        d.children = new
        if d.gone:  # a listing asked for after a removal shows it: the tombstone is done
            d.gone = {n: t for n, t in d.gone.items() if t >= asked_at} or None

    def _refresh(self, d: Node, node: Node, e: Entry) -> None:
        """A clean node the listing shows again: take its (maybe new) object and attributes."""
        if e.obj is not None and (node.obj is None or node.obj.etag != e.obj.etag):
            node.version += 1
            node.link_target = None
        if not (node.is_dir and d.index_dirty):
            # d's index rewrite is pending (e.g. d was just moved by a directory
            # rename): S3 does not hold its subdirectories' attributes yet
            node.attrs = e.attrs
        if e.provisional and node.obj is not None and e.obj is not None \
                and node.obj.etag == e.obj.etag and not node.provisional:
            return  # already resolved this version: keep its object and metadata
        node.obj = e.obj
        node.corrupt = e.corrupt
        node.provisional = e.provisional

    def _keep_unlisted(self, old: dict[str, Node], new: dict[str, Node],
                       asked_at: float) -> None:
        """Names the listing lacks stay when they hold local state S3 does not show yet (or
        changed here after S3 answered), and so does a directory with such a child."""
        for name, node in old.items():
            if name in new:
                continue
            busy_child = node.is_dir and node.children and \
                any(self._busy(c) for c in node.children.values())
            if self._busy(node) or node.touched >= asked_at or busy_child:
                new[name] = node

    def forget(self, inode: int, n: int) -> None:
        node = self.inodes.get(inode)
        if node is None or inode == pyfuse3.ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - n)
        if node.unlinked and node.lookups == 0 and node.open_count == 0:
            self.inodes.pop(inode, None)
        else:  # memory follows what the kernel still knows (a parent forgotten first, too)
            pending = (self.queue, self.running, self.index_queue)
            while node is not None and node is not self.root and node.lookups == 0 and \
                    not node.unlinked and forgettable(node, pending):
                if node.is_dir:
                    self._void_prelisted(node)
                drop_forgotten(self.inodes, node)
                node = node.parent
