"""The codec hook: every object byte and every object name passes through a `Codec`.

An object body is a sequence of *segments*.  Segment ``i`` holds plaintext bytes
``[i*S, (i+1)*S)`` and occupies object bytes ``[i*(S+O), i*(S+O) + len_i + O)`` where ``S`` is
``segment_size`` and ``O`` the fixed per-segment ``overhead`` (0 for the identity codec, nonce +
tag for an AEAD).  Fixed overhead means the plaintext size follows from the object size alone
(no HEAD needed) and cache blocks / multipart parts made of whole segments stay aligned.

An encrypting codec stores at least one segment (an empty file is one empty segment) so that
truncation to zero is detectable; the identity codec stores nothing for an empty file.

Staging files in the cache directory use fixed *slots* of ``segment_size + slot_overhead`` bytes
sealed by a `SlotCipher`; a codec that must not leave plaintext at rest returns a real cipher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class IntegrityError(Exception):
    """Object bytes or metadata failed authentication (tampered, truncated, wrong key)."""


class LogSafe(str):
    """Text s3encfs wrote itself (e.g. why an object failed authentication), never a file name:
    the client-mode log filter (lognames.py), which hashes string arguments it cannot tell from
    names, leaves it readable."""


class NameTooLong(Exception):
    """An encoded name or key would exceed S3's limits (maps to ENAMETOOLONG)."""


class UndecodableName(Exception):
    """An object name in the bucket cannot be decoded by this codec (written by someone else)."""


