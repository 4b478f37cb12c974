"""The filesystem: one object composed of the services that each do one job (issue 11).

`fs/operations.py` translates FUSE requests into calls on `FsCore`; `mount.py` starts it
(`start`), asks its `status` and closes it (`close`).  The services, one module each, lowest first:
`state` (shared state and helpers) → `pending` (journal rows) → `tree` → `dirprefetch` → `reader`
→ `content` → `conflicts` → `upload` → `writeback` → `namespace` → `rename`; `attrs`, `handles`
and `recovery` beside them.  Runs on the trio thread; every blocking call (boto3, disk, crypto on
big buffers) goes to a worker thread.  docs/INTERNALS.md, "Filesystem services: who owns what".
"""

from __future__ import annotations

from typing import Any

import trio

from s3encfs.fs import health
from s3encfs.fs.attrs import Attributes
from s3encfs.fs.handles import OpenFiles
from s3encfs.fs.nodes import Node
from s3encfs.fs.recovery import Recovery
from s3encfs.fs.rename import Renames
from s3encfs.fs.state import FsConfig, fuse_error

__all__ = ["FsConfig", "FsCore", "fuse_error"]


class FsCore(Recovery, Renames, Attributes, OpenFiles):
    """The facade: start/close for the mount, status for the control socket."""

    def start(self, nursery: trio.Nursery) -> None:
        """Background work (uploads, prefetch, streaming parts) runs in `nursery` from now on."""
        self.nursery = nursery
        nursery.start_soon(self.upload_loop)

    def close(self) -> None:
        """After the last upload: close the journal, let the S3 worker threads go."""
        self.journal.close()
        self.staging_pool.clear()
        self.pool.shutdown(wait=False)

    def created(self, node: Node) -> None:
        """mknod: a new file is journaled and queued like a closed one."""
        self.persist(node)
        self.schedule(node)

    def status(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pending_uploads": len(self.queue) + len(self.running),
             "pending_index_writes": len(self.index_queue),
             "dirty_bytes": self.dirty.total,
             "journal_rows": self.journal.count(), "journal_writes": self.journal.writes,
             "nodes": len(self.inodes), "pages_pushed_bytes": self.pages.pushed}
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
