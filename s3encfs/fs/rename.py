"""rename(2): a file is one CopyObject + DeleteObject; a directory copies its whole subtree.

Lock order and S3 ordering (parents first on copy, children before markers on delete):
docs/INTERNALS.md, "Upload identity and conflicts" and "Filesystem services: who owns what".
"""

from __future__ import annotations

import errno
import logging

import pyfuse3
import trio

from s3encfs.codec import IntegrityError
from s3encfs.fs import identity
from s3encfs.fs.namespace import Namespace
from s3encfs.fs.nodes import Node, ObjectRef
from s3encfs.fs.sealing import reseal_for_move
from s3encfs.fs.state import fuse_error
from s3encfs.store import errors as store_errors
from s3encfs.store.layout import attrs_to_meta, now_ns

log = logging.getLogger("s3encfs.fs")


class Renames(Namespace):
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
            await self._drop_detached_content(target)
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
                await self._take_over_target(node, target, will_upload)
            if node.obj is not None:
                await self._copy_object(node, node.obj, p_new, new_key)
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

    async def _take_over_target(self, node: Node, target: Node, will_upload: bool) -> None:
        """Detach the file a rename replaces; an upload of ours still to come inherits what S3
        holds under the name and the target's upload tokens (they stay ours, fs/identity.py)."""
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

    async def _copy_object(self, node: Node, obj: ObjectRef, p_new: Node, new_key: str) -> None:
        """Move the file's object: copy it to `new_key` (attrs re-sealed), delete the old key."""
        try:
            await self._put_pending_markers(p_new)
            old_key = (node.obj or obj).key
            meta = self._resealed_meta(node, new_key)
            etag = await self.run(self.store.copy, old_key, new_key, metadata=meta)
            await self.run(self.store.delete, old_key)
        except store_errors.StoreError as exc:
            log.error("rename of %r failed: %s", node.path, exc)
            raise fuse_error(errno.EIO) from None
        now = node.obj or obj  # as the listing may have updated it meanwhile
        node.obj = ObjectRef(new_key, etag, now.obj_size, now.plain_size,
                             meta if meta is not None else now.meta)
        if node.content is not None and node.content.base is not None:
            node.content.base = node.obj

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
        node.parent.removed_child(node.name)
        assert p_new.children is not None
        p_new.children[new] = node
        node.changed_here()
        node.parent = p_new
        node.name = new
        node.attrs.ctime_ns = now_ns()

    async def _rename_dir(self, node: Node, p_new: Node, new: str, target: Node | None) -> None:
        """S3 has no directory rename: copy every object under the old prefix, then delete."""
        await self.flush_subtree(node)
        old_parts = node.parts
        new_parts = self.child_parts(p_new, new)
        old_prefix = self.layout.dir_prefix(old_parts)
        try:
            if target is not None:
                await self._detach_target(target, replaced_by_upload=False)
            moves = await self.run(self._plan_dir_moves, old_prefix, old_parts, new_parts)
            resealed: dict[str, dict[str, str]] = {}
            await self._put_pending_markers(p_new)
            await self.run(self.store.put, self.layout.dir_prefix(new_parts), b"",
                           attrs_to_meta(node.attrs) if not self.codec.encrypts_names else {})
            copied = await self.run(self._copy_moves, moves, resealed)
            old_dirs = self._subtree_index_keys(node)  # walks Node.children: the trio thread
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

    def _plan_dir_moves(self, old_prefix: str, old_parts: tuple[str, ...],
                        new_parts: tuple[str, ...]) -> list[tuple[str, str]]:
        """(source key, destination key) of every object under `old_prefix` (a worker thread:
        one subtree LIST; names are decoded level by level and encoded for their new place)."""
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

    def _copy_moves(self, moves: list[tuple[str, str]],
                    resealed: dict[str, dict[str, str]]) -> dict[str, str]:
        """Copy every planned object (a worker thread); destination key → new ETag.  Sealed
        attributes are re-sealed for their new key (into `resealed`).  Markers level by
        level, parents first, then the files: a PUT under `d/` overlapping the PUT of `d/` can
        drop that marker (see _put_pending_markers)."""
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

        done: dict[str, str] = {}
        markers = [m for m in moves if m[0].endswith("/")]
        for depth in sorted({m[1].count("/") for m in markers}):
            level = [m for m in markers if m[1].count("/") == depth]
            done.update(self.pool.map(copy, level))
        done.update(self.pool.map(copy, [m for m in moves if not m[0].endswith("/")]))
        return done

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
            if n is not node:
                # a row still waiting for an index write names the old path: replayed there,
                # a directory's row made the old directory again, a file's failed for ever
                self._save_path(n)
