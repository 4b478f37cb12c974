"""Crash replay at mount: finish the uploads a previous mount journaled, sweep orphans.

docs/INTERNALS.md, "Filesystem services: who owns what" (recovery).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from s3encfs.cache.staging import DirtySet, StagingFile
from s3encfs.fs import identity, rebase
from s3encfs.fs.listing import (
    DirIndex,
    metadata_rewritten,
    read_index,
    write_index,
)
from s3encfs.fs.nodes import ObjectRef
from s3encfs.fs.upload import Upload
from s3encfs.fs.uploader import UploadJob
from s3encfs.store import errors as store_errors

log = logging.getLogger("s3encfs.fs")


class Recovery(Upload):
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
        slots = self.slots.for_content(self.codec.open_object(data["cipher_meta"])) \
            if data.get("object_slots") else self.slots  # whole slots under the row's key
        staging = StagingFile(path, data["file_id"], self.seg.segment_size, slots, create=True)
        base = ObjectRef.from_json(data["base"]) if data.get("base") else None
        cipher = self.cipher_for(base) if base is not None else \
            self.codec.open_object(data["cipher_meta"])
        base_cipher = cipher if base is not None else None
        attrs = meta_to_attrs(data["attrs"], default_mode=0o100644, size=data["size"],
                              last_modified=time.time())
        token, tokens = self._row_token(row_id, parts, data)
        key = self.layout.file_key(parts)
        cipher, data = self._version_cipher(cipher, base, data)
        meta = self.object_meta(data["cipher_meta"], attrs, key, token)
        job = UploadJob(key, data["size"], DirtySet.from_hex(data["dirty"]), staging, cipher,
                        meta, base, base_cipher, data["base_segs"])
        self._set_precondition(job, base, data.get("replaced_etag"))
        try:
            # the crashed mount's upload of this very row may have landed (same token): that is
            # success, not a conflict; an earlier one of ours is overwritten (fs/identity.py);
            # a base deleted or replaced meanwhile is settled as for a live node (fs/rebase.py)
            obj = await rebase.replay_upload(self, job, token, tokens, "/".join(parts))
            if not self.codec.fresh_key_per_version:  # the same body: the same ETag
                await self.run(metadata_rewritten, self.store, self.layout, self.journal, parts,
                               obj.etag, obj.meta)
        except store_errors.PreconditionFailed:
            await self._replay_conflict(job, key, parts, data["cipher_meta"], attrs)
        staging.remove()
        log.info("replayed pending upload of %r", "/".join(parts))

    def _row_token(self, row_id: int, parts: tuple[str, ...],
                   data: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The row's upload token; a row from before upload tokens gets one (journaled) before
        anything is sent."""
        token, tokens = data.get("token"), tuple(data.get("tokens") or ())
        if not token:
            token = identity.new_token()
            tokens = (*tokens, token)
            self.journal.update(row_id, "/".join(parts),
                                {**data, "token": token, "tokens": list(tokens)}, "file")
        return token, tokens

    def _version_cipher(self, cipher: Any, base: ObjectRef | None,
                        data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Over a base, a codec with a key per version uploads under the row's own key (a row
        written before v2 shares the base's object id: a fresh key then)."""
        if base is not None and self.codec.fresh_key_per_version:
            if data["cipher_meta"].get("s3encfs-oid") == base.meta.get("s3encfs-oid"):
                cipher, fresh = self.codec.new_object()  # a row written before v2
                return cipher, dict(data, cipher_meta=self._cipher_meta(fresh))
            return self.codec.open_object(data["cipher_meta"]), data
        return cipher, data

    async def _replay_conflict(self, job: UploadJob, key: str, parts: tuple[str, ...],
                               cipher_meta: dict[str, str], attrs: Any) -> None:
        """S3's object changed meanwhile: our version goes up as a conflict copy."""
        job.key = f"{key}.conflict-{os.uname().nodename}-{time.strftime('%Y%m%d-%H%M%S')}"
        if self.codec.encrypts_names:  # the conflict name must be encoded like any other
            job.key = self.layout.file_key((*parts[:-1], parts[-1] + job.key[len(key):]))
        job.expect_any = True
        job.meta = self.object_meta(cipher_meta, attrs, job.key)  # bound to its key
        log.warning("replay: %r changed in S3 meanwhile; our version goes to %s",
                    "/".join(parts), job.key)
        await self.run(self.uploader.upload, job)

    async def _replay_meta(self, parts: tuple[str, ...], data: dict[str, Any]) -> None:
        from s3encfs.store.layout import meta_to_attrs
        obj = ObjectRef.from_json(data["obj"])
        key = self.layout.file_key(parts)
        if data.get("landed") and obj.key == key:
            # the object has these attrs already (an upload or self-copy that landed): only
            # the parent's index entry and the attribute cache may still hold the old ones
            # (fs/pending.py `_row_until_index`)
            await self.run(metadata_rewritten, self.store, self.layout, self.journal, parts,
                           obj.etag, obj.meta)
            return
        attrs = meta_to_attrs(data["attrs"], default_mode=0o100644, size=obj.plain_size,
                              last_modified=time.time())
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
