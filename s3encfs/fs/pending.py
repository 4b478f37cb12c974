"""Journal rows: a node's pending work recorded before `close()` returns, dropped once S3 has it.

The durability protocol (row before close returns; staging removed only after its row) is in
docs/INTERNALS.md, "Filesystem services: who owns what" (pending).
"""

from __future__ import annotations

import logging
from typing import Any

from s3encfs.fs import identity
from s3encfs.fs.nodes import Content, Node
from s3encfs.fs.state import FsState
from s3encfs.store.layout import attrs_to_meta

log = logging.getLogger("s3encfs.fs")


class PendingRows(FsState):
    def _row_data(self, node: Node) -> dict[str, Any]:
        c = node.content
        data: dict[str, Any] = {"attrs": attrs_to_meta(node.attrs), "size": node.attrs.size,
                                "replaced_etag": node.replaced_etag, "tokens": node.tokens}
        if c is not None:
            data.update({"token": c.token, "file_id": c.staging.file_id, "dirty": c.dirty.to_hex(),
                         "base": c.base.to_json() if c.base else None,
                         "base_segs": c.base_segs, "cipher_meta": c.cipher_meta})
            if c.staging.cipher.whole_slots_are_segments:  # sealed under cipher_meta's key
                data["object_slots"] = True
        elif node.obj is not None:
            data["obj"] = node.obj.to_json()
            # nothing left to copy: S3 has these attrs; only the parent's index may lag
            data["landed"] = not node.meta_dirty
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

    def _row_until_index(self, node: Node) -> None:
        """The upload of `node` landed; keep its row, as a "meta" row marked `landed`, until
        the parent's index carries the new (ETag, metadata) (`write_index` removes it).
        Where ETags are MD5s of the body (plain and SSE modes), a version with the body of an
        earlier one has the same ETag, so after a crash the parent's old index entry — and
        the attribute cache — matched the new object and served the old mode and mtime for
        ever: the utime of a file fsync'd (re-uploaded unchanged) was lost.  A replayed
        `landed` row rewrites that entry and forgets the cached attrs (fs/recovery.py)."""
        node.tokens.clear()
        try:
            self.persist(node)
        except OSError as exc:  # a full cache disk takes deletes only: never fail the upload
            log.warning("journal: %s; the row goes now", exc)
            self._drop_row(node)

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
