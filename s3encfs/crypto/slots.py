"""Local staging slots of client mode (docs/FORMAT.md, "Local staging slots").

`StagingSlots` seals a staging file's slots under a per-file subkey of the cache key.
`ObjectSlots` (one per file version) seals a whole slot as the object's own segment instead, so
the upload sends it as it is (see its docstring).
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3encfs.codec import IntegrityError
from s3encfs.lru import LruDict

from . import envelope as env

_SLOT_INFO = b"s3encfs/v1/slot"
_SLOT_AAD = struct.Struct(">Q")
_SHORT_AAD = b"s3encfs/v2/slot-short\x00"
_SLOT_LEN = struct.Struct(">I")
SHORT_OVERHEAD = _SLOT_LEN.size + env.SEGMENT_OVERHEAD  # 32
_ZEROS = {n: bytes(n) for n in (4096, 256)}
SUBKEYS_KEPT = 4096  # per-file slot subkeys remembered: more than the pending-file limit


def meaningful_len(data: bytes | bytearray | memoryview) -> int:
    """len(data.rstrip(b"\0")) without scanning zeros byte by byte (5 us, not 77, for 63 KiB
    of them): whole zero blocks compared from the end, then one short rstrip."""
    end = len(data)
    copy = isinstance(data, memoryview)  # compared with bytes item by item: 133 us, not 9
    if copy and isinstance(data, memoryview) and isinstance(data.obj, bytes | bytearray) \
            and data.nbytes == len(data.obj):
        data, copy = data.obj, False  # a view of a whole buffer: that buffer
    for n, zeros in _ZEROS.items():
        while end >= n and (bytes(data[end - n:end]) if copy else data[end - n:end]) == zeros:
            end -= n
    lo = max(0, end - 256)
    return lo + len(bytes(data[lo:end]).rstrip(b"\0"))


class StagingSlots:
    """SlotCipher: AES-256-GCM under a per-file subkey, one random nonce per seal.

    A slot holds one segment, as `nonce || AES-GCM(plain, aad=be64(index))` (S + 28 bytes), or,
    when the segment ends in zeros (a small file's only segment), just its meaningful bytes:
    `be32(n) || nonce || AES-GCM(plain[:n], aad=label || be64(index) || be32(n))` (n + 32
    bytes; `open` returns the n bytes, `StagingFile` pads them). A 1 KB file then seals, writes
    and reads 1 KB of staging, not 64 KiB. Slots of either form open; both bind index and length
    (slots written before this form are whole slots).

    The per-file subkey (HKDF(cache key, file_id)) bounds how many random nonces one key sees
    to the writes of one staging file, however long the cache key lives."""

    overhead = env.SEGMENT_OVERHEAD

    def __init__(self, cache_key: bytes, max_cached: int = 256,
                 max_keys: int = SUBKEYS_KEPT) -> None:
        self._key = cache_key
        self._aeads: LruDict[str, AESGCM] = LruDict(max_cached)
        # and the subkeys themselves, many more of them (32 bytes each, where an AES context
        # is ~2.7 KB): a first backup's file is sealed at its write and opened at its upload
        # seconds and hundreds of files later, and each such reopening paid a second HKDF
        self._subkeys: LruDict[str, bytes] = LruDict(max_keys)
        self._lock = threading.Lock()  # seal/open run in worker threads

    def _aead(self, file_id: str) -> AESGCM:
        with self._lock:
            aead = self._aeads.get(file_id)
            if aead is not None:
                return aead
            key = self._subkeys.get(file_id)
        if key is None:
            key = env.hkdf(self._key, _SLOT_INFO + b"\x00" +
                           file_id.encode("utf-8", "surrogateescape"))
        aead = AESGCM(key)
        with self._lock:
            self._aeads[file_id] = aead
            self._subkeys[file_id] = key
        return aead

    def seal(self, file_id: str, index: int, plaintext: bytes) -> bytes:
        out = bytearray(len(plaintext) + self.overhead)
        return bytes(memoryview(out)[:self.seal_into(file_id, index, plaintext, out)])

    def seal_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                  out: bytearray | memoryview, meaningful: int | None = None) -> int:
        """`seal` into `out` (at least len(plaintext) + overhead bytes); the sealed length. No
        new buffer per slot: a 64 KiB seal's fresh ciphertext and its nonce prefix were two
        allocations and a copy on top of the AES-GCM pass (W1 seals 16,384 of them per GiB).
        `meaningful`: `meaningful_len(plaintext)` when the caller has it."""
        n = meaningful_len(plaintext) if meaningful is None else meaningful
        if n + SHORT_OVERHEAD <= len(plaintext) + self.overhead:
            return self._seal_short(file_id, index, memoryview(plaintext)[:n], out)
        nonce = env.random_bytes(env.NONCE)
        view = memoryview(out)
        end = len(plaintext) + self.overhead
        view[:env.NONCE] = nonce
        self._aead(file_id).encrypt_into(nonce, plaintext, _SLOT_AAD.pack(index),
                                         view[env.NONCE:end])
        return end

    def seal_short_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                        out: bytearray | memoryview, segment_size: int) -> int | None:
        """`seal_into` of `plaintext` padded with zeros to `segment_size`, when that is a
        short slot (the same bytes, but no padded copy and no scan of its zeros: a small
        file's one write in client mode built and scanned a 64 KiB segment, ~18 us)."""
        n = meaningful_len(plaintext)
        if n + SHORT_OVERHEAD > segment_size + self.overhead:
            return None
        return self._seal_short(file_id, index, memoryview(plaintext)[:n], out)

    def _seal_short(self, file_id: str, index: int, meaningful: memoryview,
                    out: bytearray | memoryview) -> int:
        """The short form of a segment whose bytes after `meaningful` are zeros."""
        nonce = env.random_bytes(env.NONCE)
        n = len(meaningful)
        head = _SLOT_LEN.pack(n)
        view = memoryview(out)
        view[:4], view[4:SHORT_OVERHEAD - env.TAG] = head, nonce
        self._aead(file_id).encrypt_into(nonce, meaningful,
                                         _SHORT_AAD + _SLOT_AAD.pack(index) + head,
                                         view[SHORT_OVERHEAD - env.TAG:SHORT_OVERHEAD + n])
        return SHORT_OVERHEAD + n

    def open(self, file_id: str, index: int, data: bytes | memoryview) -> bytes:
        view = memoryview(data)
        out = bytearray(max(0, len(view) - self.overhead))
        return bytes(memoryview(out)[:self.open_into(file_id, index, view, out)])

    def open_into(self, file_id: str, index: int, data: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        """`open` into `out` (at least len(data) - overhead bytes); the plaintext's length
        (without the trailing zeros of a short slot: StagingFile adds them). On IntegrityError
        `out` holds nothing to use."""
        n = self.open_short(file_id, index, data, out)
        return n if n is not None else self.open_whole(file_id, index, data, out)

    def open_short(self, file_id: str, index: int, data: bytes | memoryview,
                   out: bytearray | memoryview) -> int | None:
        """A short slot's plaintext length (opened into `out`); None: not a short slot."""
        view = memoryview(data)
        if len(view) < SHORT_OVERHEAD or not may_be_short(view):
            return None
        n = _SLOT_LEN.unpack_from(view)[0]
        head = bytes(view[:_SLOT_LEN.size])
        try:
            self._aead(file_id).decrypt_into(
                view[4:4 + env.NONCE], view[4 + env.NONCE:SHORT_OVERHEAD + n],
                _SHORT_AAD + _SLOT_AAD.pack(index) + head, memoryview(out)[:n])
        except InvalidTag:
            return None  # a whole slot whose nonce happens to read as a length
        return int(n)

    def open_whole(self, file_id: str, index: int, data: bytes | memoryview,
                   out: bytearray | memoryview) -> int:
        view = memoryview(data)
        if len(view) < self.overhead:
            raise IntegrityError(f"staging slot {index} of {file_id} truncated")
        n = len(view) - self.overhead
        try:
            self._aead(file_id).decrypt_into(view[: env.NONCE], view[env.NONCE :],
                                             _SLOT_AAD.pack(index), memoryview(out)[:n])
        except InvalidTag:
            raise IntegrityError(
                f"staging slot {index} of {file_id} failed authentication"
            ) from None
        return n

    whole_slots_are_segments = False

    def for_content(self, cipher: Any, previous: Any = None) -> StagingSlots | ObjectSlots:
        """The slot cipher of a file version whose object `cipher` seals: ObjectSlots for a
        client-format cipher, else these slots."""
        if not isinstance(cipher, env.SegmentCipher):
            return self
        return ObjectSlots(self, cipher, previous.cipher if isinstance(previous, ObjectSlots)
                           else None)

    def copies_as(self, cipher: Any, data: memoryview) -> bool:
        return False


def may_be_short(view: memoryview) -> bool:
    """Whether slot bytes may be a short slot (its length field fits): a whole slot starts with
    a random nonce, whose first 4 bytes read as a length that fits once in ~65,000 slots."""
    return SHORT_OVERHEAD + int(_SLOT_LEN.unpack_from(view)[0]) <= len(view)


class ObjectSlots:
    """The slot cipher of one file version's staging file in client mode: a whole slot is the
    object's own segment, `nonce || AES-GCM(content key, plain, aad = (version, oid, index,
    last = 0))` — exactly what the object will hold for a segment that is not its last — so the
    upload sends it as it is, where it opened the slot and sealed the segment again (two of the
    three AES-GCM passes per byte client mode paid on a big write). The data key is the
    version's own (fresh per version) and stays with the journal row (`cipher_meta`, the row
    says `object_slots`), so replay opens these slots; nonces are random per seal as before.

    A segment that ends in zeros still takes StagingSlots' short form under the per-file slot
    key (a small file's 1 KB, not 64 KiB). Opening: short form, then the object's key, then
    the key of the version before (`previous`: a read in flight when an upload landed and an
    open file moved on to a new data key), then the slot key (a whole slot sealed before)."""

    overhead = env.SEGMENT_OVERHEAD
    whole_slots_are_segments = True

    def __init__(self, slots: StagingSlots, cipher: env.SegmentCipher,
                 previous: env.SegmentCipher | None = None) -> None:
        self.slots, self.cipher, self.previous = slots, cipher, previous

    def seal(self, file_id: str, index: int, plaintext: bytes) -> bytes:
        out = bytearray(len(plaintext) + self.overhead)
        return bytes(memoryview(out)[:self.seal_into(file_id, index, plaintext, out)])

    def seal_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        n = meaningful_len(plaintext)
        if len(plaintext) != self.cipher.segment_size or \
                n + SHORT_OVERHEAD <= len(plaintext) + self.overhead:
            return self.slots.seal_into(file_id, index, plaintext, out, n)
        return self.cipher.encrypt_segment_into(index, plaintext, False, memoryview(out))

    def seal_short_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                        out: bytearray | memoryview, segment_size: int) -> int | None:
        """A segment ending in zeros takes the slot key's short form here too (`seal_into`)."""
        return self.slots.seal_short_into(file_id, index, plaintext, out, segment_size)

    def open(self, file_id: str, index: int, data: bytes | memoryview) -> bytes:
        out = bytearray(max(0, len(data) - self.overhead))
        return bytes(memoryview(out)[:self.open_into(file_id, index, data, out)])

    def open_into(self, file_id: str, index: int, data: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        n = self.slots.open_short(file_id, index, data, out)
        if n is not None:
            return n
        if len(data) == self.cipher.segment_size + self.overhead:
            for cipher in (self.cipher, self.previous):
                if cipher is not None:
                    try:
                        return cipher.decrypt_segment_into(index, data, False, memoryview(out))
                    except IntegrityError:
                        pass
        return self.slots.open_whole(file_id, index, data, out)

    def for_content(self, cipher: Any, previous: Any = None) -> StagingSlots | ObjectSlots:
        return self.slots.for_content(cipher, previous)

    def copies_as(self, cipher: Any, data: memoryview) -> bool:
        """Whether slot bytes `data` are, as they are, segment bytes `cipher` would seal (not
        the last segment): a whole slot of this version's key. Unauthenticated: a damaged slot
        goes up damaged and fails authentication where it is read (never as other bytes)."""
        return cipher is self.cipher and len(data) == self.cipher.segment_size + self.overhead \
            and not may_be_short(data)
