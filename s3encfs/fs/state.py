"""The filesystem's shared state and the helpers every service uses (issue 11).

`FsState` owns the node tree's root and inode table, the queues, the limiters and the store, codec
and journal handles; the services (`pending`, `tree`, `dirprefetch`, `reader`, `content`,
`conflicts`, `upload`, `writeback`, `namespace`, `rename`, `attrs`, `handles`, `recovery`) each add
one job's methods on top and `fs/core.py` composes them.  Who owns which attribute, the lock order
and which thread may touch what: docs/INTERNALS.md, "Filesystem services: who owns what".
"""

from __future__ import annotations

import collections
import errno
import itertools
import math
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pyfuse3
import trio

from s3encfs import defaults
from s3encfs.cache.blocks import BlockCache
from s3encfs.cache.journal import Journal
from s3encfs.cache.staging import DirtySet, StagingPool
from s3encfs.cache.verified import VerifiedBlockCache
from s3encfs.codec import Codec, NameTooLong, ObjectCipher
from s3encfs.fs import identity
from s3encfs.fs.dirty import DirtyAccount, pending_files_limit
from s3encfs.fs.nodes import Node, ObjectRef
from s3encfs.fs.pagepush import PagePusher
from s3encfs.fs.streaming import StreamDeps, Streamer
from s3encfs.fs.treelist import DirListing
from s3encfs.fs.uploader import SegmentSource, Uploader
from s3encfs.lru import CIPHER_CACHE, LruDict
from s3encfs.store.layout import CONTROL_DIR, Attrs, Layout, attrs_to_meta, now_ns
from s3encfs.store.s3 import ObjectStore

T = TypeVar("T")


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
    pending_limit: int = field(default_factory=pending_files_limit)  # files (fs/dirty.py)
    segs_per_block: int = 16
    part_segments: int = defaults.MULTIPART_SIZE // (64 * 1024)  # of 64 KiB segments
    read_only: bool = False
    conditional_writes: bool = True
    sync_timeout: float = defaults.SYNC_TIMEOUT  # fsync/fsyncdir: EIO after (fs/bounded.py)
    uid: int = 0
    gid: int = 0


