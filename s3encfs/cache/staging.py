"""Staging files: the local, crash-surviving copy of the segments a file has changed.

A staging file is an array of fixed *slots*, one per plaintext segment, each sealed by the codec's
`SlotCipher` (identity in plain mode, AEAD under a wrapped cache key in client mode — so no
plaintext is at rest). A sealed slot may fill only part of its place (client mode seals a
segment's meaningful bytes, not its trailing zeros): `read_segment` hands the cipher what is
there and gets the whole segment back.  Only segments marked dirty hold meaningful data; all
other segments come from the base object (or are zeros).  The dirty set is persisted in the
journal at close/fsync.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from typing import Any

from s3encfs.codec import SlotCipher


class DirtySet:
    """A growable bitmap of segment indices; `count()` is O(1) (kept as bits change), since the
    dirty-byte accounting asks for it after every write."""

    def __init__(self, data: bytes = b""):
        self._bits = bytearray(data)
        self._n = sum(b.bit_count() for b in self._bits)

    def add(self, i: int) -> None:
        byte = i >> 3
        if byte >= len(self._bits):
            self._bits.extend(b"\0" * (byte + 1 - len(self._bits)))
        bit = 1 << (i & 7)
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._n += 1

    def __contains__(self, i: int) -> bool:
        byte = i >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (i & 7)))

    def discard_from(self, first: int) -> None:
        """Drop every index >= first."""
        byte = first >> 3
        if byte >= len(self._bits):
            return
        keep = first & 7
        before = self._bits[byte]
        self._bits[byte] &= (1 << keep) - 1
        self._n -= (before.bit_count() - self._bits[byte].bit_count()) + \
            sum(b.bit_count() for b in self._bits[byte + 1:])
        del self._bits[byte + 1:]

    def count(self) -> int:
        return self._n

    def any(self) -> bool:
        return any(self._bits)

    def to_hex(self) -> str:
        return self._bits.hex()

    @classmethod
    def from_hex(cls, text: str) -> DirtySet:
        return cls(bytes.fromhex(text))

    def copy(self) -> DirtySet:
        return DirtySet(bytes(self._bits))


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until all of `data` is written.  A disk that fills midway answers with a *short*
    count, not an error: ignoring it left a torn sealed slot that later failed authentication
    (the writer got EIO instead of ENOSPC).  Looping makes the next pwrite raise ENOSPC."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


_scratch = threading.local()
RUN_SEGMENTS = 16  # whole segments sealed into one buffer and written at once (1 MiB + 448)


def scratch(name: str, size: int) -> bytearray:
    """This thread's reusable buffer `name` of at least `size` bytes (its contents are
    whatever the thread last left there)."""
    buf: bytearray | None = getattr(_scratch, name, None)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        setattr(_scratch, name, buf)
    return buf


_ZEROS: dict[int, memoryview] = {}


def _zeros(size: int) -> memoryview:
    """`size` zero bytes, shared and read-only (a short slot's padding is copied from them: no
    new zero-filled bytes object per read)."""
    z = _ZEROS.get(size)
    if z is None:
        z = _ZEROS[size] = memoryview(bytes(size))
    return z


def _moved(old: str, path: str) -> bool:
    """Rename a pooled file to `path`; one that cannot be is unlinked (False)."""
    try:
        os.rename(old, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(old)
        return False
    return True


class StagingPool:
    """Emptied staging files, kept for the next new file instead of unlinked (issue 16).

    Creating a file in the staging directory costs the trio thread 60–210 µs of kernel CPU (an
    rsync of small files makes one per file); renaming an emptied one to the new file's name and
    truncating it cost ~12 (~20 with an open of it). The rename gives every version a fresh
    name, so its `file_id` (and the client mode's per-file slot key, HKDF(cache key, file_id))
    is never reused. A file is given back only where it would have been unlinked (after its
    journal row is gone), emptied first: a crash leaves at most `limit` + `closed_limit` empty
    files that no row names, which the next mount's orphan sweep removes; `clear()` (unmount)
    unlinks them. Up to `limit` are kept open; past that, up to `closed_limit` more are kept
    closed (by name only, no file descriptor held) and opened again when taken: uploads land in
    bursts of up to `upload_concurrency`, and with 64 alone 38 % of W4's files were created
    afresh (and as many unlinked). Used on the trio thread only."""

    def __init__(self, limit: int = 64, closed_limit: int = 2048):
        self.limit = limit
        self.closed_limit = closed_limit
        self._free: list[tuple[str, int]] = []  # (path, open fd) of emptied files
        self._closed: list[str] = []  # paths of emptied files kept without a descriptor

    def give(self, path: str, fd: int) -> bool:
        """Keep the file at `path` (open as `fd`) for `take`; False: the caller unlinks it.
        Kept, the pool owns `fd` (it may close it at once)."""
        if len(self._free) >= self.limit and len(self._closed) >= self.closed_limit:
            return False
        try:
            os.ftruncate(fd, 0)
        except OSError:
            return False
        if len(self._free) < self.limit:
            self._free.append((path, fd))
        else:
            os.close(fd)
            self._closed.append(path)
        return True

    def take(self, path: str) -> int | None:
        """An empty file renamed to `path`, open for reading and writing; None: none kept."""
        while self._free:
            old, fd = self._free.pop()
            if _moved(old, path):
                return fd
            os.close(fd)
        while self._closed:
            if not _moved(self._closed.pop(), path):
                continue
            try:
                return os.open(path, os.O_RDWR)  # no O_CREAT: only the file given back
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return None

    def clear(self) -> None:
        while self._free:
            path, fd = self._free.pop()
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
        while self._closed:
            with contextlib.suppress(OSError):
                os.unlink(self._closed.pop())


class StagingFile:
    def __init__(self, path: str, file_id: str, segment_size: int, cipher: SlotCipher,
                 *, create: bool = True, pool: StagingPool | None = None):
        self.path = path
        self.file_id = file_id
        self.segment_size = segment_size
        self.cipher = cipher
        self.slot = segment_size + cipher.overhead
        self._pool = pool  # a new file comes from it, and goes back to it at `remove`
        fd = pool.take(path) if pool is not None and create else None
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.fd = fd if fd is not None else os.open(path, flags, 0o600)
        self._lock = threading.Lock()
        # client mode (ObjectSlots): the slots that hold, as last written here, a whole
        # segment sealed by `_whole_of` (that slot cipher's object cipher) — see `segments_of`
        self._whole: set[int] = set()
        self._whole_of: Any = None

    def write_segment(self, index: int, plaintext: bytes | memoryview) -> None:
        """Store a whole segment (padded to segment_size with zeros).  The writes of one
        staging file are serialized by its node's lock (fs/content.py)."""
        slots = self.cipher
        short = len(plaintext) < self.segment_size
        if short and slots.overhead == 0:
            plaintext = bytes(plaintext) + bytes(self.segment_size - len(plaintext))
        if slots.overhead == 0:
            pwrite_all(self.fd, plaintext, index * self.slot)
            return
        self._whole.discard(index)  # until the write succeeded, the slot's bytes are unknown
        buf = scratch("seal", self.slot)  # sealed into this thread's buffer, then written
        n = slots.seal_short_into(self.file_id, index, plaintext, buf, self.segment_size) \
            if short else None  # a short slot: sealed from the bytes given, never padded
        if n is None:
            if short:
                plaintext = bytes(plaintext) + bytes(self.segment_size - len(plaintext))
            n = slots.seal_into(self.file_id, index, plaintext, buf)
        pwrite_all(self.fd, memoryview(buf)[:n], index * self.slot)
        if n == self.slot and slots.whole_slots_are_segments:
            self._mark_whole(slots, (index,))

    def write_segments(self, first: int, data: bytes | memoryview) -> None:
        """Store len(data) // segment_size whole segments from `first` on (`data` holds
        exactly that many): sealed side by side into this thread's buffer and written with one
        pwrite per RUN_SEGMENTS of them, not one per segment (a 1 MiB FUSE write in client
        mode was 16 pwrites of 64 KiB + 28).  A short slot's unused rest of its place is
        written as zeros (only its first n + 32 bytes are ever read)."""
        S, slot, slots = self.segment_size, self.slot, self.cipher
        count = len(data) // S
        view = memoryview(data)
        if slots.overhead == 0 or count == 1:
            for j in range(count):
                self.write_segment(first + j, view[j * S:(j + 1) * S])
            return
        buf = memoryview(scratch("seal-run", min(count, RUN_SEGMENTS) * slot))
        for lo in range(0, count, RUN_SEGMENTS):
            hi = min(count, lo + RUN_SEGMENTS)
            for j in range(lo, hi):  # until the write succeeded, these slots are unknown
                self._whole.discard(first + j)
            whole = []
            for j in range(lo, hi):
                at = (j - lo) * slot
                n = slots.seal_into(self.file_id, first + j, view[j * S:(j + 1) * S],
                                    buf[at:at + slot])
                if n < slot:
                    buf[at + n:at + slot] = bytes(slot - n)
                elif slots.whole_slots_are_segments:
                    whole.append(first + j)
            pwrite_all(self.fd, buf[:(hi - lo) * slot], (first + lo) * slot)
            if whole:
                self._mark_whole(slots, whole)

    def _mark_whole(self, slots: Any, indices: Iterable[int]) -> None:
        """Slots just written whole by `slots` (an ObjectSlots): see `segments_of`."""
        if self._whole_of is not slots:  # a new version's slot cipher: start over
            self._whole, self._whole_of = set(), slots
        self._whole.update(indices)

    def segments_of(self, cipher: Any, first: int, stop: int) -> bool:
        """Whether slots [first, stop) are, as they are on disk, the object bytes `cipher`
        seals for those segments (none of them the object's last): each was last written here
        as a whole slot by an ObjectSlots of `cipher` (so its bytes are that segment sealed
        with last = 0, not a short slot under the slot key).  Known from the writes, without
        reading the slots: an upload may then send the range of the file as it is
        (fs/uploader.staged_range).  A slot written by an earlier open of this file (replay)
        is not known: False."""
        slots = self._whole_of
        if slots is None or slots is not self.cipher or \
                getattr(slots, "cipher", None) is not cipher:
            return False
        whole = self._whole
        return all(i in whole for i in range(first, stop))

    def write_plain_span(self, offset: int, data: bytes | memoryview) -> None:
        """Fast path for identity slots: the staging file is the plaintext itself."""
        assert self.cipher.overhead == 0
        pwrite_all(self.fd, data, offset)

    def read_segment_into(self, index: int, out: bytearray) -> memoryview:
        """`read_segment` into `out` (at least segment_size bytes): a view of its first
        segment_size bytes. For uploads: no new buffer per segment read and opened."""
        dst = memoryview(out)[:self.segment_size]
        if self.cipher.overhead == 0:
            n = os.preadv(self.fd, [dst], index * self.slot)
        else:
            raw = memoryview(scratch("open", self.slot))[:self.slot]
            got = os.preadv(self.fd, [raw], index * self.slot)
            if got < self.cipher.overhead:
                raise OSError(f"staging file {self.path} is short at segment {index}")
            n = self.cipher.open_into(self.file_id, index, raw[:got], dst)
        if n < self.segment_size:  # a short read (past the end) or a short sealed slot
            dst[n:] = _zeros(self.segment_size)[:self.segment_size - n]
        return dst

    def read_sealed_into(self, index: int, out: memoryview, cipher: Any) -> bool:
        """Read slot `index` into `out` (one slot long) when its bytes are, as they are, the
        object bytes `cipher` seals for that segment (not the last; client mode's ObjectSlots):
        True. False: `out` holds nothing to use (open the slot and seal the segment instead)."""
        if not self.cipher.whole_slots_are_segments:
            return False
        return os.preadv(self.fd, [out], index * self.slot) == self.slot == len(out) and \
            self.cipher.copies_as(cipher, out)

    def read_segment(self, index: int) -> bytes:
        data = os.pread(self.fd, self.slot, index * self.slot)
        if self.cipher.overhead == 0:
            if len(data) < self.segment_size:
                data += bytes(self.segment_size - len(data))
            return data
        if len(data) < self.cipher.overhead:  # a short sealed slot: the cipher knows its length
            raise OSError(f"staging file {self.path} is short at segment {index}")
        plain = self.cipher.open(self.file_id, index, data)
        if len(plain) < self.segment_size:  # sealed without its trailing zeros
            plain += bytes(self.segment_size - len(plain))
        return plain

    def truncate_segments(self, count: int) -> None:
        self._whole = {i for i in self._whole if i < count}
        os.ftruncate(self.fd, count * self.slot)

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = -1

    def remove(self) -> None:
        """Unlink the file (or give it, emptied, back to its pool); the object is done with."""
        if self._pool is not None and self.fd >= 0 and self._pool.give(self.path, self.fd):
            self.fd = -1
            return
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