@dataclass(frozen=True)
class SegmentGeometry:
    """Segment arithmetic inside one object body: plaintext segments of `segment_size`, each
    stored with `overhead` bytes (nonce + tag), so sizes and offsets map between plaintext and
    object.  (Where objects live in the bucket — keys, metadata — is store/layout.py's
    `Layout`.)"""

    segment_size: int
    overhead: int
    min_segments: int  # 1 for encrypting codecs (empty file = one empty segment), 0 for identity

    @property
    def stride(self) -> int:
        return self.segment_size + self.overhead

    def segment_count(self, plain_size: int) -> int:
        n = -(-plain_size // self.segment_size)
        return max(self.min_segments, n)

    def object_size(self, plain_size: int) -> int:
        return plain_size + self.segment_count(plain_size) * self.overhead

    def plain_size(self, object_size: int) -> int:
        """Inverse of `object_size`; raises IntegrityError for a size no valid object has."""
        if object_size == 0:
            if self.min_segments:
                raise IntegrityError("empty object body (truncated)")
            return 0
        full, rem = divmod(object_size, self.stride)
        if rem == 0:
            return full * self.segment_size
        if rem <= self.overhead and self.overhead:
            if rem == self.overhead and full == 0:
                return 0
            raise IntegrityError(f"object size {object_size} is not a valid encrypted size")
        return full * self.segment_size + rem - self.overhead

    def segment_plain_len(self, index: int, plain_size: int) -> int:
        return max(0, min(self.segment_size, plain_size - index * self.segment_size))

    def segment_object_range(self, index: int, plain_size: int) -> tuple[int, int]:
        start = index * self.stride
        return start, start + self.segment_plain_len(index, plain_size) + self.overhead


class ObjectCipher(Protocol):
    """Seals the segments of one object (one data key, one object id)."""

    def encrypt_segment(self, index: int, plaintext: bytes, last: bool) -> bytes: ...

    def encrypt_segment_into(self, index: int, plaintext: bytes | memoryview, last: bool,
                             out: memoryview) -> int:
        """`encrypt_segment`'s bytes written at the start of `out`; how many."""
        ...

    def decrypt_segment(self, index: int, data: bytes | memoryview, last: bool) -> bytes:
        """Raises IntegrityError on any mismatch (wrong object, index, last flag, key, bit flip).
        `data` may be a view into a cached block (client-mode reads do not copy it first)."""
        ...


class SlotCipher(Protocol):
    """Seals the slots of a local staging file: at most `overhead` bytes more than a segment."""

    overhead: int

    def seal(self, file_id: str, index: int, plaintext: bytes) -> bytes: ...

    def seal_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        """`seal`'s bytes written at the start of `out`; how many."""
        ...

    def seal_short_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                        out: bytearray | memoryview, segment_size: int) -> int | None:
        """The slot of a segment that is `plaintext` followed by zeros up to `segment_size`,
        sealed into `out` as `seal_into` seals the padded segment, without padding it first
        (a small file's write); the sealed length, or None when that slot is not the short
        form (the caller pads the segment and calls `seal_into`)."""
        ...

    def open(self, file_id: str, index: int, data: bytes) -> bytes: ...

    def open_into(self, file_id: str, index: int, data: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        """`open`'s plaintext written at the start of `out`; how many bytes."""
        ...

    # a whole slot holds the bytes the object's cipher seals for that segment (the journal
    # row of such a staging file says so: replay must open it with the row's data key)
    whole_slots_are_segments: bool

    def for_content(self, cipher: Any, previous: Any = None) -> SlotCipher:
        """The slot cipher for a file version whose object `cipher` seals (`previous`: the
        slot cipher its staging file had before)."""
        ...

    def copies_as(self, cipher: Any, data: memoryview) -> bool:
        """Whether the slot bytes `data` go into the object as they are (a segment that is not
        the last, sealed by `cipher`)."""
        ...


class Codec(Protocol):
    name: str
    geometry: SegmentGeometry
    encrypts_names: bool
    # sealed attributes are authenticated: missing or failing ones make an object unreadable,
    # and unauthenticated directory attributes fall back to 0700, never to a wider default
    authenticates_attrs: bool
    # every content upload gets a fresh cipher (new_object) and re-seals all segments, so the
    # uploader never reuses the base object's bytes (no part copies)
    fresh_key_per_version: bool

    def new_object(self) -> tuple[ObjectCipher, dict[str, str]]:
        """A fresh data key. Returns the cipher and the metadata (``x-amz-meta-`` names, no
        prefix, lowercase) that must be stored with the object so `open_object` can rebuild it."""
        ...

    def open_object(self, metadata: dict[str, str]) -> ObjectCipher:
        """Rebuild the cipher of an existing object; IntegrityError if metadata is bad/foreign."""
        ...

    def seal_attrs(self, metadata: dict[str, str], attrs: dict[str, str],
                   path: str = "") -> dict[str, str]:
        """Return the metadata entries that carry (and authenticate) POSIX `attrs`.
        `metadata` is the object's key metadata from `new_object`/the existing object; `path`
        the object's key relative to the mount prefix, which a sealing codec binds."""
        ...

    def open_attrs(self, metadata: dict[str, str], path: str = "") -> dict[str, str]:
        """Inverse of `seal_attrs`; IntegrityError when tampered, missing or for another path."""
        ...

    def seal_blob(self, purpose: str, data: bytes) -> bytes:
        """Seal a small standalone blob (directory index, canary); bound to `purpose`."""
        ...

    def open_blob(self, purpose: str, data: bytes) -> bytes: ...

    def encode_name(self, parent: str, name: str) -> str:
        """Map one path component to its S3 form. `parent` is the plaintext parent path
        ('' for the root). Raises NameTooLong."""
        ...

    def decode_name(self, parent: str, encoded: str) -> str:
        """Raises UndecodableName for names this codec did not write."""
        ...

    def encoded_len(self, name: str) -> int | None:
        """``len(encode_name(parent, name))`` when the codec can tell it without encoding (it
        then raises what `encode_name` would); None: call `encode_name`."""
        ...

    def slot_cipher(self, cache_dir: str) -> SlotCipher: ...


class IdentitySlots:
    overhead = 0

    def seal(self, file_id: str, index: int, plaintext: bytes) -> bytes:
        return plaintext

    def seal_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        n = len(plaintext)
        out[:n] = plaintext
        return n

    def seal_short_into(self, file_id: str, index: int, plaintext: bytes | memoryview,
                        out: bytearray | memoryview, segment_size: int) -> int | None:
        return None  # no short form: the staging file is the plaintext itself

    def open(self, file_id: str, index: int, data: bytes) -> bytes:
        return data

    def open_into(self, file_id: str, index: int, data: bytes | memoryview,
                  out: bytearray | memoryview) -> int:
        n = len(data)
        memoryview(out)[:n] = data
        return n

    whole_slots_are_segments = False

    def for_content(self, cipher: Any, previous: Any = None) -> SlotCipher:
        return self

    def copies_as(self, cipher: Any, data: memoryview) -> bool:
        return False


class IdentityCipher:
    def encrypt_segment(self, index: int, plaintext: bytes, last: bool) -> bytes:
        return plaintext

    def encrypt_segment_into(self, index: int, plaintext: bytes | memoryview, last: bool,
                             out: memoryview) -> int:
        n = len(plaintext)
        out[:n] = plaintext
        return n

    def decrypt_segment(self, index: int, data: bytes | memoryview, last: bool) -> bytes:
        return data if isinstance(data, bytes) else bytes(data)


ATTR_PREFIX = ""  # identity codec stores POSIX attrs as plain x-amz-meta-mode|uid|gid|mtime...


class IdentityCodec:
    """No encryption: bytes and names as they are (plain mode, or SSE-only modes)."""

    name = "none"
    encrypts_names = False
    authenticates_attrs = False
    fresh_key_per_version = False

    def __init__(self, segment_size: int = 64 * 1024):
        self.geometry = SegmentGeometry(segment_size, 0, 0)

    def new_object(self) -> tuple[ObjectCipher, dict[str, str]]:
        return IdentityCipher(), {}

    def open_object(self, metadata: dict[str, str]) -> ObjectCipher:
        return IdentityCipher()

    def seal_attrs(self, metadata: dict[str, str], attrs: dict[str, str],
                   path: str = "") -> dict[str, str]:
        return dict(attrs)

    def open_attrs(self, metadata: dict[str, str], path: str = "") -> dict[str, str]:
        return dict(metadata)

    def seal_blob(self, purpose: str, data: bytes) -> bytes:
        return data

    def open_blob(self, purpose: str, data: bytes) -> bytes:
        return data

    def encode_name(self, parent: str, name: str) -> str:
        if len(name.encode("utf-8", "surrogateescape")) > 1024:
            raise NameTooLong(name[:40])
        return name

    def decode_name(self, parent: str, encoded: str) -> str:
        return encoded

    def encoded_len(self, name: str) -> int | None:
        return None  # encode_name is the length check

    def slot_cipher(self, cache_dir: str) -> SlotCipher:
        return IdentitySlots()
