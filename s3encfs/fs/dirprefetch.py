"""Directory prefetch: tree walks list subdirectories in the background (one subtree LIST for
never-listed ones).  A directory rename voids listings taken before it (`_tree_gen`).
docs/INTERNALS.md, "Filesystem services: who owns what" (dirprefetch).
"""

from __future__ import annotations

import collections
import logging
import math
import time

import pyfuse3
import trio

from s3encfs.fs.listing import aread_index_at, read_index_at
from s3encfs.fs.nodes import Node
from s3encfs.fs.tasks import background
from s3encfs.fs.tree import LISTING, Tree
from s3encfs.fs.treelist import DirListing, SubtreeSplitter
from s3encfs.store import errors as store_errors

log = logging.getLogger("s3encfs.fs")
FAST_LIST_PAGES = 20  # a subtree listing stops after this many 1,000-key pages
PRELISTED_MAX_KEYS = 200_000  # no new subtree listing while this many keys wait to be used
INDEX_AHEAD = 16  # directory index GETs in flight ahead of a cold walk (_read_index_ahead)
FAST_LIST_WAYS = 8  # LISTs of one big subtree's subdirectories at once (_list_subtree)
FAST_LIST_SPLIT_MAX = 128  # more subdirectories than this: one LIST, not split


def forgot_children(d: Node) -> bool:
    """`d` dropped children the kernel had forgotten (or never looked up: the node cap,
    fs/nodecap.py), so its listing is incomplete (`drop_forgotten`, listed_at = -inf).  A
    prefetch does not list it again: that rebuilt ~1,000 nodes nobody asked for, which the cap
    dropped again, round after round (an rsync of 50,000 files into a mount made and threw
    away 389,276 such nodes).  A lookup in it lists it, in the foreground."""
    return math.isinf(d.listed_at) and d.listed_at < 0


