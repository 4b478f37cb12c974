"""Local spool files of S3EC mode, unlinked right after creation (nothing survives a crash; an
unlinked file stays readable through its descriptor until the last reference goes, so eviction
never breaks a read in flight).

(a) Views (`Spool`): the plaintext of whole objects whose GCM tag has been verified (a reader
is only ever served bytes from a view that is complete), unsealed like the block cache.
(b) `PartSpool`: multipart parts that arrived before their turn (store/s3ec_upload.py), in
fixed 1 MiB chunks, each AES-256-GCM sealed under a random per-spool key that never leaves
memory, nonce = chunk index (the key is fresh per spool, so nonces never repeat under one key).
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3encfs.codec import IntegrityError

CHUNK = 1024 * 1024
_SLOT = CHUNK + 16


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """A disk filling midway gives a short count, not an error: loop, so it raises ENOSPC
    (a torn slot would only show later, as "local spool damaged")."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class Spool:
    """Append-only verified plaintext of one whole object in an unlinked file; `read(start,
    end)` any range once written. Not sealed: it holds what the block cache beside it holds
    too (plaintext, in this mode, docs/ENCRYPTION.md), and a seal cost two more AES-GCM passes
    per byte of a cold read (seal, then open on every read: ~1 s CPU per GiB)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="spool-", dir=directory)
        os.unlink(path)  # nothing to clean up after a crash; readable through fd only
        self.fd = fd
        self.size = 0
        weakref.finalize(self, os.close, fd)

    def write(self, data: bytes | memoryview) -> None:
        # 1 MiB per pwrite: one 8 MiB pwrite cost 10x the CPU here (the kernel's page-cache
        # allocation for big writes: 0.5 s per 256 MiB, 1 MiB writes 0.05 s)
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            _pwrite_all(self.fd, view[i:i + CHUNK], self.size + i)
        self.size += len(view)

    def finish(self) -> None:
        pass

    def stream(self, write: Callable[[memoryview], None]) -> int:
        """All of it, in order, into `write`, 1 MiB per call; its size."""
        for off in range(0, self.size, CHUNK):
            write(memoryview(self.read(off, off + CHUNK)))
        return self.size

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        data = os.pread(self.fd, end - start, start)
        if len(data) != end - start:
            raise IntegrityError("local spool damaged (short)")
        return data


class PartSpool:
    """Parts of one multipart upload, by part number, in ONE sealed file (one descriptor,
    however many parts). Each part gets fresh chunk slots, so nonces (= slot index) never
    repeat under the key; re-sending a part gives it new slots."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="parts-", dir=directory)
        os.unlink(path)
        self.fd = fd
        self._aead = AESGCM(AESGCM.generate_key(256))
        self._next = 0
        self._parts: dict[int, tuple[int, int]] = {}  # number -> (first slot, length)
        self._lock = threading.Lock()
        weakref.finalize(self, os.close, fd)

    def put(self, number: int, data: bytes | bytearray) -> None:
        slots = max(1, -(-len(data) // CHUNK))
        with self._lock:
            first = self._next
            self._next += slots
        view = memoryview(data)
        for j in range(slots):
            i = first + j
            chunk = view[j * CHUNK:(j + 1) * CHUNK]
            _pwrite_all(self.fd, self._aead.encrypt(i.to_bytes(12, "big"), chunk, None),
                        i * _SLOT)
        with self._lock:
            self._parts[number] = (first, len(data))

    def get(self, number: int) -> bytes:
        first, n = self._parts[number]
        out = []
        for j in range(max(1, -(-n // CHUNK))):
            i = first + j
            raw = os.pread(self.fd, min(CHUNK, n - j * CHUNK) + 16, i * _SLOT)
            try:
                out.append(self._aead.decrypt(i.to_bytes(12, "big"), raw, None))
            except InvalidTag:
                raise IntegrityError("local part spool damaged") from None
        return b"".join(out)

    def size(self) -> int:
        return sum(n for _f, n in self._parts.values())

    def numbers(self) -> list[int]:
        return sorted(self._parts)


class BodyView(Spool):
    """A view of a body this mount is writing, kept in memory: a small PUT makes no spool file
    (its open, unlink and pwrite were ~0.2 ms of CPU per file in W4's thousands of small ones)."""

    def __init__(self, body: bytes) -> None:  # no file: nothing to open or close
        self.body = bytes(body)  # (a bytes object is not copied; a bytearray could change)
        self.size = len(self.body)

    def read(self, start: int, end: int) -> bytes:
        return self.body[start:end] if start < end else b""


MEM_VIEW = 64 * 1024  # written bodies up to this size are BodyViews (at most max_count: 16 MiB)


class Views:
    """Verified plaintext of whole objects, keyed by (key, ETag); LRU bounded by bytes."""

    def __init__(self, directory: str, max_bytes: int, max_count: int = 256) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.max_count = max_count  # each view holds a descriptor
        self._lock = threading.Lock()
        self._views: OrderedDict[tuple[str, str], Spool] = OrderedDict()
        self._total = 0

    def get(self, key: str, etag: str) -> Spool | None:
        with self._lock:
            v = self._views.get((key, etag))
            if v is not None:
                self._views.move_to_end((key, etag))
            return v

    def new(self) -> Spool:
        return Spool(self.dir)

    def written(self, body: bytes) -> Spool:
        """A view of `body`, which this mount is writing: in memory when small, else a spool."""
        if len(body) <= MEM_VIEW:
            return BodyView(body)
        spool = self.new()
        spool.write(body)
        return spool

    def publish(self, key: str, etag: str, spool: Spool) -> None:
        spool.finish()
        with self._lock:
            old = self._views.pop((key, etag), None)
            if old is not None:
                self._total -= old.size
            self._views[(key, etag)] = spool
            self._total += spool.size
            while (self._total > self.max_bytes or len(self._views) > self.max_count) \
                    and len(self._views) > 1:
                _k, gone = self._views.popitem(last=False)
                self._total -= gone.size

    def drop_key(self, key: str) -> None:
        with self._lock:
            for ident in [i for i in self._views if i[0] == key]:
                self._total -= self._views.pop(ident).size