class FsState:
    def __init__(self, store: ObjectStore, codec: Codec, prefix: str, cfg: FsConfig):
        self.store = store
        self.codec = codec
        self.cfg = cfg
        self.layout = Layout(prefix, codec)
        self.seg = codec.geometry
        os.makedirs(cfg.cache_dir, mode=0o700, exist_ok=True)
        self.staging_dir = os.path.join(cfg.cache_dir, "staging")
        os.makedirs(self.staging_dir, mode=0o700, exist_ok=True)
        self.staging_pool = StagingPool()  # emptied staging files for new ones (cache/staging.py)
        sealed = codec.name == "client"
        self.journal = Journal(os.path.join(cfg.cache_dir, "journal.sqlite"),
                               seal=codec.seal_blob if sealed else None,
                               unseal=codec.open_blob if sealed else None)
        self.pool = ThreadPoolExecutor(max_workers=cfg.s3_threads, thread_name_prefix="s3")
        self.block_bytes = cfg.segs_per_block * self.seg.stride
        cache = VerifiedBlockCache if store.verifies_whole_objects else BlockCache
        self.blocks = cache(cfg.cache_dir, store, self.block_bytes, cfg.cache_size)
        self.uploader = Uploader(
            store, self.blocks, self.seg, cfg.segs_per_block, cfg.part_segments, self.pool,
            track=lambda key, upload_id: self.journal.set_kv(f"mpu:{upload_id}", key),
            untrack=lambda upload_id: self.journal.delete_kv(f"mpu:{upload_id}"),
            reuse_base=not codec.fresh_key_per_version)
        self.slots = codec.slot_cipher(cfg.cache_dir)
        self.streamer = Streamer(StreamDeps(
            store, self.journal, self.run, self.key_of, self.object_meta, lambda: self.nursery,
            self.seg.segment_size, cfg.part_segments, self.seg.overhead), cfg.upload_concurrency)
        self.limiter = trio.CapacityLimiter(cfg.s3_threads)
        self._ciphers: dict[tuple[str, str], ObjectCipher] = LruDict(CIPHER_CACHE)  # s3encfs/lru.py
        self._init_node_table(cfg)
        self._init_scheduler()
        self._init_prefetch(cfg)
        self.stats: dict[str, Any] = {"uploads": 0, "upload_errors": 0, "last_upload": None,
                                      "last_error": None, "reads": 0, "read_bytes": 0}

    def _init_node_table(self, cfg: FsConfig) -> None:
        """The inode table and the root (fs/tree.py owns them)."""
        self.inodes: dict[int, Node] = {}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        now = now_ns()
        root_attrs = Attrs(stat.S_IFDIR | 0o755, cfg.uid, cfg.gid, 0, now, now, now)
        self.root = Node(pyfuse3.ROOT_INODE, None, "", root_attrs)
        self.inodes[self.root.inode] = self.root
        self.mount_time = time.time()

    def _init_scheduler(self) -> None:
        """What goes up, when, and who waits for it (fs/writeback.py, fs/upload.py, fs/dirty.py)."""
        self.queue: set[Node] = set()
        self._heap: list[tuple[float, int, Node]] = []
        self._failures: dict[Node, int] = {}  # consecutive upload failures (retry backoff)
        self._seq = itertools.count()
        self.index_queue: set[Node] = set()
        self._index_next = 0.0  # no index_due in index_queue is earlier (fs/writeback.py)
        self.running: set[Node] = set()
        self._kick = trio.Event()
        self._wake_at = -math.inf  # when the upload loop, waiting, wakes up next
        self._idle = trio.Event()
        self.dirty = DirtyAccount(self.seg.segment_size)  # the one owner of dirty_bytes
        self._stale_rows: set[int] = set()  # journal rows whose delete waits for disk space
        self._space = trio.Event()
        self.nursery: trio.Nursery | None = None

    def _init_prefetch(self, cfg: FsConfig) -> None:
        """Read-ahead and directory prefetch state (fs/reader.py, fs/dirprefetch.py)."""
        self.prefetch_limiter = trio.CapacityLimiter(cfg.download_concurrency)
        self.pages = PagePusher()  # a randomly read file's pages stored into the kernel
        self._prefetching: set[tuple[str, str, int]] = set()
        self._advised: dict[tuple[str, str], int] = {}  # last disk block read ahead, per object
        self._ra_scanned: dict[tuple[str, str], tuple[int, int]] = {}  # last window looked at
        self.dir_prefetch_limiter = trio.CapacityLimiter(8)
        # cold tree walks: directory listings split out of one undelimited LIST of a subtree,
        # each used once for a directory's first listing (while younger than dir_ttl)
        self.prelisted: dict[str, DirListing] = {}
        self._prelisted_keys = 0
        self._fast_lists: set[str] = set()  # subtree prefixes being listed
        self._after_fast_list: dict[str, Node] = {}  # prefetches waiting for a running one
        # directory index GETs queued ahead of a cold walk, and the workers taking them
        self._index_ahead: collections.deque[tuple[str, DirListing]] = collections.deque()
        self._index_ahead_workers = 0
        self._cold_roots: set[str] = set()  # never-listed directories' prefixes (dirprefetch)
        self._tree_gen = 0  # bumped by directory renames: listings taken before are void

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
            self.layout.check_rel(self.child_parts(parent, name))
        except NameTooLong:
            raise fuse_error(errno.ENAMETOOLONG) from None
        except ValueError:
            raise fuse_error(errno.EILSEQ) from None

    def _make_node(self, parent: Node, name: str, attrs: Attrs) -> Node:
        node = Node(self.new_inode(), parent, name, attrs)
        self.inodes[node.inode] = node
        return node

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

    def _cipher_meta(self, meta: dict[str, str]) -> dict[str, str]:
        """Only the codec's key material from an object's metadata (not attrs, not SSE ids)."""
        return {k: v for k, v in meta.items()
                if k.startswith("s3encfs-")
                and k not in ("s3encfs-attrs", "s3encfs-ssec", identity.UPLOAD_ATTR)}

    # -- the scheduler's entry points (fs/writeback.py): declared here so the services below it
    # (content, upload) can queue work without importing up
    def _enqueue(self, node: Node, due: float) -> None:
        """Queue `node`'s upload for trio time `due`."""
        raise NotImplementedError

    def schedule(self, node: Node, delay: float | None = None) -> None:
        """Queue `node`'s upload after `delay` (default: the coalescing upload delay)."""
        raise NotImplementedError

    def schedule_index(self, d: Node) -> None:
        """Queue a rewrite of directory `d`'s index."""
        raise NotImplementedError
