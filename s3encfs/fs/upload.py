"""How one node goes up: a file's content or metadata, a directory's marker or index.

Runs under the node's lock; re-queues through the scheduler's `_enqueue`/`schedule`
(fs/writeback.py, declared in fs/state.py).  docs/INTERNALS.md, "Filesystem services: who owns
what" (upload) and "Upload identity and conflicts".
"""

from __future__ import annotations

import logging
import math
import time

import trio

from s3encfs.cache.staging import StagingFile
from s3encfs.fs import identity, rebase, small_upload
from s3encfs.fs.conflicts import Conflicts
from s3encfs.fs.listing import (
    DirIndex,
    index_object,
    write_index,
)
from s3encfs.fs.nodes import Content, Node, ObjectRef
from s3encfs.fs.uploader import StreamedParts, UploadJob
from s3encfs.store import errors as store_errors
from s3encfs.store.layout import attrs_to_meta

log = logging.getLogger("s3encfs.fs")
# an index of at most this many entries is built on the trio thread and its PUT awaited there
# (store/crt_async.py), like a small file's: a worker thread hand-off cost ~100 us of CPU per
# index write and marker on W4; a bigger one (its JSON, its sealing) stays on a worker thread
AWAITED_INDEX = 1000


def expected_at(key: str, obj: ObjectRef | None, replaced_etag: str | None) -> str | None:
    """The ETag S3 should hold at `key`: `obj`'s if it is at that key, else that of the object
    a rename-over replaced there (None: nothing should be there)."""
    if obj is not None and obj.key == key:
        return obj.etag
    return replaced_etag


