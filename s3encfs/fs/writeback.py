"""When things go up: the upload queue and heap, the upload loop, flush and fsync.

docs/INTERNALS.md, "Filesystem services: who owns what" (writeback): when a heap entry is stale,
how the loop is woken.
"""

from __future__ import annotations

import errno
import heapq
import logging
import math

import trio

from s3encfs.fs import health
from s3encfs.fs.bounded import SyncTimeout, bounded
from s3encfs.fs.nodecap import node_cap
from s3encfs.fs.nodes import Node
from s3encfs.fs.state import fuse_error
from s3encfs.fs.upload import Upload

log = logging.getLogger("s3encfs.fs")


class Writeback(Upload):
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

    def schedule(self, node: Node, delay: float | None = None) -> None:
        self._enqueue(node, trio.current_time() + (
            self.cfg.upload_delay if delay is None else delay))

    def schedule_index(self, d: Node) -> None:
        d.index_dirty = True
        if d not in self.index_queue:
            self.index_queue.add(d)
            d.index_due = min(d.index_due or 1e18, trio.current_time() + self.cfg.upload_delay)
        self._index_next = min(self._index_next, d.index_due)
        self._wake(d.index_due)

    async def upload_loop(self) -> None:
        """Start due uploads, at most `upload_concurrency` at once."""
        assert self.nursery is not None
        health.start_upload_loop(self)  # background work: S3's breaker never refuses it
        while True:
            self._kick = trio.Event()
            self.stats["upload_loop_passes"] = self.stats.get("upload_loop_passes", 0) + 1  # status
            now = trio.current_time()
            next_due = now + 3600
            # index writes first: uploads refill every free slot while files are queued, so
            # behind them a due index waited for the whole queue to drain — and with it the
            # journal rows it settles, which keep their nodes (plain mode: an rsync of 50,000
            # files held ~20,000 nodes by their rows at 21,000 files, and 241.8 MiB)
            if self.index_queue and len(self.running) < self.cfg.upload_concurrency:
                next_due = self._start_due_indexes(now)
            next_due = self._start_due_uploads(now, next_due)
            if not self.queue and not self.index_queue and not self.running:
                self._idle.set()  # wakes every flush_all waiting; later ones wait on a new one
                self._idle = trio.Event()
            self._wake_at = next_due
            with trio.move_on_at(next_due):
                await self._kick.wait()
            self._wake_at = -math.inf  # running: every change is looked at

    def _start_due_uploads(self, now: float, next_due: float) -> float:
        """Start the due nodes of the heap (dropping stale entries) while slots are free; the
        earliest time something else falls due."""
        assert self.nursery is not None
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
        return next_due

    def _start_due_indexes(self, now: float) -> float:
        """Start the index writes that are due and whose children are all in S3; the time to
        look again. The queue is only walked when something in it is due (`_index_next`, the
        earliest `index_due`): the loop runs a few times per file during an rsync, and walking
        hundreds of queued directories each time (and every child of the due ones) was the
        loop's main cost. A due directory whose children are still going up is looked at again
        0.2 s later, not at every wake-up."""
        if now < self._index_next:
            return self._index_next
        assert self.nursery is not None
        earliest = math.inf
        for d in list(self.index_queue):
            if len(self.running) >= self.cfg.upload_concurrency:
                earliest = now  # more are due: the next upload to finish wakes the loop
                break
            if d in self.running:
                earliest = min(earliest, now + 0.2)
                continue
            if d.index_due <= now and not self._index_held(d):
                d.index_due = 0  # the next change starts a fresh coalescing delay
                self.index_queue.discard(d)
                self.running.add(d)
                self.nursery.start_soon(self._index_task, d)
                continue
            if d.index_due <= now:
                d.index_due = now + 0.2  # children pending: look again shortly
            earliest = min(earliest, d.index_due)
        self._index_next = earliest
        return max(earliest, now + 0.05) if earliest < math.inf else now + 3600

    def _index_held(self, d: Node) -> bool:
        """A child's upload is queued or running: the directory's index waits for it (one
        write for a burst) — unless that many landed children wait on the index for their
        journal rows (plain mode: `_row_until_index`; a node with a row stays in memory) that
        an rsync into one big directory would keep them all until it pauses.  So the index
        goes up early once a tenth of the node cap, or an eighth of the directory (a rewrite
        costs the whole index: geometric, not one per file), waits on it."""
        queue, running = self.queue, self.running
        children = d.children or {}
        enough = max(node_cap() // 10, len(children) // 8)
        pending = waiting = 0
        for c in children.values():
            if c in queue or c in running:
                pending += 1
            elif c.row_id is not None and c.content is None and not c.meta_dirty:
                waiting += 1
            if pending and waiting >= enough:
                return False  # both only grow: the rest of the listing cannot change the answer
        return pending > 0

    async def flush_all(self) -> None:
        """Upload everything now and wait until S3 has it (fsync of the whole mount, unmount)."""
        while True:
            self._retry_stale_rows()
            for n in list(self.queue):
                if n.upload_due > 0 and n not in self._failures:  # failures keep their backoff
                    self._enqueue(n, 0)
            for d in self.index_queue:
                d.index_due = 0
            self._index_next = 0
            if not self.queue and not self.index_queue and not self.running:
                return
            self._kick.set()
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
