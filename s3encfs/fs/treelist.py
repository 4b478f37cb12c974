"""A whole subtree from one paginated, undelimited LIST, split into per-directory listings.

A cold tree walk (`find`, `rsync` into a fresh mount, `du`) otherwise costs one delimited LIST
per directory; one undelimited LIST returns 1,000 keys per request whatever the tree's shape
(rclone calls this `--fast-list`).  Keys come back in byte order, so every directory's keys are
contiguous: once the listing has moved past a directory's prefix, that directory is complete
and its listing can be served while the rest of the subtree is still being listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from s3encfs.store.s3 import ObjectInfo

if TYPE_CHECKING:
    from s3encfs.fs.listing import DirIndex


@dataclass(slots=True)
class DirListing:
    """What a delimited LIST of `prefix` would have returned."""

    files: list[ObjectInfo] = field(default_factory=list)
    prefixes: set[str] = field(default_factory=set)
    at: float = 0.0  # time.monotonic() of the page that completed it
    # the directory's index object, read ahead (fs/dirprefetch.py): (None,) = there is none;
    # `index_reading` is set while that GET is in flight and once it ended
    index: tuple[DirIndex | None] | None = None
    index_reading: trio.Event | None = None
    index_queued: bool = False

    def sorted_prefixes(self) -> list[str]:
        return sorted(self.prefixes)


class SubtreeSplitter:
    """Feed it the pages of an undelimited LIST of `root`; it hands back directories (key
    prefixes ending in '/') as soon as no later key can belong to them."""

    def __init__(self, root: str, skip: str | None = None):
        self.root = root
        self.skip = skip  # a prefix whose keys are not part of the tree (the control dir)
        self._open: dict[str, DirListing] = {root: DirListing()}

    def _dir(self, prefix: str) -> DirListing:
        d = self._open.get(prefix)
        if d is None:
            d = self._open[prefix] = DirListing()
        return d

    def add_page(self, objects: list[ObjectInfo], now: float) -> dict[str, DirListing]:
        """Take one page (in key order); return the directories it completed."""
        root = self.root
        for info in objects:
            key = info.key
            if not key.startswith(root) or (self.skip and key.startswith(self.skip)):
                continue
            parent = root
            start = len(root)
            while True:
                slash = key.find("/", start)
                if slash < 0:
                    break
                sub = key[:slash + 1]
                self._dir(parent).prefixes.add(sub)
                parent, start = sub, slash + 1
            self._dir(parent).files.append(info)
        if not objects:
            return {}
        last = objects[-1].key
        done = {p: d for p, d in self._open.items() if last > p and not last.startswith(p)}
        for p, d in done.items():
            del self._open[p]
            d.at = now
        return done

    def finish(self, now: float) -> dict[str, DirListing]:
        """The listing ended (not truncated): every directory seen is complete."""
        done, self._open = self._open, {}
        for d in done.values():
            d.at = now
        return done

    def pending(self) -> list[str]:
        """Directories seen but not known to be complete (the listing stopped early)."""
        return list(self._open)