class Upload(Conflicts):
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

    async def upload_node(self, node: Node) -> None:
        try:  # a free lock at once: no trip through trio's scheduler (nearly every upload)
            node.lock.acquire_nowait()
        except trio.WouldBlock:
            await node.lock.acquire()
        try:
            await self._upload_locked(node)
        finally:
            node.lock.release()

    async def _upload_locked(self, node: Node) -> None:
        if node.unlinked:
            return
        await self._put_pending_markers(node.parent)
        if node.is_dir:
            await self._upload_dir(node)
            return
        c = node.content
        key = self.key_of(node)
        uploaded_staging: StagingFile | None = None  # set when the upload landed (see below)
        meta_copied = False  # a metadata-only copy: its row goes with the index write (below)
        if c is not None:
            uploaded_staging = await self._upload_content(node, c, key)
        elif node.meta_dirty and node.obj is not None:
            await self._copy_metadata(node, node.obj, key)
            meta_copied = True
        self._settle_row(node, uploaded_staging, meta_copied)
        if node.parent is not None:
            self.schedule_index(node.parent)
        self._space.set()  # wakes every writer waiting for space; later ones wait on a new one
        self._space = trio.Event()

    async def _upload_dir(self, node: Node) -> None:
        """A directory goes up as its marker (if still to be PUT) and its parent's index."""
        if node.marker_pending:
            await self._put_marker(node)
        self.schedule_index(node.parent if node.parent is not None else node)

    async def _upload_content(self, node: Node, c: Content, key: str) -> StagingFile | None:
        """Upload this version of the file's bytes; the staging file to remove once its row is
        gone (None while a newer version is still to go up, see `_settle_row`)."""
        st = await self.streamer.settle(c)
        if st is not None and (st.key != key or st.token != c.token):
            await self.streamer.discard(c)  # renamed while streaming: start over
            st = None
        if c.gen != c.journal_gen or c.token_used or node.row_id is None:
            self.persist(node)  # the row names the token (and data) this upload carries
        token, tokens = c.token, tuple(node.tokens)
        c.token_used = True
        sent_attrs = attrs_to_meta(node.attrs)
        job = self._content_job(node, c, key, token)
        if st is not None and st.upload_id is not None:
            job.stream = StreamedParts(st.upload_id, st.per, dict(st.parts))
        streamed = job.stream
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
        if c.gen != gen:
            return None
        uploaded_staging = self._finish_content(node)
        self.dirty.sync(c) if node.content is c else self.dirty.drop(c)
        if node.content is None and attrs_to_meta(node.attrs) != sent_attrs:
            node.meta_dirty = True  # chmod/utime/chown while the upload ran
        return uploaded_staging

    def _content_job(self, node: Node, c: Content, key: str, token: str) -> UploadJob:
        """What one upload of `c` sends, conditional on what S3 should hold at `key`."""
        base_cipher = self.cipher_for(c.base) if c.base is not None else None
        meta = self.object_meta(c.cipher_meta, node.attrs, key, token)
        job = UploadJob(key, node.attrs.size, c.dirty.copy(), c.staging, c.cipher, meta,
                        c.base, base_cipher, c.base_segs)
        self._set_precondition(job, node.obj, node.replaced_etag)
        return job

    async def _copy_metadata(self, node: Node, obj: ObjectRef, key: str) -> None:
        """A clean file's changed metadata: a copy of the object onto `key`."""
        meta = self.object_meta(self._cipher_meta(obj.meta), node.attrs, key)
        etag = await self.run(self.store.copy, obj.key, key, metadata=meta)
        node.obj = ObjectRef(key, etag, obj.obj_size, obj.plain_size, meta)
        node.meta_dirty = False

    def _settle_row(self, node: Node, uploaded_staging: StagingFile | None,
                    meta_copied: bool) -> None:
        """After an upload: the journal row goes, then the staging file; metadata changed
        meanwhile gets a "meta" row and is scheduled."""
        if uploaded_staging is not None and node.content is None and node.row_id is not None \
                and not self.codec.fresh_key_per_version:
            self._row_until_index(node)  # the same body has the same ETag: fs/pending.py
        elif (node.content is None and not meta_copied) or uploaded_staging is not None:
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

    async def run_upload(self, job: UploadJob, token: str, tokens: tuple[str, ...]) -> ObjectRef:
        """Upload `job`; a failed precondition is settled by the object's identity (our own
        upload is never a conflict; fs/identity.py).  PreconditionFailed: another writer."""
        return await small_upload.upload_owned(  # a small new file: no worker thread
            self.uploader, self.store, self.codec, job, token, tokens,
            on_round=self._count_round, rel_key=self.layout.rel_key, run=self.run)

    def _count_round(self, verdict: identity.Verdict) -> None:
        key = f"upload_412_{verdict.value}"
        self.stats[key] = self.stats.get(key, 0) + 1  # from a worker thread: a dict update

    def _expected_etag(self, node: Node, key: str) -> str | None:
        """The ETag S3 should still hold at `key` (None: no object should be there)."""
        return expected_at(key, node.obj, node.replaced_etag)

    def _set_precondition(self, job: UploadJob, obj: ObjectRef | None,
                          replaced_etag: str | None) -> None:
        """The conditional write of `job` (live uploads and replay alike): If-Match on what
        this mount last saw at the key, else If-None-Match (unless conditional writes are off)."""
        job.expect_any = not self.cfg.conditional_writes
        job.expect_etag = expected_at(job.key, obj, replaced_etag)

    async def _index_task(self, d: Node) -> None:
        try:
            await self.write_index(d)
        except Exception as exc:
            self.stats["upload_errors"] += 1
            self.stats["last_error"] = f"index {d.path}: {exc}"
            log.error("index of %r failed (will retry): %s", d.path or "/", exc)
            d.index_due = trio.current_time() + 5
            self.index_queue.add(d)
            self._index_next = min(self._index_next, d.index_due)
        finally:
            self.running.discard(d)
            self._kick.set()

    async def write_index(self, d: Node) -> None:
        if d.unlinked:
            return
        # what this mount knows, even if the listing is older than dir_ttl: entries are only
        # hints checked against each object's ETag, so no fresh LIST is needed to write them.
        # Not a listing a forgotten child left incomplete (-inf, `drop_forgotten`): the index
        # is the only home of a subdirectory's attrs, and it would lose the forgotten names —
        # listed again first (a failed LIST fails this write, which is retried).
        children = d.children
        for _attempt in range(3):
            if children is not None and d.listed_at != -math.inf:
                break
            children = await self.ensure_listed(d)  # a FORGET during the LIST leaves -inf
        else:
            raise store_errors.StoreError("the listing kept losing forgotten names")
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
        index = DirIndex(files, dirs, self_meta)
        if self.store.awaitable_puts and len(files) + len(dirs) <= AWAITED_INDEX:
            await self._put_small(*index_object(self.layout, d.parts, index), {})
        else:
            await self.run(write_index, self.store, self.layout, d.parts, index)
        settled = [(child, row) for child, row, meta in done_rows
                   if child.row_id == row and attrs_to_meta(child.attrs) == meta
                   and not child.marker_pending and child.content is None
                   and not child.meta_dirty]
        self.journal.remove_many([row for _child, row in settled])  # one commit for them all
        for child, _row in settled:
            child.row_id = None
            child.local_only = False
            child.changed_here()

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
        await self._put_small(self.layout.dir_prefix(node.parts), b"", meta)
        node.marker_pending = False

    async def _put_small(self, key: str, body: bytes, meta: dict[str, str]) -> None:
        """A small body's PUT: awaited on the trio thread where the store can (no worker
        thread hand-off, ~100 us each on W4), else on a worker thread."""
        if self.store.awaitable_puts:
            await self.store.aput(key, body, meta)
        else:
            await self.run(self.store.put, key, body, meta)
