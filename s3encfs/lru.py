"""A dict with a size cap that forgets its least recently used entries (docs/INTERNALS.md,
"Memory").  For caches filled once per object seen, which must not grow with the file count."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

CIPHER_CACHE = 1024  # opened object ciphers kept (FsCore._ciphers, ClientCodec._ciphers); client
# mode ~8 KB each


class LruDict(OrderedDict[K, V]):
    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        if key in self:
            self.move_to_end(key)
            return super().__getitem__(key)
        return default
