"""The filesystem's state machine: the node tree, file contents, and the upload queue.

Runs on the trio thread; every blocking call (boto3, disk, crypto on big buffers) goes to a
worker thread.  `fs/operations.py` translates FUSE requests into calls on `FsCore`.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pyfuse3
import trio

from s3encfs import defaults
from s3encfs.cache.blocks import BlockCache
from s3encfs.cache.journal import Journal
from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.codec import Codec, IntegrityError, NameTooLong, ObjectCipher
from s3encfs.fs import health, identity, rebase, small_upload
from s3encfs.fs.bounded import SyncTimeout, bounded, lock_within
from s3encfs.fs.dirty import DirtyAccount
from s3encfs.fs.diskfull import failure_errno, mark_failed
from s3encfs.fs.health import STALE_RETRY
from s3encfs.fs.listing import (
    DirIndex,
    Entry,
    attrs_from_object,
    head_many,
    load_directory,
    metadata_rewritten,
    read_index,
    write_index,
)
from s3encfs.fs.lru import CIPHER_CACHE, LruDict
from s3encfs.fs.nodes import Content, Node, ObjectRef, drop_forgotten, forgettable
from s3encfs.fs.sealing import reseal_for_move
from s3encfs.fs.streaming import Streamer
from s3encfs.fs.tasks import background
from s3encfs.fs.treelist import DirListing, SubtreeSplitter
from s3encfs.fs.uploader import SegmentSource, StreamedParts, Uploader, UploadJob
from s3encfs.store import errors as store_errors
from s3encfs.store.layout import CONTROL_DIR, Attrs, Layout, attrs_to_meta, now_ns
from s3encfs.store.s3 import ObjectInfo, ObjectStore

log = logging.getLogger("s3encfs.fs")
T = TypeVar("T")
FAST_LIST_PAGES = 20  # a subtree listing stops after this many 1,000-key pages
PRELISTED_MAX_KEYS = 200_000  # no new subtree listing while this many keys wait to be used


def fuse_error(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


@dataclass
class FsConfig:
    cache_dir: str
    cache_size: int = defaults.CACHE_SIZE
    entry_ttl: float = defaults.ATTR_TIMEOUT
    dir_ttl: float = defaults.DIR_TTL
    fast_list: bool = defaults.FAST_LIST
    upload_delay: float = defaults.UPLOAD_DELAY
    upload_concurrency: int = defaults.UPLOAD_CONCURRENCY
    download_concurrency: int = defaults.DOWNLOAD_CONCURRENCY
    s3_threads: int = 32
    dirty_limit: int = defaults.MAX_DIRTY
    segs_per_block: int = 16
    part_segments: int = defaults.MULTIPART_SIZE // (64 * 1024)  # of 64 KiB segments
    read_only: bool = False
    conditional_writes: bool = True
    sync_timeout: float = defaults.SYNC_TIMEOUT  # fsync/fsyncdir: EIO after (fs/bounded.py)
    uid: int = 0
    gid: int = 0


class FsCore:
    def __init__(self, store: ObjectStore, codec: Codec, prefix: str, cfg: FsConfig):
        self.store = store
        self.codec = codec
        self.cfg = cfg
        self.layout = Layout(prefix, codec)
        self.seg = codec.layout
        os.makedirs(cfg.cache_dir, mode=0o700, exist_ok=True)
        self.staging_dir = os.path.join(cfg.cache_dir, "staging")
        os.makedirs(self.staging_dir, mode=0o700, exist_ok=True)
        sealed = codec.name == "client"
        self.journal = Journal(os.path.join(cfg.cache_dir, "journal.sqlite"),
                               seal=codec.seal_blob if sealed else None,
                               unseal=codec.open_blob if sealed else None)
        self.pool = ThreadPoolExecutor(max_workers=cfg.s3_threads, thread_name_prefix="s3")
        self.block_bytes = cfg.segs_per_block * self.seg.stride
        self.blocks = BlockCache(cfg.cache_dir, store, self.block_bytes, cfg.cache_size)
        self.uploader = Uploader(
            store, self.blocks, self.seg, cfg.segs_per_block, cfg.part_segments, self.pool,
            track=lambda key, upload_id: self.journal.set_kv(f"mpu:{upload_id}", key),
            untrack=lambda upload_id: self.journal.delete_kv(f"mpu:{upload_id}"),
            reuse_base=not codec.fresh_key_per_version)
        self.slots = codec.slot_cipher(cfg.cache_dir)
        self.streamer = Streamer(self)
        self.limiter = trio.CapacityLimiter(cfg.s3_threads)
        self.inodes: dict[int, Node] = {}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        now = now_ns()
        root_attrs = Attrs(stat.S_IFDIR | 0o755, cfg.uid, cfg.gid, 0, now, now, now)
        self.root = Node(pyfuse3.ROOT_INODE, None, "", root_attrs)
        self.inodes[self.root.inode] = self.root
        self.mount_time = time.time()
        self._ciphers: dict[tuple[str, str], ObjectCipher] = LruDict(CIPHER_CACHE)  # fs/lru.py
        self.queue: set[Node] = set()
        self._heap: list[tuple[float, int, Node]] = []
        self._failures: dict[Node, int] = {}  # consecutive upload failures (retry backoff)
        self._seq = itertools.count()
        self.index_queue: set[Node] = set()
        self.running: set[Node] = set()
        self._kick = trio.Event()
        self._wake_at = -math.inf  # when the upload loop, waiting, wakes up next
        self._idle = trio.Event()
        self.dirty = DirtyAccount(self.seg.segment_size)  # the one owner of dirty_bytes
        self._stale_rows: set[int] = set()  # journal rows whose delete waits for disk space
        self._space = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.prefetch_limiter = trio.CapacityLimiter(cfg.download_concurrency)
        self._prefetching: set[tuple[str, str, int]] = set()
        self._advised: dict[tuple[str, str], int] = {}  # last disk block read ahead, per object
        self.dir_prefetch_limiter = trio.CapacityLimiter(8)
        # cold tree walks: directory listings split out of one undelimited LIST of a subtree,
        # each used once for a directory's first listing (while younger than dir_ttl)
        self.prelisted: dict[str, DirListing] = {}
        self._prelisted_keys = 0
        self._fast_lists: set[str] = set()  # subtree prefixes being listed
        self._after_fast_list: dict[str, Node] = {}  # prefetches waiting for a running one
        self._tree_gen = 0  # bumped by directory renames: listings taken before are void
        self.stats: dict[str, Any] = {"uploads": 0, "upload_errors": 0, "last_upload": None,
                                      "last_error": None, "reads": 0, "read_bytes": 0}

    # -- helpers -----------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args, **kw), limiter=self.limiter)

    def new_inode(self) -> int:
        ino = self._next_inode
        self._next_inode += 1
        return ino

    def cipher_for(self, obj: ObjectRef) -> ObjectCipher:
        ident = (obj.key, obj.etag)
        c = self._ciphers.get(ident)
        if c is None:
            c = self.codec.open_object(obj.meta)
            if len(self._ciphers) > 4096:
                self._ciphers.clear()
            self._ciphers[ident] = c
        return c

    def object_meta(self, cipher_meta: dict[str, str], attrs: Attrs, key: str,
                    token: str | None = None) -> dict[str, str]:
        """Metadata of the object at `key`: key material + attrs (with the upload's token)
        sealed for that key."""
        meta = dict(cipher_meta)
        meta.update(self.codec.seal_attrs(cipher_meta,
                                          identity.stamped(attrs_to_meta(attrs), token),
                                          self.layout.rel_key(key)))
        return meta

    def key_of(self, node: Node) -> str:
        return self.layout.file_key(node.parts)

    def child_parts(self, parent: Node, name: str) -> tuple[str, ...]:
        return (*parent.parts, name)

    def check_name(self, parent: Node, name: str) -> None:
        if parent is self.root and name == CONTROL_DIR and not self.codec.encrypts_names:
            raise fuse_error(errno.EPERM)
        try:
            self.layout.encode_rel(self.child_parts(parent, name))
        except NameTooLong:
            raise fuse_error(errno.ENAMETOOLONG) from None
        except ValueError:
            raise fuse_error(errno.EILSEQ) from None

    # -- tree --------------------------------------------------------------------------------
    def _make_node(self, parent: Node, name: str, attrs: Attrs) -> Node:
        node = Node(self.new_inode(), parent, name, attrs)
        self.inodes[node.inode] = node
        return node

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
            listed = None
            listed_at = time.monotonic()
            if d.children is None and not force:  # first listing: a subtree LIST may have it
                pre = self._take_prelisted(self.layout.dir_prefix(d.parts))
                if pre is not None and listed_at - pre.at < self.cfg.dir_ttl:
                    listed = (pre.files, pre.sorted_prefixes())
                    listed_at = pre.at  # trusted for dir_ttl from when S3 said it, not longer
            try:
                entries, index = await trio.to_thread.run_sync(
                    partial(load_directory, self.store, self.layout, self.journal, self.pool,
                            d.parts, self.cfg.uid, self.cfg.gid, self.mount_time, known,
                            listed))
            except store_errors.StoreError as exc:
                if d.children is not None and health.stale_listing_usable(d, exc):
                    log.warning("listing %r failed (%s); using what this mount knew",
                                d.path or "/", exc)
                    d.listed_at = time.monotonic() - self.cfg.dir_ttl + STALE_RETRY
                    return d.children
                log.error("listing %r failed: %s", d.path or "/", exc)
                raise fuse_error(errno.EIO) from None
            if d is self.root and index is not None and index.self_attrs and d.row_id is None:
                self._apply_self_attrs(d, index.self_attrs)
            self._merge(d, entries)
            d.listed_at = listed_at
            if self.nursery is not None and any(e.provisional for e in entries):
                self.nursery.start_soon(background, self._resolve_children, d)
            assert d.children is not None
            return d.children

    def prefetch_subdirs(self, d: Node) -> None:
        """A directory is being read (find, rsync, ls -R): list its subdirectories in the
        background, in parallel, so a tree walk does not pay one S3 round trip per directory
        in series."""
        if self.nursery is None or d.children is None:
            return
        now = time.monotonic()
        subdirs = [c for c in d.children.values()
                   if c.is_dir and (c.children is None or now - c.listed_at >= self.cfg.dir_ttl)]
        if self.cfg.fast_list and self.cfg.dir_ttl > 0:
            # never-listed subdirectories: one LIST of the whole subtree (1 request per 1,000
            # keys) instead of one per directory; they are prefetched as it reaches them
            cold = {p: c for c in subdirs if c.children is None and not c.local_only
                    and (p := self.layout.dir_prefix(c.parts)) not in self.prelisted}
            if cold:
                prefix = self.layout.dir_prefix(d.parts)
                self._after_fast_list.update(cold)
                if not any(prefix.startswith(p) for p in self._fast_lists) and \
                        self._prelisted_keys < PRELISTED_MAX_KEYS:
                    self._fast_lists.add(prefix)
                    self.nursery.start_soon(background, self._fast_list, prefix)
                taken = set(cold.values())
                subdirs = [c for c in subdirs if c not in taken]
        for c in subdirs[:256]:
            self.nursery.start_soon(background, self._prefetch_dir, c)

    async def _fast_list(self, prefix: str) -> None:
        """List the subtree under `prefix` (up to FAST_LIST_PAGES pages) into `prelisted`."""
        now = time.monotonic()
        for p in [p for p, x in self.prelisted.items() if now - x.at >= self.cfg.dir_ttl]:
            self._take_prelisted(p)
        gen = self._tree_gen
        split = SubtreeSplitter(prefix, skip=self.layout.control_prefix())
        pages = self.store.list_pages(prefix, None)
        try:
            for _ in range(FAST_LIST_PAGES):
                page = await trio.to_thread.run_sync(next, pages, None, limiter=self.limiter)
                if gen != self._tree_gen:
                    break
                done = split.finish(time.monotonic()) if page is None else \
                    split.add_page(page.objects, time.monotonic())
                for p, listing in done.items():
                    if p != prefix:
                        self._take_prelisted(p)
                        self.prelisted[p] = listing
                        self._prelisted_keys += len(listing.files) + len(listing.prefixes)
                    self._prefetch_waiting(p)
                if page is None:
                    break
        except store_errors.StoreError as exc:
            log.debug("subtree listing of %r failed (directories are listed one by one): %s",
                      prefix, exc)
        finally:
            pages.close()
            self._fast_lists.discard(prefix)
            for p in [p for p in self._after_fast_list if p.startswith(prefix)]:
                if not any(p.startswith(q) for q in self._fast_lists):
                    self._prefetch_waiting(p)

    def _take_prelisted(self, prefix: str) -> DirListing | None:
        listing = self.prelisted.pop(prefix, None)
        if listing is not None:
            self._prelisted_keys -= len(listing.files) + len(listing.prefixes)
        return listing

    def _prefetch_waiting(self, prefix: str) -> None:
        node = self._after_fast_list.pop(prefix, None)
        if node is not None and not node.unlinked and self.nursery is not None:
            self.nursery.start_soon(background, self._prefetch_dir, node)

    async def _prefetch_dir(self, d: Node) -> None:
        async with self.dir_prefetch_limiter:
            try:
                await self.ensure_listed(d)
            except pyfuse3.FUSEError:
                pass  # the foreground access reports the error

    async def _resolve_children(self, d: Node) -> None:
        """Background HEADs for a big directory listed with LIST-only attributes."""
        todo = [c for c in (d.children or {}).values() if c.provisional and c.obj is not None]
        for i in range(0, len(todo), 1024):
            batch = [n for n in todo[i:i + 1024] if n.provisional]
            infos = await trio.to_thread.run_sync(
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
            info = await self.run(self.store.head, node.obj.key)
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

    def _merge(self, d: Node, entries: list[Entry]) -> None:
        old = d.children or {}
        new: dict[str, Node] = {}
        for e in entries:
            node = old.get(e.name)
            if node is not None and node.is_dir != (e.obj is None):
                node = None if not self._busy(old[e.name]) else old[e.name]
            if node is None:
                node = self._make_node(d, e.name, e.attrs)
                node.obj = e.obj
                node.corrupt = e.corrupt
                node.provisional = e.provisional
            elif not self._busy(node):
                if e.obj is not None and (node.obj is None or node.obj.etag != e.obj.etag):
                    node.version += 1
                    node.link_target = None
                if not (node.is_dir and d.index_dirty):
                    # d's index rewrite is pending (e.g. d was just moved by a directory
                    # rename): S3 does not hold its subdirectories' attributes yet
                    node.attrs = e.attrs
                if e.provisional and node.obj is not None and e.obj is not None \
                        and node.obj.etag == e.obj.etag and not node.provisional:
                    new[e.name] = node  # already resolved this version: keep its attrs
                    continue
                node.obj = e.obj
                node.corrupt = e.corrupt
                node.provisional = e.provisional
            new[e.name] = node
        for name, node in old.items():  # keep local state S3 does not show yet
            if name not in new and self._busy(node):
                new[name] = node
            elif name not in new:
                if node.is_dir and node.children:
                    if any(self._busy(c) for c in node.children.values()):
                        new[name] = node
        d.children = new

    async def lookup(self, parent: Node, name: str) -> Node | None:
        children = await self.ensure_listed(parent)
        now = time.monotonic()
        if now - parent.subdirs_prefetched_at >= self.cfg.dir_ttl:
            # a walk by path (rsync's lstat of every entry, never a readdir) gets the same
            # background listing of subdirectories as a readdir
            parent.subdirs_prefetched_at = now
            self.prefetch_subdirs(parent)
        return children.get(name)

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
                drop_forgotten(self.inodes, node)
                node = node.parent

    # -- reading -----------------------------------------------------------------------------
    def _source(self, node: Node) -> SegmentSource:
        c = node.content
        if c is not None:
            base_cipher = self.cipher_for(c.base) if c.base is not None else None
            return SegmentSource(self.seg, self.blocks, self.cfg.segs_per_block, c.base,
                                 base_cipher, c.base_segs, c.dirty, c.staging)
        obj = node.obj
        if obj is None:
            return SegmentSource(self.seg, self.blocks, self.cfg.segs_per_block, None, None, 0,
                                 DirtySet(), None)
        segs = -(-obj.plain_size // self.seg.segment_size)
        return SegmentSource(self.seg, self.blocks, self.cfg.segs_per_block, obj,
                             self.cipher_for(obj), segs, DirtySet(), None)

    async def read(self, node: Node, off: int, size: int) -> bytes:
        if node.corrupt:
            log.error("read of %r (%s) refused: %s", node.path,
                      node.obj.key if node.obj else "?", node.corrupt)
            raise fuse_error(errno.EIO)
        end = min(off + size, node.attrs.size)
        if end <= off:
            return b""
        self.stats["reads"] += 1
        self.stats["read_bytes"] += end - off
        src = self._source(node)
        S = self.seg.segment_size
        first, last = off // S, (end - 1) // S
        run = 1
        if node.seq_next == off and off > 0:
            # at most 32 MiB ahead: the 64 MiB memory tier must still hold it when read
            node.ra_window = min(max(node.ra_window * 2, 4), 32)
            run = 4
        else:
            node.ra_window = 0
            if off > 0 and src.base is not None:
                node.random_reads += 1
                if node.random_reads == 3:
                    self._prefetch_whole(src.base)
        node.seq_next = end

        clean = src.base is not None and node.content is None

        def work() -> bytes:
            if clean:
                return src.base_range(off, end, run=run)
            out = [src.plain(i, run=run) for i in range(first, last + 1)]
            data = b"".join(out)
            return data[off - first * S:end - first * S]

        data = None
        if clean:
            # blocks in memory or in the local disk cache: serve on this thread (a worker-thread
            # hop costs more than a local pread); only S3 fetches go to a worker
            src.local_only = True
            try:
                data = work()
            except (LookupError, OSError):
                data = None
            src.local_only = False
        try:
            if data is None:
                data = await self.run(work)
        except (IntegrityError, store_errors.StoreError, OSError) as exc:
            key = src.base.key if src.base else node.path
            log.error("read of %r (object %s) failed: %s", node.path, key, exc)
            raise fuse_error(errno.EIO) from None
        if node.ra_window and src.base is not None:
            self._prefetch(src.base, (last + 1) // self.cfg.segs_per_block, node.ra_window)
        return data

    def _prefetch_whole(self, obj: ObjectRef) -> None:
        """A file read at random offsets: fetch all of it in parallel (what makes random reads
        local-disk fast), if it fits comfortably in the cache."""
        if obj.obj_size <= min(self.cfg.cache_size // 2, 4 * 1024**3):
            self._prefetch(obj, 0, -(-obj.obj_size // self.block_bytes))

    def _prefetch(self, obj: ObjectRef, first_block: int, window: int) -> None:
        if self.nursery is None:
            return
        last_block = (obj.obj_size - 1) // self.block_bytes if obj.obj_size else -1
        end = min(first_block + window, last_block + 1)

        def wanted(b: int) -> bool:
            return (obj.key, obj.etag, b) not in self._prefetching and \
                not self.blocks.cached(obj.key, obj.etag, b)

        ident = (obj.key, obj.etag)
        advised = self._advised.get(ident, -1)
        b = first_block
        while b < end:
            if not wanted(b):
                if b > advised and self.blocks.advise(obj.key, obj.etag, b):
                    advised = b  # on disk: let the kernel read it ahead of the reader
                b += 1
                continue
            run = 1  # one GET for up to 16 consecutive missing blocks (at least 8 unless at EOF)
            while run < 16 and b + run < end and wanted(b + run):
                run += 1
            if run < 8 and b + run == end and end <= last_block:
                break  # a short run cut by the window's end: wait and fetch it in one bigger GET
            for i in range(b, b + run):
                self._prefetching.add((obj.key, obj.etag, i))
            self.nursery.start_soon(background, self._prefetch_one, obj, b, run)
            b += run
        if len(self._advised) > 1000:
            self._advised.clear()
        self._advised[ident] = advised

    async def _prefetch_one(self, obj: ObjectRef, block: int, run: int) -> None:
        try:
            await trio.to_thread.run_sync(
                partial(self.blocks.get_block, obj.key, obj.etag, obj.obj_size, block, run=run),
                limiter=self.prefetch_limiter)
        except Exception as exc:
            log.debug("prefetch of %s block %d failed: %s", obj.key, block, exc)
        finally:
            for i in range(block, block + run):
                self._prefetching.discard((obj.key, obj.etag, i))

    async def readlink(self, node: Node) -> str:
        if node.link_target is None:
            if node.obj is None:
                raise fuse_error(errno.EIO)
            data = await self.read(node, 0, node.attrs.size)
            node.link_target = os.fsdecode(data)
        return node.link_target

    # -- writing -----------------------------------------------------------------------------
    def _ensure_content(self, node: Node) -> Content:
        if node.content is not None:
            return node.content
        file_id = secrets.token_hex(12)
        staging = StagingFile(os.path.join(self.staging_dir, file_id), file_id,
                              self.seg.segment_size, self.slots)
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
        node.content = Content(staging, cipher, cipher_meta, base, base_segs,
                               token=identity.new_token())
        return node.content

    def _cipher_meta(self, meta: dict[str, str]) -> dict[str, str]:
        """Only the codec's key material from an object's metadata (not attrs, not SSE ids)."""
        return {k: v for k, v in meta.items()
                if k.startswith("s3encfs-")
                and k not in ("s3encfs-attrs", "s3encfs-ssec", identity.UPLOAD_ATTR)}

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

            def work() -> None:
                view = memoryview(data)
                for i in range(first, last + 1):
                    s0 = i * S
                    a, b = max(off, s0), min(end, s0 + S)
                    chunk = view[a - off:b - off]
                    full = a == s0 and b == s0 + S
                    was_dirty = i in c.dirty
                    if fast and (full or was_dirty or not src.base_backed(i)):
                        c.staging.write_plain_span(a, chunk)
                    else:
                        cur = bytearray(src.plain(i)) if not full else bytearray(S)
                        cur[a - s0:b - s0] = chunk
                        c.staging.write_segment(i, bytes(cur))
                    if not was_dirty:
                        c.dirty.add(i)

            # small writes that need no base bytes from S3 (new files, rewritten segments) are
            # a local pwrite: done here, as a worker-thread hop would cost more than the write
            inline = len(data) <= 256 * 1024 and \
                not any(src.base_backed(i) for i in range(first, last + 1))
            try:
                work() if inline else await self.run(work)
            except OSError as exc:
                mark_failed(c, failure_errno(exc), node.path)
                if exc.errno == errno.ENOSPC:
                    raise fuse_error(errno.ENOSPC) from None
                log.error("write to %r failed: %s", node.path, exc)
                raise fuse_error(errno.EIO) from None
            except (IntegrityError, store_errors.StoreError) as exc:
                mark_failed(c, errno.EIO, node.path)
                log.error("write to %r needed unreadable base data: %s", node.path, exc)
                raise fuse_error(errno.EIO) from None
            finally:
                self.dirty.sync(c)  # counts what work() marked dirty, even if it failed midway
            c.gen += 1
            self.streamer.on_write(node, c, off, end)
            if end > node.attrs.size:
                node.attrs.size = end
            t = now_ns()
            node.attrs.mtime_ns = node.attrs.ctime_ns = t
        return len(data)

    async def _wait_for_space(self) -> None:
        while self.dirty.total > self.cfg.dirty_limit:
            drainable = [n for n in self.queue if n.content and n.content.writers == 0]
            if not drainable and not self.running:
                return
            for n in drainable:
                self._enqueue(n, 0)
            self._kick.set()
            self._space = trio.Event()
            with trio.move_on_after(1):
                await self._space.wait()

    async def truncate(self, node: Node, size: int) -> None:
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
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

    # -- durability --------------------------------------------------------------------------
    def _row_data(self, node: Node) -> dict[str, Any]:
        c = node.content
        data: dict[str, Any] = {"attrs": attrs_to_meta(node.attrs), "size": node.attrs.size,
                                "replaced_etag": node.replaced_etag, "tokens": node.tokens}
        if c is not None:
            data.update({"token": c.token, "file_id": c.staging.file_id, "dirty": c.dirty.to_hex(),
                         "base": c.base.to_json() if c.base else None,
                         "base_segs": c.base_segs, "cipher_meta": c.cipher_meta})
        elif node.obj is not None:
            data["obj"] = node.obj.to_json()
        return data

    def persist(self, node: Node) -> None:
        """Record the node's pending work in the journal (before close() returns)."""
        if node.unlinked:
            return
        kind = "file" if node.content is not None else ("dir" if node.is_dir else "meta")
        if node.content is not None:
            self._token_for_row(node, node.content)
        data = self._row_data(node)
        if node.row_id is None:
            node.row_id = self.journal.add(kind, node.path, data)
        else:
            self.journal.update(node.row_id, node.path, data, kind)
        if node.content is not None:
            node.content.journal_gen = node.content.gen

    @staticmethod
    def _token_for_row(node: Node, c: Content) -> None:
        """The token a journal row names is used for that row's data only: once an upload
        carried it, the next version (or a rename) gets a fresh one; the row keeps the old ones
        (`node.tokens`), which replay and a 412 recognise as ours (fs/identity.py)."""
        if c.token_used or not c.token:
            c.token = identity.new_token()
            c.token_used = False
        if c.token not in node.tokens:
            node.tokens.append(c.token)
            del node.tokens[:-identity.MAX_TOKENS]

    def _enqueue(self, node: Node, due: float) -> None:
        node.upload_due = due
        self.queue.add(node)
        heapq.heappush(self._heap, (due, next(self._seq), node))
        self._wake(due)

    def _wake(self, due: float) -> None:
        """Wake the upload loop if `due` is before its next planned wake-up (rsync schedules
        work tens of thousands of times; most of it is due later than what is already planned)."""
        if due < self._wake_at:
            self._kick.set()

    def _drop_row(self, node: Node) -> None:
        """Forget the node's pending journal row (its work is done or no longer wanted).  A
        delete the journal cannot write now (disk full, reserve spent) is retried later: the
        work is done, and failing here had a landed upload sent again for ever."""
        if node.row_id is not None:
            row, node.row_id = node.row_id, None
            self._stale_rows.add(row)
        node.tokens.clear()
        self._retry_stale_rows()

    def _retry_stale_rows(self) -> None:
        for row in list(self._stale_rows):
            try:
                self.journal.remove(row)
            except OSError as exc:
                log.warning("journal row %d stays until the cache disk has room: %s", row, exc)
                return
            self._stale_rows.discard(row)

    def _save_path(self, node: Node) -> None:
        """Rewrite the node's pending journal row after a rename: its path, and what the rename
        changed in its data (e.g. the object a rename-over replaced, which the replayed upload
        must expect at the new name — else it would lose to the old version as a "conflict")."""
        if node.row_id is not None:
            self.persist(node)

    def schedule(self, node: Node, delay: float | None = None) -> None:
        self._enqueue(node, trio.current_time() + (
            self.cfg.upload_delay if delay is None else delay))
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def schedule_index(self, d: Node) -> None:
        d.index_dirty = True
        if d not in self.index_queue:
            self.index_queue.add(d)
            d.index_due = min(d.index_due or 1e18, trio.current_time() + self.cfg.upload_delay)
        self._wake(d.index_due)

    async def upload_loop(self) -> None:
        """Start due uploads, at most `upload_concurrency` at once."""
        assert self.nursery is not None
        health.start_upload_loop(self)  # background work: S3's breaker never refuses it
        while True:
            self._kick = trio.Event()
            now = trio.current_time()
            next_due = now + 3600
            heap = self._heap
            while heap and len(self.running) < self.cfg.upload_concurrency:
                due, _seq, node = heap[0]
                if node not in self.queue or node.upload_due != due:
                    heapq.heappop(heap)  # stale entry: rescheduled or already done
                    continue
                if due > now:
                    next_due = min(next_due, due)
                    break
                heapq.heappop(heap)
                if node in self.running:  # e.g. its previous upload: look again shortly
                    self._enqueue(node, now + 0.05)
                    next_due = min(next_due, now + 0.05)
                    continue
                if node.content is not None and node.content.writers:
                    continue  # release() queues it again
                self.queue.discard(node)
                self.running.add(node)
                self.nursery.start_soon(self._upload_task, node)
            for d in list(self.index_queue):
                if len(self.running) >= self.cfg.upload_concurrency:
                    break
                if d in self.running:
                    continue
                if d.index_due <= now and not self._children_pending(d):
                    d.index_due = 0  # the next change starts a fresh coalescing delay
                    self.index_queue.discard(d)
                    self.running.add(d)
                    self.nursery.start_soon(self._index_task, d)
                else:
                    next_due = min(next_due, max(d.index_due, now + 0.2))
            if not self.queue and not self.index_queue and not self.running:
                self._idle.set()
            self._wake_at = next_due
            with trio.move_on_at(next_due):
                await self._kick.wait()
            self._wake_at = -math.inf  # running: every change is looked at

    def _children_pending(self, d: Node) -> bool:
        """A child's upload is queued or running: the directory's index waits for it."""
        queue, running = self.queue, self.running
        return any(c in queue or c in running for c in (d.children or {}).values())

    async def _upload_task(self, node: Node) -> None:
        try:
            await self.upload_node(node)
        except store_errors.PreconditionFailed:
            if not await rebase.settle(self, node):  # base gone or replaced: fs/rebase.py
                await self._keep_conflict_copy(node)
            self._enqueue(node, trio.current_time())
        except Exception as exc:
            if await rebase.settle(self, node):
                self._enqueue(node, trio.current_time())
                return
            self.stats["upload_errors"] += 1
            self.stats["last_error"] = f"{node.path}: {exc}"
            log.error("upload of %r failed (will retry): %s", node.path, exc)
            if not node.unlinked:
                failures = self._failures[node] = self._failures.get(node, 0) + 1
                self._enqueue(node, trio.current_time() + min(60.0, 2.0 ** failures))
        finally:
            self.running.discard(node)
            self._kick.set()

    async def _keep_conflict_copy(self, node: Node) -> None:
        """Another writer changed the object since we read it: their version keeps the name,
        ours is uploaded beside it as a visible conflict copy (never silently overwritten)."""
        parent = node.parent
        if parent is None or node.unlinked:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        async with node.lock:
            siblings = await self.ensure_listed(parent)
            new = rebase.conflict_name(node.name, os.uname().nodename, stamp, siblings)
            try:
                if node.content is not None and node.content.base is not None:
                    await self._materialize(node)
            except Exception as exc:
                log.error("conflict on %r: cannot read our base version (%s); keeping the "
                          "local copy queued", node.path, exc)
            old_path = node.path
            siblings = await self.ensure_listed(parent)
            if siblings.get(node.name) is node:
                siblings.pop(node.name)
            siblings[new] = node
            node.name = new
            node.obj = None
            node.replaced_etag = None
            self._save_path(node)
        parent.listed_at = 0  # show the other writer's version under the original name
        self.stats["conflicts"] = self.stats.get("conflicts", 0) + 1
        self.stats["last_conflict"] = f"{old_path} -> {node.path}"
        log.warning("conflict: %r was changed by another writer; our version is kept as %r",
                    old_path, node.path)

    async def upload_node(self, node: Node) -> None:
        async with node.lock:
            await self._upload_locked(node)

    async def _upload_locked(self, node: Node) -> None:
        if node.unlinked:
            return
        await self._put_pending_markers(node.parent)
        if node.is_dir:
            if node.marker_pending:
                await self._put_marker(node)
            if node.parent is not None:
                self.schedule_index(node.parent)
            else:
                self.schedule_index(node)
            return
        c = node.content
        key = self.key_of(node)
        uploaded_staging: StagingFile | None = None  # set when the upload landed (see below)
        meta_copied = False  # a metadata-only copy: its row goes with the index write (below)
        if c is not None:
            base_cipher = self.cipher_for(c.base) if c.base is not None else None
            st = await self.streamer.settle(c)
            if st is not None and (st.key != key or st.token != c.token):
                await self.streamer.discard(c)  # renamed while streaming: start over
                st = None
            if c.gen != c.journal_gen or c.token_used or node.row_id is None:
                self.persist(node)  # the row names the token (and data) this upload carries
            token, tokens = c.token, tuple(node.tokens)
            c.token_used = True
            meta = self.object_meta(c.cipher_meta, node.attrs, key, token)
            sent_attrs = attrs_to_meta(node.attrs)
            job = UploadJob(key, node.attrs.size, c.dirty.copy(), c.staging, c.cipher, meta,
                            c.base, base_cipher, c.base_segs)
            if st is not None and st.upload_id is not None:
                job.stream = StreamedParts(st.upload_id, st.per, dict(st.parts))
            streamed = job.stream
            job.expect_any = not self.cfg.conditional_writes
            job.expect_etag = self._expected_etag(node, key)
            gen = c.gen
            try:
                obj = await self.run_upload(job, token, tokens)
            finally:
                if streamed is not None:  # completed, or aborted by the uploader
                    self.journal.delete_kv(f"mpu:{streamed.upload_id}")
                    c.stream = None
            self.stats["uploads"] += 1
            self._failures.pop(node, None)
            self.stats["last_upload"] = time.time()
            node.obj = obj
            node.replaced_etag = None
            self._ciphers[(obj.key, obj.etag)] = c.cipher
            if c.gen == gen:
                uploaded_staging = self._finish_content(node)
                self.dirty.sync(c) if node.content is c else self.dirty.drop(c)
                if node.content is None and attrs_to_meta(node.attrs) != sent_attrs:
                    node.meta_dirty = True  # chmod/utime/chown while the upload ran
        elif node.meta_dirty and node.obj is not None:
            meta = self.object_meta(self._cipher_meta(node.obj.meta), node.attrs, key)
            etag = await self.run(self.store.copy, node.obj.key, key, metadata=meta)
            node.obj = ObjectRef(key, etag, node.obj.obj_size, node.obj.plain_size, meta)
            node.meta_dirty, meta_copied = False, True
        if (node.content is None and not meta_copied) or uploaded_staging is not None:
            self._drop_row(node)
        if uploaded_staging is not None and node.content is None:
            # only now, after the journal row: a crash in between leaves an orphan file (swept
            # at the next mount), never a row whose data is gone (replayed as zeros before).
            # A file still open keeps its staging bytes: a read in flight may have planned to
            # take a segment from them (emptying the file made that read return zeros, which
            # the kernel then cached); nothing uses them once `dirty` is cleared
            uploaded_staging.remove()
        if node.meta_dirty and node.content is None:
            self.persist(node)  # a "meta" row until the metadata rewrite is in S3
            self.schedule(node, 0)
        if node.parent is not None:
            self.schedule_index(node.parent)
        self._space.set()

    async def run_upload(self, job: UploadJob, token: str, tokens: tuple[str, ...]) -> ObjectRef:
        """Upload `job`; a failed precondition is settled by the object's identity (our own
        upload is never a conflict; fs/identity.py).  PreconditionFailed: another writer."""
        return await small_upload.upload_owned(  # a small new file: no worker thread
            self.uploader, self.store, self.codec, job, token, tokens,
            on_round=self._count_round, rel_key=self.layout.rel_key)

    def _count_round(self, verdict: identity.Verdict) -> None:
        key = f"upload_412_{verdict.value}"
        self.stats[key] = self.stats.get(key, 0) + 1  # from a worker thread: a dict update

    def _expected_etag(self, node: Node, key: str) -> str | None:
        """The ETag S3 should still hold at `key` (None: no object should be there)."""
        if node.obj is not None and node.obj.key == key:
            return node.obj.etag
        return node.replaced_etag

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
            node.content = c
            node.content = None if not c.writers and not node.open_count else c
        else:
            node.content = None
        return c.staging

    async def _index_task(self, d: Node) -> None:
        try:
            await self.write_index(d)
        except Exception as exc:
            self.stats["upload_errors"] += 1
            self.stats["last_error"] = f"index {d.path}: {exc}"
            log.error("index of %r failed (will retry): %s", d.path or "/", exc)
            d.index_due = trio.current_time() + 5
            self.index_queue.add(d)
        finally:
            self.running.discard(d)
            self._kick.set()

    async def write_index(self, d: Node) -> None:
        if d.unlinked:
            return
        # what this mount knows, even if the listing is older than dir_ttl: entries are only
        # hints checked against each object's ETag, so no fresh LIST is needed to write them
        children = d.children if d.children is not None else await self.ensure_listed(d)
        parent = d.path
        files: dict[str, tuple[str, dict[str, str]]] = {}
        dirs: dict[str, dict[str, str]] = {}
        done_rows: list[tuple[Node, int, dict[str, str]]] = []
        for name, child in children.items():
            enc = self.codec.encode_name(parent, name)
            if child.is_dir:
                meta = attrs_to_meta(child.attrs)
                dirs[enc] = meta
                if child.row_id is not None and not child.marker_pending:
                    done_rows.append((child, child.row_id, meta))
            elif child.obj is not None:
                files[enc] = (child.obj.etag, child.obj.meta)
                if child.row_id is not None and child.content is None and not child.meta_dirty:
                    done_rows.append((child, child.row_id, attrs_to_meta(child.attrs)))
        self_meta = attrs_to_meta(d.attrs) if d is self.root else None
        if d is self.root and d.row_id is not None:
            done_rows.append((d, d.row_id, self_meta or {}))
        d.index_dirty = False
        await self.run(write_index, self.store, self.layout, d.parts,
                       DirIndex(files, dirs, self_meta))
        for child, row, meta in done_rows:
            if child.row_id == row and attrs_to_meta(child.attrs) == meta \
                    and not child.marker_pending and child.content is None and not child.meta_dirty:
                self.journal.remove(row)
                child.row_id = None
                child.local_only = False

    async def flush_all(self) -> None:
        """Upload everything now and wait until S3 has it (fsync of the whole mount, unmount)."""
        while True:
            self._retry_stale_rows()
            for n in list(self.queue):
                if n.upload_due > 0 and n not in self._failures:  # failures keep their backoff
                    self._enqueue(n, 0)
            for d in self.index_queue:
                d.index_due = 0
            if not self.queue and not self.index_queue and not self.running:
                return
            self._kick.set()
            self._idle = trio.Event()
            with trio.move_on_after(0.5):
                await self._idle.wait()

    async def fsync(self, node: Node, deadline: float | None = None) -> None:
        if node.content is not None or node.meta_dirty or node.marker_pending:
            self.queue.discard(node)

            async def attempt() -> None:
                while node in self.running:
                    await trio.sleep(0.01)
                await self.upload_node(node)

            try:
                await bounded(self.nursery, attempt, self._sync_deadline(deadline), node.path)
            except Exception as exc:
                log.error("fsync upload of %r failed: %s", node.path, exc)
                self.schedule(node, 5)
                raise fuse_error(errno.EIO) from None

    # -- metadata changes -------------------------------------------------------------------
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

    def touch_dir(self, d: Node) -> None:
        t = now_ns()
        d.attrs.mtime_ns = d.attrs.ctime_ns = t
        self.schedule_index(d.parent if d.parent is not None else d)

    # -- namespace ---------------------------------------------------------------------------
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

    async def _put_pending_markers(self, d: Node | None) -> None:
        """PUT the pending `dir/` markers of `d` and its ancestors, top down, before any object
        goes under them.

        A PUT of `d/x` that overlaps the PUT of `d/` can drop the marker on stores that keep
        directories as entries (SeaweedFS creates `d` implicitly for the child and overwrites
        the explicit one): the directory would lose its marker and, in plain mode, its attrs.
        """
        pending: list[Node] = []
        while d is not None:
            if d.marker_pending:
                pending.append(d)
            d = d.parent
        for n in reversed(pending):
            async with n.lock:  # waits for a marker PUT of `n` already in flight
                if n.marker_pending and not n.unlinked:
                    await self._put_marker(n)

    async def _put_marker(self, node: Node) -> None:
        """PUT a new directory's `dir/` marker (node.lock held)."""
        meta = attrs_to_meta(node.attrs) if not self.codec.encrypts_names else {}
        await self.run(self.store.put, self.layout.dir_prefix(node.parts), b"", meta)
        node.marker_pending = False

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
            if node.content is not None and node.content.stream is not None:
                await self.streamer.discard(node.content)
            if node.content is not None and not node.open_count:
                self.dirty.drop(node.content)
                node.content.staging.remove()
                node.content = None
        self.touch_dir(parent)

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
        node.unlinked = True
        self.index_queue.discard(node)
        self._drop_row(node)
        self.touch_dir(parent)

    async def rename(self, p_old: Node, old: str, p_new: Node, new: str, flags: int) -> None:
        if self.cfg.read_only:
            raise fuse_error(errno.EROFS)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fuse_error(errno.EINVAL)
        src_children = await self.ensure_listed(p_old)
        dst_children = await self.ensure_listed(p_new)
        node = src_children.get(old)
        if node is None:
            raise fuse_error(errno.ENOENT)
        self.check_name(p_new, new)
        if p_old is p_new and old == new:
            return
        anc: Node | None = p_new
        while anc is not None:
            if anc is node:
                raise fuse_error(errno.EINVAL)
            anc = anc.parent
        target = dst_children.get(new)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise fuse_error(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise fuse_error(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise fuse_error(errno.ENOTDIR)
            if target.is_dir:
                if await self.ensure_listed(target, force=True):
                    raise fuse_error(errno.ENOTEMPTY)
        if node.is_dir:
            await self._rename_dir(node, p_new, new, target)
        else:
            await self._rename_file(node, p_new, new, target)
        self.touch_dir(p_old)
        if p_new is not p_old:
            self.touch_dir(p_new)

    async def _detach_target(self, target: Node, replaced_by_upload: bool) -> str | None:
        """The node at the destination name is being replaced.  Returns the ETag S3 holds
        under its name once its own upload (if one is in flight) is done: taking the lock waits
        for that upload, so a rename-over is ordered after it and expects what it produced."""
        async with target.lock:
            held = self._expected_etag(target, self.key_of(target))
            target.unlinked = True
            self.queue.discard(target)
            self._drop_row(target)
            if target.is_dir:
                await self.run(self.store.delete, self.layout.dir_prefix(target.parts))
                await self.run(self.store.delete, self.layout.index_key(target.parts))
            elif target.obj is not None and not replaced_by_upload:
                await self.run(self.store.delete, target.obj.key)
            if target.content is not None and target.content.stream is not None:
                await self.streamer.discard(target.content)
            if target.content is not None and not target.open_count:
                self.dirty.drop(target.content)
                target.content.staging.remove()
                target.content = None
            if target.open_count and target.obj is not None:
                await self._materialize(target)
        return held

    async def _rename_file(self, node: Node, p_new: Node, new: str, target: Node | None) -> None:
        # wait for the node's own upload *before* taking its lock: an upload task started in
        # between needs that lock, and polling `running` while holding it deadlocked (issue 11);
        # one that starts after we hold the lock runs after us, under the new name
        while node in self.running:
            await trio.sleep(0.005)
        async with node.lock:
            new_key = self.layout.file_key(self.child_parts(p_new, new))
            will_upload = node.content is not None and node.content.base is None
            # an object this file replaced by rename-over, not yet overwritten by our upload,
            # still sits at our current key: it must go when the file moves away from it
            stale_key = self.key_of(node) if node.obj is None and node.replaced_etag else None
            node.replaced_etag = None
            if target is not None:
                # the target's uploads from this mount stay ours at that name (fs/identity.py)
                inherited = [*target.tokens, *((target.content.token,)
                                               if target.content is not None else ())]
                try:
                    held = await self._detach_target(target, replaced_by_upload=True)
                except store_errors.StoreError as exc:
                    log.error("rename over %r failed: %s", target.path, exc)
                    raise fuse_error(errno.EIO) from None
                if will_upload:
                    # what S3 holds under the name *after* the target's upload in flight, if
                    # any (the ETag taken before it landed made our upload a false conflict)
                    node.replaced_etag = held
                    node.tokens.extend(t for t in inherited if t not in node.tokens)
                    del node.tokens[:-identity.MAX_TOKENS]
            if node.obj is not None:
                try:
                    await self._put_pending_markers(p_new)
                    old_key = node.obj.key
                    meta = self._resealed_meta(node, new_key)
                    etag = await self.run(self.store.copy, old_key, new_key, metadata=meta)
                    await self.run(self.store.delete, old_key)
                except store_errors.StoreError as exc:
                    log.error("rename of %r failed: %s", node.path, exc)
                    raise fuse_error(errno.EIO) from None
                node.obj = ObjectRef(new_key, etag, node.obj.obj_size, node.obj.plain_size,
                                     meta if meta is not None else node.obj.meta)
                if node.content is not None and node.content.base is not None:
                    node.content.base = node.obj
            elif target is not None and target.obj is not None and not will_upload:
                await self.run(self.store.delete, target.obj.key)
            if stale_key is not None:
                try:
                    await self.run(self.store.delete, stale_key)
                except store_errors.StoreError as exc:
                    log.error("rename of %r failed: %s", node.path, exc)
                    raise fuse_error(errno.EIO) from None
            self._move(node, p_new, new)
            self._save_path(node)

    def _resealed_meta(self, node: Node, new_key: str) -> dict[str, str] | None:
        """Metadata for moving `node`'s object to `new_key`: attrs re-sealed for that key; None
        (copied unchanged, so it stays unreadable) when its own attrs did not authenticate."""
        if not self.codec.authenticates_attrs or node.corrupt is not None or node.obj is None:
            return None
        token = identity.token_of(self.codec, node.obj.meta,  # still our upload: keep its token
                                  self.layout.rel_key(node.obj.key))
        try:
            return self.object_meta(self._cipher_meta(node.obj.meta), node.attrs, new_key, token)
        except IntegrityError as exc:
            log.error("rename of %r: its key metadata does not open (%s); copied unchanged",
                      node.path, exc)
            return None

    def _move(self, node: Node, p_new: Node, new: str) -> None:
        assert node.parent is not None and node.parent.children is not None
        node.parent.children.pop(node.name, None)
        assert p_new.children is not None
        p_new.children[new] = node
        node.parent = p_new
        node.name = new
        node.attrs.ctime_ns = now_ns()

    async def _rename_dir(self, node: Node, p_new: Node, new: str, target: Node | None) -> None:
        """S3 has no directory rename: copy every object under the old prefix, then delete."""
        await self.flush_subtree(node)
        old_parts = node.parts
        new_parts = self.child_parts(p_new, new)
        old_prefix = self.layout.dir_prefix(old_parts)

        def plan() -> list[tuple[str, str]]:
            moves: list[tuple[str, str]] = []
            for page in self.store.list_pages(old_prefix, None):
                for obj in page.objects:
                    rel = obj.key[len(old_prefix):]
                    if not rel:
                        continue
                    comps = rel.split("/")
                    trailing = comps[-1] == ""
                    comps = [c for c in comps if c]
                    plain: list[str] = []
                    for c in comps:
                        plain.append(self.layout.decode_child(old_parts + tuple(plain), c))
                    dst = self.layout.dir_prefix(new_parts + tuple(plain)) if trailing else \
                        self.layout.file_key(new_parts + tuple(plain))
                    moves.append((obj.key, dst))
            return moves

        try:
            if target is not None:
                await self._detach_target(target, replaced_by_upload=False)
            moves = await self.run(plan)
            resealed: dict[str, dict[str, str]] = {}
            await self._put_pending_markers(p_new)
            await self.run(self.store.put, self.layout.dir_prefix(new_parts), b"",
                           attrs_to_meta(node.attrs) if not self.codec.encrypts_names else {})

            def copy(item: tuple[str, str]) -> tuple[str, str]:
                src, dst = item
                if src.endswith("/"):
                    return dst, self.store.put(dst, b"", {})
                if self.codec.authenticates_attrs:  # attrs re-sealed for the new key
                    meta = reseal_for_move(self.store, self.layout, src, dst)
                    if meta is not None:
                        resealed[dst] = meta
                    return dst, self.store.copy(src, dst, metadata=meta)
                return dst, self.store.copy(src, dst)

            def copy_all() -> dict[str, str]:
                # markers level by level, parents first, then the files: a PUT under `d/`
                # overlapping the PUT of `d/` can drop that marker (see _put_pending_markers)
                done: dict[str, str] = {}
                markers = [m for m in moves if m[0].endswith("/")]
                for depth in sorted({m[1].count("/") for m in markers}):
                    level = [m for m in markers if m[1].count("/") == depth]
                    done.update(self.pool.map(copy, level))
                done.update(self.pool.map(copy, [m for m in moves if not m[0].endswith("/")]))
                return done

            copied = await trio.to_thread.run_sync(copy_all)
            old_dirs = await self.run(self._subtree_index_keys, node)
            # children before their `dir/` marker (longest key first): SeaweedFS keeps an
            # emptied directory listed as a common prefix when its marker went first
            await self.run(self.store.delete_many,
                           sorted([s for s, _d in moves] + [old_prefix], key=len, reverse=True)
                           + old_dirs)
        except Exception as exc:
            log.error("rename of directory %r failed: %s", node.path, exc)
            raise fuse_error(errno.EIO) from None
        self._tree_gen += 1
        self.prelisted.clear()  # keyed by prefix: a listing of the old paths must not be reused
        self._prelisted_keys = 0
        self._move(node, p_new, new)
        self._invalidate_subtree(node, copied, resealed)
        self.schedule_index(p_new)
        self._save_path(node)

    def _subtree_index_keys(self, node: Node) -> list[str]:
        keys = []
        stack = [node]
        while stack:
            n = stack.pop()
            keys.append(self.layout.index_key(n.parts))
            stack.extend(c for c in (n.children or {}).values() if c.is_dir)
        return keys

    def _invalidate_subtree(self, node: Node, etags: dict[str, str],
                            metas: dict[str, dict[str, str]] | None = None) -> None:
        """Objects moved: point nodes at their new keys (and the copies' ETags)."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.is_dir:
                n.listed_at = 0
                self.schedule_index(n)
                stack.extend((n.children or {}).values())
            elif n.obj is not None:
                key = self.key_of(n)
                n.obj = ObjectRef(key, etags.get(key, n.obj.etag), n.obj.obj_size,
                                  n.obj.plain_size, (metas or {}).get(key, n.obj.meta))
                if n.content is not None and n.content.base is not None:
                    n.content.base = n.obj

    def _sync_deadline(self, deadline: float | None) -> float:
        return deadline if deadline is not None else \
            trio.current_time() + self.cfg.sync_timeout

    async def flush_all_bounded(self) -> None:
        """fsyncdir: like flush_all, but EIO after sync_timeout (never the whole outage)."""
        try:
            await bounded(self.nursery, self.flush_all, self._sync_deadline(None), "fsyncdir")
        except SyncTimeout as exc:
            log.error("%s", exc)
            raise fuse_error(errno.EIO) from None

    async def flush_subtree(self, node: Node) -> None:
        stack = [node]
        todo = []
        while stack:
            n = stack.pop()
            if n.is_dir:
                stack.extend((n.children or {}).values())
                if n.marker_pending:
                    todo.append(n)
            elif n.content is not None or n.meta_dirty:
                todo.append(n)
        deadline = self._sync_deadline(None)
        for n in todo:
            await self.fsync(n, deadline)

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

    # -- open files ---------------------------------------------------------------------------
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

    async def release(self, node: Node, write: bool) -> None:
        node.open_count -= 1
        c = node.content
        if write and c is not None:
            c.writers -= 1
        if node.unlinked:
            if node.open_count == 0 and c is not None:
                self.dirty.drop(c)
                c.staging.remove()
                node.content = None
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
            c.staging.remove()
            node.content = None

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
        self.dirty.drop(c)
        c.staging.remove()
        node.content = None
        node.version += 1  # the kernel's pages of the failed version go at the next open
        node.attrs.size = node.obj.plain_size if node.obj is not None else 0
        # a new file stays, empty and local: nothing goes up for a close that failed
        if self.nursery is not None:  # with the writeback cache the kernel trusts its size
            self.nursery.start_soon(background, trio.to_thread.run_sync,
                                    pyfuse3.invalidate_inode, node.inode)

    # -- crash recovery ------------------------------------------------------------------------
    async def abort_leftover_uploads(self) -> None:
        """Abort multipart uploads journaled but never completed (a crash, or an abort that
        failed while S3 was unreachable).  Only call when no upload is in flight."""
        for k, key in self.journal.kv_items("mpu:"):
            await self.streamer.forget(key, k[4:])

    async def replay(self) -> int:
        """Finish the work a previous mount journaled but did not get into S3."""
        await self.abort_leftover_uploads()
        rows = self.journal.rows()
        done = 0
        for row in rows:
            parts = tuple(p for p in row.path.split("/") if p) if row.path else ()
            try:
                if row.kind == "file":
                    await self._replay_file(row.row_id, parts, row.data)
                elif row.kind == "meta" and "obj" in row.data:
                    await self._replay_meta(parts, row.data)
                elif row.kind == "dir":
                    await self._replay_dir(parts, row.data)
            except Exception as exc:
                log.error("replay of %r failed (kept for the next mount): %s", row.path, exc)
                continue
            self.journal.remove(row.row_id)
            done += 1
        self._sweep_staging()
        return done

    def _sweep_staging(self) -> None:
        """Remove staging files no journal row refers to: a file created but never closed
        before a crash holds nothing `close()` promised, and would otherwise stay forever."""
        keep = {r.data.get("file_id") for r in self.journal.rows() if r.kind == "file"}
        for name in os.listdir(self.staging_dir):
            if name not in keep:
                try:
                    os.unlink(os.path.join(self.staging_dir, name))
                except OSError as exc:
                    log.warning("cannot remove stale staging file %s: %s", name, exc)

    async def _replay_file(self, row_id: int, parts: tuple[str, ...], data: dict[str, Any]) -> None:
        from s3encfs.store.layout import meta_to_attrs
        path = os.path.join(self.staging_dir, data["file_id"])
        if not os.path.exists(path) and DirtySet.from_hex(data["dirty"]).any():
            # never upload what is not there (a missing staging file reads as zeros): the row
            # outlived its data (a damaged cache, or a crash between an upload landing and its
            # row going in versions before 2026-11-27); whatever S3 holds stays as it is
            log.error("replay: the pending data of %r is gone from the cache; nothing is "
                      "uploaded for it", "/".join(parts))
            return
        staging = StagingFile(path, data["file_id"], self.seg.segment_size, self.slots,
                              create=True)
        base = ObjectRef.from_json(data["base"]) if data.get("base") else None
        cipher = self.cipher_for(base) if base is not None else \
            self.codec.open_object(data["cipher_meta"])
        base_cipher = cipher if base is not None else None
        attrs = meta_to_attrs(data["attrs"], default_mode=0o100644, size=data["size"],
                              last_modified=time.time())
        token, tokens = data.get("token"), tuple(data.get("tokens") or ())
        if not token:  # a row from before upload tokens: name one before anything is sent
            token = identity.new_token()
            tokens = (*tokens, token)
            self.journal.update(row_id, "/".join(parts),
                                {**data, "token": token, "tokens": list(tokens)}, "file")
        key = self.layout.file_key(parts)
        if base is not None and self.codec.fresh_key_per_version:  # a new version: own key
            if data["cipher_meta"].get("s3encfs-oid") == base.meta.get("s3encfs-oid"):
                cipher, fresh = self.codec.new_object()  # a row written before v2
                data = dict(data, cipher_meta=self._cipher_meta(fresh))
            else:
                cipher = self.codec.open_object(data["cipher_meta"])
        meta = self.object_meta(data["cipher_meta"], attrs, key, token)
        job = UploadJob(key, data["size"], DirtySet.from_hex(data["dirty"]), staging, cipher,
                        meta, base, base_cipher, data["base_segs"])
        job.expect_any = not self.cfg.conditional_writes
        job.expect_etag = base.etag if base is not None and base.key == key else \
            data.get("replaced_etag")
        try:
            # the crashed mount's upload of this very row may have landed (same token): that is
            # success, not a conflict; an earlier one of ours is overwritten (fs/identity.py);
            # a base deleted or replaced meanwhile is settled as for a live node (fs/rebase.py)
            await rebase.replay_upload(self, job, token, tokens, "/".join(parts))
        except store_errors.PreconditionFailed:
            job.key = f"{key}.conflict-{os.uname().nodename}-{time.strftime('%Y%m%d-%H%M%S')}"
            if self.codec.encrypts_names:  # the conflict name must be encoded like any other
                job.key = self.layout.file_key((*parts[:-1], parts[-1] + job.key[len(key):]))
            job.expect_any = True
            job.meta = self.object_meta(data["cipher_meta"], attrs, job.key)  # bound to its key
            log.warning("replay: %r changed in S3 meanwhile; our version goes to %s",
                        "/".join(parts), job.key)
            await trio.to_thread.run_sync(self.uploader.upload, job)
        staging.remove()
        log.info("replayed pending upload of %r", "/".join(parts))

    async def _replay_meta(self, parts: tuple[str, ...], data: dict[str, Any]) -> None:
        from s3encfs.store.layout import meta_to_attrs
        obj = ObjectRef.from_json(data["obj"])
        attrs = meta_to_attrs(data["attrs"], default_mode=0o100644, size=obj.plain_size,
                              last_modified=time.time())
        key = self.layout.file_key(parts)
        meta = self.object_meta(self._cipher_meta(obj.meta), attrs, key)
        etag = await self.run(self.store.copy, key, key, metadata=meta)
        await self.run(metadata_rewritten, self.store, self.layout, self.journal, parts, etag, meta)

    async def _replay_dir(self, parts: tuple[str, ...], data: dict[str, Any]) -> None:
        parent_parts = parts[:-1] if parts else ()
        index = await self.run(read_index, self.store, self.layout, parent_parts)
        if index is None:
            index = DirIndex({}, {}, None)
        if parts:
            enc = self.codec.encode_name("/".join(parent_parts), parts[-1])
            index.dirs[enc] = data["attrs"]
        else:
            index.self_attrs = data["attrs"]
        await self.run(self.store.put, self.layout.dir_prefix(parts), b"", {}) if parts else None
        await self.run(write_index, self.store, self.layout, parent_parts, index)

    def status(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pending_uploads": len(self.queue) + len(self.running),
             "pending_index_writes": len(self.index_queue),
             "dirty_bytes": self.dirty.total,
             "journal_rows": self.journal.count(), "nodes": len(self.inodes)}
        d.update(self.blocks.usage())
        d.update(self.stats)
        d["s3"] = self.store.stats.as_dict()
        d["s3_unreachable_since"] = self.store.stats.unreachable_since  # None: S3 answers
        d.update(health.breaker_status(self.store))
        return d

    def unflushed(self) -> dict[str, Any]:
        """What S3 does not have yet, for a flush's answer: queued work, and journal rows (but
        not those of files still open for writing, which go up at close)."""
        writing = {n.row_id for n in self.inodes.values()
                   if n.row_id is not None and n.content is not None and n.content.writers}
        rows = sum(1 for r in self.journal.row_ids() if r not in writing)
        busy = len(self.queue | self.running) + len(self.index_queue)
        return {"pending": max(busy, rows), "journal_rows_left": rows,
                "last_error": self.stats["last_error"],
                "s3_unreachable_since": self.store.stats.unreachable_since}
