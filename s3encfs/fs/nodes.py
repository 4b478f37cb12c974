"""In-memory tree of nodes: inode numbers, names, attributes, and per-file write state.

Inode numbers are allocated once per node and never change while the mount lives, renames
included (another writer's new version of a file is a new node: docs/INTERNALS.md, "Another
writer's new version gets a new inode").  A node's path is derived from its parent chain,
so renaming a directory moves every pending upload beneath it without touching them.
"""

from __future__ import annotations

import math
import stat
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import trio

from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.codec import ObjectCipher
from s3encfs.store.layout import Attrs


@dataclass(slots=True)
class ObjectRef:
    """An object as last seen in (or written to) S3."""

    key: str
    etag: str
    obj_size: int
    plain_size: int
    meta: dict[str, str]  # full user metadata (codec key material lives here; never secrets)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "etag": self.etag, "obj_size": self.obj_size,
                "plain_size": self.plain_size, "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ObjectRef:
        return cls(d["key"], d["etag"], d["obj_size"], d["plain_size"], dict(d["meta"]))


@dataclass
class Content:
    """Local changes of one file not yet in S3."""

    staging: StagingFile
    cipher: ObjectCipher
    cipher_meta: dict[str, str]
    base: ObjectRef | None
    base_segs: int  # segments [0, base_segs) not in `dirty` come from `base`
    dirty: DirtySet = field(default_factory=DirtySet)
    gen: int = 0
    journal_gen: int = -1  # gen last written to the journal
    writers: int = 0
    counted: int = 0  # dirty segments fs/dirty.py has counted for this content
    failed: int = 0  # errno of a failed write/close: never uploaded (fs/diskfull.py)
    stream: Any = None  # in-progress streaming multipart state (fs/uploader.py)
    token: str = ""  # upload token of this version (fs/identity.py); fresh once `token_used`
    token_used: bool = False  # an upload carrying `token` was sent (it may have landed)


class Node:
    __slots__ = (
        "_lock",
        "_obj",
        "attrs",
        "cached_version",
        "children",
        "content",
        "corrupt",
        "gone",
        "index_dirty",
        "index_due",
        "inode",
        "link_target",
        "listed_at",
        "local_only",
        "lookups",
        "marker_pending",
        "meta_dirty",
        "name",
        "open_count",
        "parent",
        "provisional",
        "ra_window",
        "random_reads",
        "replaced_etag",
        "row_id",
        "seq_next",
        "subdirs_prefetched_at",
        "tokens",
        "touched",
        "unlinked",
        "upload_due",
        "version",
    )

    def __init__(self, inode: int, parent: Node | None, name: str, attrs: Attrs):
        self.inode = inode
        self.parent = parent
        self.name = name
        self.attrs = attrs
        self.children: dict[str, Node] | None = None
        self.listed_at = 0.0
        self.lookups = 0
        self.open_count = 0
        self.touched = 0.0  # monotonic time this mount last changed what S3 holds for it
        self._obj: ObjectRef | None = None
        self.gone: dict[str, float] | None = None  # directory: names removed here, and when
        self.content: Content | None = None
        self.row_id: int | None = None  # journal row of pending work on this node
        self._lock: trio.Lock | None = None  # made at first use (`lock`): ~340 bytes a node
        self.unlinked = False
        self.link_target: str | None = None
        self.version = 0  # bumps when S3 content changed under us (kernel cache invalidation)
        self.cached_version = -1  # version the kernel page cache holds
        self.index_dirty = False  # directory: its index object must be rewritten
        self.upload_due = 0.0  # trio time after which a queued upload may start
        self.index_due = 0.0  # directory: trio time after which its index may be written
        self.meta_dirty = False  # clean file whose metadata must be rewritten (CopyObject)
        self.corrupt: str | None = None
        self.seq_next = -1
        self.ra_window = 0
        self.random_reads = 0
        self.provisional = False  # attrs from LIST only (see fs/listing.py HEAD_INLINE_LIMIT)
        self.local_only = False  # directory created here whose marker is not yet confirmed
        self.marker_pending = False  # directory created here whose `dir/` marker is not yet PUT
        self.replaced_etag: str | None = None  # object this file replaced by rename-over
        self.subdirs_prefetched_at = -math.inf  # directory: last lookup-driven subdir prefetch
        # upload tokens of this name's uploads that may have landed since its journal row began
        # (fs/identity.py): an object carrying one is ours, never another writer's
        self.tokens: list[str] = []

    @property
    def obj(self) -> ObjectRef | None:
        return self._obj

    @obj.setter
    def obj(self, value: ObjectRef | None) -> None:
        """Every change of the object a node names is stamped: a directory listing that S3
        answered before it must not undo it (`Tree._merge`, docs/INTERNALS.md "Listings")."""
        self._obj = value
        self.touched = time.monotonic()

    def changed_here(self) -> None:
        """This mount changed the node in S3 in a way a listing shows (moved, marker made)."""
        self.touched = time.monotonic()

    def removed_child(self, name: str) -> None:
        """`name` left this directory here (unlink, rmdir, rename away): a listing S3 answered
        before that must not bring it back."""
        if self.gone is None:
            self.gone = {}
        self.gone[name] = time.monotonic()

    @property
    def lock(self) -> trio.Lock:
        """The node's lock, made when first taken: most nodes (listed, looked up, never
        written) never need one (docs/INTERNALS.md, "Memory")."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    @property
    def locked(self) -> bool:
        return self._lock is not None and self._lock.locked()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attrs.mode)

    @property
    def parts(self) -> tuple[str, ...]:
        out: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node.name)
            node = node.parent
        return tuple(reversed(out))

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    def __repr__(self) -> str:
        return f"<Node {self.inode} {self.path!r}>"


def forgettable(node: Node, pending: tuple[Container[Node], ...]) -> bool:
    """The kernel forgot `node` and it holds nothing that is not in S3: it may leave memory.

    Nodes with local state (content, a journal row, metadata or a marker still to write, a
    rename-over in flight, a lock held, queued or running work) stay, and so does a directory
    whose children are loaded (they point at it), and a child of a directory made here whose
    marker is unconfirmed (`local_only`: its listing is never fetched again, so a name dropped
    from it would be gone)."""
    return kept_reason(node, pending) is None


def kept_reason(node: Node, pending: tuple[Container[Node], ...]) -> str | None:
    """Why `node` must stay in memory (the first reason found), or None: `forgettable`'s checks,
    named for `status` (fs/memstats.py)."""
    if node.content is not None:
        return "content"
    if node.row_id is not None:
        return "row"
    if node.meta_dirty:
        return "meta_dirty"
    if node.marker_pending:
        return "marker_pending"
    if node.local_only:
        return "local_only"
    if node.replaced_etag is not None:
        return "rename_over"
    if node.locked:
        return "locked"
    if node.children:
        return "dir_with_children"
    if node.open_count != 0:
        return "open"
    if node.parent is not None and node.parent.local_only:
        return "parent_local_only"
    if any(node in p for p in pending):
        return "queued"
    return None


def drop_forgotten(inodes: dict[int, Node], node: Node) -> None:
    """Remove a forgettable node from the inode table and from its parent's listing, which is
    then incomplete: the parent is listed again at its next use (the name comes back with a new
    inode number, which the kernel, having forgotten the old one, cannot tell)."""
    inodes.pop(node.inode, None)
    parent = node.parent
    if parent is not None and parent.children is not None and \
            parent.children.get(node.name) is node:
        del parent.children[node.name]
        # -inf: incomplete, not just old — never the outage fallback (fs/health.py)
        parent.listed_at = float("-inf")
