"""Conflict copies: another writer's version keeps the name, ours goes up beside it.

When a conflict copy is made at all is fs/identity.py's rule (docs/INTERNALS.md, "Upload
identity and conflicts").
"""

from __future__ import annotations

import logging
import os
import time

from s3encfs.fs import rebase
from s3encfs.fs.content import LocalContent
from s3encfs.fs.nodes import Node

log = logging.getLogger("s3encfs.fs")


class Conflicts(LocalContent):
    async def _keep_conflict_copy(self, node: Node) -> None:
        """Another writer changed the object since we read it: their version keeps the name,
        ours is uploaded beside it as a visible conflict copy (never silently overwritten)."""
        parent = node.parent
        if parent is None or node.unlinked:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        async with node.lock:
            siblings = await self.ensure_listed(parent)
            new = rebase.conflict_name(node.name, os.uname().nodename, stamp, siblings)
            try:
                if node.content is not None and node.content.base is not None:
                    await self._materialize(node)
            except Exception as exc:
                log.error("conflict on %r: cannot read our base version (%s); keeping the "
                          "local copy queued", node.path, exc)
            old_path = node.path
            siblings = await self.ensure_listed(parent)
            if siblings.get(node.name) is node:
                siblings.pop(node.name)
            siblings[new] = node
            node.name = new
            node.obj = None
            node.replaced_etag = None
            self._save_path(node)
        parent.listed_at = 0  # show the other writer's version under the original name
        self.stats["conflicts"] = self.stats.get("conflicts", 0) + 1
        self.stats["last_conflict"] = f"{old_path} -> {node.path}"
        log.warning("conflict: %r was changed by another writer; our version is kept as %r",
                    old_path, node.path)
