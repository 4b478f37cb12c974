"""The block cache's memory tier: blocks by (key, ETag, block), LRU, bounded in bytes held.

A fetched run of blocks is one buffer (one GET), and its blocks are read-only slices of it
(`BlockCache._publish`: no copy of each block). A slice keeps the whole buffer alive, so the
bound counts buffers, not slices: a run's buffer is charged in full when its first block
enters and released when its last one leaves. The tier never holds more than `limit` bytes
of buffers, whichever blocks of a run the LRU keeps.

Not thread-safe by itself: `BlockCache` calls it under its `_lock`.
"""

from __future__ import annotations

from collections import OrderedDict

# A block's bytes: `bytes` (read from disk) or a read-only slice of its run's buffer.
Block = bytes | memoryview
Ident = tuple[str, str, int]


class MemTier:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0  # bytes of buffers held
        self._blocks: OrderedDict[Ident, Block] = OrderedDict()
        self._owners: dict[int, int] = {}  # id(buffer) -> its slices held here

    def __contains__(self, ident: Ident) -> bool:
        return ident in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, ident: Ident) -> Block | None:
        data = self._blocks.get(ident)
        if data is not None:
            self._blocks.move_to_end(ident)
        return data

    def put(self, ident: Ident, data: Block) -> None:
        if ident in self._blocks:
            return
        self._blocks[ident] = data
        self.total += self._charge(data)
        while self.total > self.limit and self._blocks:
            _k, old = self._blocks.popitem(last=False)
            self.total -= self._release(old)

    def pop(self, ident: Ident) -> None:
        data = self._blocks.pop(ident, None)
        if data is not None:
            self.total -= self._release(data)

    def clear(self) -> None:
        self._blocks.clear()
        self._owners.clear()
        self.total = 0

    def _charge(self, data: Block) -> int:
        if not isinstance(data, memoryview):
            return len(data)
        owner = id(data.obj)  # alive while a slice is held here: its id is not reused
        held = self._owners.get(owner, 0)
        self._owners[owner] = held + 1
        return 0 if held else _size(data)

    def _release(self, data: Block) -> int:
        if not isinstance(data, memoryview):
            return len(data)
        owner = id(data.obj)
        held = self._owners[owner] - 1
        if held:
            self._owners[owner] = held
            return 0
        del self._owners[owner]
        return _size(data)


def _size(view: memoryview) -> int:
    """Bytes of the buffer a slice belongs to."""
    with memoryview(view.obj) as whole:
        return whole.nbytes