class DirPrefetch(Tree):
    def prefetch_subdirs(self, d: Node) -> None:
        """A directory is being read (find, rsync, ls -R): list its subdirectories in the
        background, in parallel, so a tree walk does not pay one S3 round trip per directory
        in series."""
        if self.nursery is None or d.children is None:
            return
        now = time.monotonic()
        # one being listed now (LISTING; its listing read ahead already taken) is neither
        # prefetched nor cold: find's opendir of a directory whose subdirectories the
        # prefetch was listing started a second subtree LIST over them (and read their
        # indexes again: up to 450 GETs more in a cold walk of /usr/include)
        subdirs = [c for c in d.children.values() if c.is_dir and not forgot_children(c)
                   and c.listed_at != LISTING
                   and (c.children is None or now - c.listed_at >= self.cfg.dir_ttl)]
        if self.cfg.fast_list and self.cfg.dir_ttl > 0:
            # never-listed subdirectories: one LIST of the whole subtree (1 request per 1,000
            # keys) instead of one per directory; they are prefetched as it reaches them
            cold = self._cold_subdirs(subdirs)
            if cold:
                prefix = self.layout.dir_prefix(d.parts)
                self._after_fast_list.update(cold)
                covered = any(prefix.startswith(p) for p in self._fast_lists)
                if not covered and self._prelisted_keys < PRELISTED_MAX_KEYS:
                    self._fast_lists.add(prefix)
                    self.nursery.start_soon(background, self._fast_list, prefix, sorted(cold))
                    covered = True
                if covered:  # that LIST reads their indexes ahead (`_under_cold_root`)
                    self._cold_roots.update(cold)
                taken = set(cold.values())
                subdirs = [c for c in subdirs if c not in taken]
        for c in subdirs[:256]:
            self.nursery.start_soon(background, self._prefetch_dir, c)

    def _cold_subdirs(self, subdirs: list[Node]) -> dict[str, Node]:
        """The never-listed subdirectories no subtree LIST has reached yet, by prefix: with
        all below them (no node there can have children) they become roots of the index
        read-ahead (`_cold_roots`) of the LIST that covers them.  One already listed ahead
        gets its index read ahead now."""
        cold: dict[str, Node] = {}
        for c in subdirs:
            if c.children is None and not c.local_only:
                p = self.layout.dir_prefix(c.parts)
                pre = self.prelisted.get(p)
                if pre is None:
                    cold[p] = c
                else:
                    self._read_index_ahead(p, pre)
        return cold

    def _under_cold_root(self, prefix: str) -> bool:
        """`prefix` is a never-listed directory or under one (see `_cold_subdirs`).  A
        subtree LIST also passes directories this mount holds with their children, whose
        listings are only used if the kernel forgets them: their indexes are not read ahead
        (an rsync into a fresh mount read ~800 such indexes for nothing)."""
        roots = self._cold_roots
        i = prefix.find("/")
        while i >= 0:
            if prefix[:i + 1] in roots:
                return True
            i = prefix.find("/", i + 1)
        return prefix in roots

    async def _fast_list(self, prefix: str, subs: list[str]) -> None:
        """List the subtrees of `subs` (prefixes of never-listed subdirectories of the
        directory at `prefix`) into `prelisted`, up to FAST_LIST_PAGES x 1,000 keys in all.
        One undelimited LIST of `prefix`; once its first page shows the subtree is big, the
        subdirectories it has not reached get an undelimited LIST each, FAST_LIST_WAYS at
        once, and it stops where they begin (page after page, a cold walk at 20 ms RTT
        waited for every page before the directories it wanted: 10 for /usr/include).  A
        single such subdirectory (a backup's top level) is split one level down, after a
        delimited LIST of it."""
        now = time.monotonic()
        for p in [p for p, x in self.prelisted.items() if now - x.at >= self.cfg.dir_ttl]:
            self._take_prelisted(p)
        gen, budget = self._tree_gen, [FAST_LIST_PAGES * 1000]  # keys
        try:
            root = prefix
            if len(subs) == 1:
                level = await self._list_level(subs[0], gen, budget)
                if level is None:
                    return
                root, subs = subs[0], level.sorted_prefixes()
            async with trio.open_nursery() as nursery:
                await self._list_subtree(root, gen, budget, nursery=nursery, split_at=(
                    subs if len(subs) <= FAST_LIST_SPLIT_MAX else []))
        finally:
            self._fast_lists.discard(prefix)
            self._cold_roots = {r for r in self._cold_roots
                                if any(r.startswith(q) for q in self._fast_lists)}
            for p in [p for p in self._after_fast_list if p.startswith(prefix)]:
                if not any(p.startswith(q) for q in self._fast_lists):
                    self._prefetch_waiting(p)

    async def _list_level(self, prefix: str, gen: int, budget: list[int]) -> DirListing | None:
        """A delimited LIST of `prefix`, kept as its listing; None if it failed or was voided."""
        listing = DirListing()
        pages = self.store.list_pages(prefix, "/")
        try:
            while budget[0] > 0:
                page = await trio.to_thread.run_sync(next, pages, None, limiter=self.limiter)
                budget[0] -= max(1, len(page.objects) + len(page.prefixes)) if page else 1
                if gen != self._tree_gen:
                    return None
                if page is None:
                    listing.at = time.monotonic()
                    self._keep_listing(prefix, listing)
                    self._prefetch_waiting(prefix)
                    return listing
                listing.files.extend(page.objects)
                listing.prefixes.update(page.prefixes)
        except store_errors.StoreError as exc:
            log.debug("listing %r ahead failed (listed when used): %s", prefix, exc)
        finally:
            pages.close()
        return None

    async def _list_subtrees(self, roots: collections.deque[str], gen: int,
                             budget: list[int]) -> None:
        while roots and budget[0] > 0 and gen == self._tree_gen:
            await self._list_subtree(roots.popleft(), gen, budget)

    async def _list_subtree(self, root: str, gen: int, budget: list[int], *,
                            nursery: trio.Nursery | None = None,
                            split_at: list[str] | None = None) -> None:
        """One undelimited LIST of `root`, its pages split into directory listings (that of
        `root` itself kept unless it is split: it is listed already).  With `split_at` (its
        subdirectories, sorted), a first page that does not end the listing hands those it
        has not reached to LISTs of their own in `nursery`, and this one stops at the first
        of them.  A directory lies wholly before that stop (its keys are contiguous)."""
        split = SubtreeSplitter(root, skip=self.layout.control_prefix())
        pages = self.store.list_pages(root, None)
        stop: str | None = None
        try:
            while budget[0] > 0:
                page = await trio.to_thread.run_sync(next, pages, None, limiter=self.limiter)
                budget[0] -= max(1, len(page.objects)) if page else 1
                if gen != self._tree_gen:
                    return
                objects, ended = (page.objects, False) if page is not None else ([], True)
                if stop is not None and objects and objects[-1].key >= stop:
                    objects, ended = [o for o in objects if o.key < stop], True
                now = time.monotonic()
                done = split.add_page(objects, now)
                if ended:
                    done.update(split.finish(now))
                for p, listing in done.items():
                    if p != root or split_at is None:
                        self._keep_listing(p, listing)
                    self._prefetch_waiting(p)
                if ended:
                    return
                if stop is None and split_at and nursery is not None and objects:
                    rest = collections.deque(p for p in split_at if p > objects[-1].key)
                    if rest:
                        stop = rest[0]
                        for _ in range(min(FAST_LIST_WAYS, len(rest))):
                            nursery.start_soon(self._list_subtrees, rest, gen, budget)
        except store_errors.StoreError as exc:
            log.debug("subtree listing of %r failed (directories are listed one by one): %s",
                      root, exc)
        finally:
            pages.close()

    def _keep_listing(self, p: str, listing: DirListing) -> None:
        self._take_prelisted(p)
        self.prelisted[p] = listing
        self._prelisted_keys += len(listing.files) + len(listing.prefixes)
        if self._under_cold_root(p):
            self._read_index_ahead(p, listing)

    def _read_index_ahead(self, prefix: str, listing: DirListing) -> None:
        """Queue a GET of the index of a directory the subtree LIST completed: its first
        listing then needs no request at all.  A cold walk otherwise waited for one index GET
        per directory, at most 8 at once and only for the subdirectories of directories
        already entered (a round trip per level and per 8 directories, 825 directories in
        /usr/include).  `INDEX_AHEAD` workers take the queue in key order (a walk's order)."""
        if listing.index_queued:
            return
        listing.index_queued = True
        self._index_ahead.append((prefix, listing))
        if self._index_ahead_workers < INDEX_AHEAD and self.nursery is not None:
            self._index_ahead_workers += 1
            self.nursery.start_soon(background, self._index_ahead_worker)

    async def _index_ahead_worker(self) -> None:
        try:
            while self._index_ahead:
                prefix, listing = self._index_ahead.popleft()
                if self.prelisted.get(prefix) is listing:  # not used (nor voided) yet
                    await self._index_ahead_one(prefix, listing)
        finally:
            self._index_ahead_workers -= 1

    async def _index_ahead_one(self, prefix: str, listing: DirListing) -> None:
        """The GET itself; a first listing that takes `listing` meanwhile waits for it
        (`Tree._prelisted_for`) instead of sending a second one.  A failure leaves the
        index unread: that listing reads it itself, as without the read-ahead."""
        reading = listing.index_reading = trio.Event()
        try:
            key = self.layout.index_key_at(prefix)
            if self.store.awaitable_gets:  # on the CRT: awaited, no worker thread a GET
                listing.index = (await aread_index_at(self.store, self.layout, key),)
            else:
                listing.index = (await self.run(read_index_at, self.store, self.layout, key),)
            self.stats["index_read_ahead"] = self.stats.get("index_read_ahead", 0) + 1
        except store_errors.StoreError as exc:
            log.debug("index read-ahead of %r failed: %s", prefix, exc)
        finally:
            reading.set()

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

    async def lookup(self, parent: Node, name: str) -> Node | None:
        children = await self.ensure_listed(parent)
        now = time.monotonic()
        if now - parent.subdirs_prefetched_at >= self.cfg.dir_ttl:
            # a walk by path (rsync's lstat of every entry, never a readdir) gets the same
            # background listing of subdirectories as a readdir
            parent.subdirs_prefetched_at = now
            self.prefetch_subdirs(parent)
        return children.get(name)
