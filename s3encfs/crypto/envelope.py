"""Client-side object formats v1 and v2: wrapped data keys, sealed segments, sealed attrs, blobs.

v2 (written by default) adds key commitment, the object id in the HKDF ``info`` with a constant
salt, and sealed attributes bound to the object's path; v1 objects stay readable.

See docs/FORMAT.md for the byte layout and the rationale.  Everything here is pure (no I/O);
randomness comes from `random_bytes` so the test-vector generator can make it deterministic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from s3encfs.codec import IntegrityError

FORMAT_VERSION = 2  # what new objects get
READ_VERSIONS = (1, 2)
BLOB_VERSION = 1  # the blob format did not change in object format v2
NONCE = 12
TAG = 16
SEGMENT_OVERHEAD = NONCE + TAG  # 28
KEY_LEN = 32
OID_LEN = 16

META_VERSION = "s3encfs-v"
META_KEY_ID = "s3encfs-kid"
META_OID = "s3encfs-oid"
META_WRAPPED = "s3encfs-key"
META_ATTRS = "s3encfs-attrs"
META_COMMIT = "s3encfs-kc"  # v2: key commitment of the data key
KEY_META = (META_VERSION, META_KEY_ID, META_OID, META_WRAPPED, META_COMMIT)

# S3 allows 2 KB of user metadata (names + values); leave room for the key entries (~190 B).
MAX_ATTRS_VALUE = 1800

KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_WRAP_INFO = b"s3encfs/v1/wrap"
_ATTRS_AAD = b"s3encfs/v1/attrs\x00"
_SEG_AAD = struct.Struct(">B16sQ?")  # version, object id, segment index, last flag
# v2 key schedule: a constant salt, the diversifier (purpose + object id) in `info`
V2_SALT = hashlib.sha256(b"s3encfs/v2/salt").digest()
_V2_WRAP = b"s3encfs/v2/wrap\x00"
_V2_CONTENT = b"s3encfs/v2/content\x00"
_V2_ATTRS_KEY = b"s3encfs/v2/attrs-key\x00"
_V2_COMMIT = b"s3encfs/v2/commit\x00"
_V2_ATTRS_AAD = b"s3encfs/v2/attrs\x00"
COMMIT_LEN = 32

random_bytes: Callable[[int], bytes] = os.urandom


class MissingMasterKey(IntegrityError):
    """The object names a master key id that is not loaded."""

    def __init__(self, key_id: str, available: list[str]) -> None:
        have = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"object was encrypted with master key {key_id!r}, which is not loaded "
            f"(loaded: {have}); add it to the keyring to read this object"
        )
        self.key_id = key_id


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str, what: str) -> bytes:
    try:
        raw = text.encode("ascii")
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise IntegrityError(f"metadata {what} is not valid base64url") from e


def check_key_id(key_id: str) -> str:
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(
            f"master key id {key_id!r} must be 1-64 chars of [A-Za-z0-9._:-] "
            "(it is stored in S3 metadata)"
        )
    return key_id


_SHA256 = hashes.SHA256()  # stateless: one instance for every derivation


def hkdf(master: bytes, info: bytes, salt: bytes | None = None, length: int = KEY_LEN) -> bytes:
    return HKDF(algorithm=_SHA256, length=length, salt=salt, info=info).derive(master)


class MasterKeys:
    """The loaded master keys by id; `current` seals new data."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        for kid, key in keys.items():
            check_key_id(kid)
            if len(key) != KEY_LEN:
                raise ValueError(f"master key {kid!r} must be {KEY_LEN} bytes, got {len(key)}")
        if current not in keys:
            raise ValueError(f"current master key {current!r} is not among the loaded keys")
        self._keys = dict(keys)
        self.current = current

    def get(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise MissingMasterKey(key_id, list(self._keys)) from None

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def ids(self) -> list[str]:
        return list(self._keys)


# ---------------------------------------------------------------- data keys in metadata


def _wrap_aad(key_id: str) -> bytes:
    return _WRAP_INFO + b"\x00" + key_id.encode("ascii")


def _wrap_key(version: int, master: bytes, oid: bytes) -> bytes:
    if version == 1:
        return hkdf(master, _WRAP_INFO, salt=oid)
    return hkdf(master, _V2_WRAP + oid, salt=V2_SALT)


def _wrap_aad_for(version: int, key_id: str, oid: bytes) -> bytes:
    if version == 1:
        return _wrap_aad(key_id)
    return _V2_WRAP + key_id.encode("ascii") + b"\x00" + oid


def commitment(data_key: bytes, oid: bytes) -> bytes:
    """v2 key commitment: a value derived from the data key, checked before any decryption, so
    one ciphertext cannot open under two data keys (AES-GCM alone is not key-committing)."""
    return hkdf(data_key, _V2_COMMIT + oid, salt=V2_SALT, length=COMMIT_LEN)


def wrap_data_key(keys: MasterKeys, key_id: str, oid: bytes, data_key: bytes,
                  version: int = FORMAT_VERSION) -> dict[str, str]:
    """Metadata entries holding `data_key` wrapped under master `key_id` for object `oid`."""
    if version not in READ_VERSIONS:
        raise ValueError(f"unknown format version {version}")
    wrap_key = _wrap_key(version, keys.get(key_id), oid)
    nonce = random_bytes(NONCE)
    wrapped = nonce + AESGCM(wrap_key).encrypt(nonce, data_key, _wrap_aad_for(version, key_id, oid))
    meta = {
        META_VERSION: str(version),
        META_KEY_ID: key_id,
        META_OID: b64e(oid),
        META_WRAPPED: b64e(wrapped),
    }
    if version >= 2:
        meta[META_COMMIT] = b64e(commitment(data_key, oid))
    return meta


def version_of(metadata: Mapping[str, str]) -> int:
    """The object's format version (IntegrityError if not ours or unknown)."""
    version = metadata.get(META_VERSION)
    if version is None or META_KEY_ID not in metadata:
        raise IntegrityError("object has no s3encfs key metadata (not written by the client codec)")
    if version not in ("1", "2"):
        raise IntegrityError(f"unsupported s3encfs format version {version!r}")
    return int(version)


def key_id_of(metadata: Mapping[str, str]) -> str:
    """The master key id an object's metadata names (IntegrityError if missing/unknown format)."""
    version_of(metadata)
    return metadata[META_KEY_ID]


def unwrap_data_key(keys: MasterKeys, metadata: Mapping[str, str]) -> tuple[bytes, bytes]:
    """Return (object id, data key) from an object's metadata; v2: the key commitment checked."""
    version = version_of(metadata)
    key_id = metadata[META_KEY_ID]
    master = keys.get(key_id)
    oid = b64d(metadata.get(META_OID, ""), META_OID)
    wrapped = b64d(metadata.get(META_WRAPPED, ""), META_WRAPPED)
    if len(oid) != OID_LEN or len(wrapped) != NONCE + KEY_LEN + TAG:
        raise IntegrityError("object key metadata has the wrong length (truncated or tampered)")
    wrap_key = _wrap_key(version, master, oid)
    try:
        data_key = AESGCM(wrap_key).decrypt(wrapped[:NONCE], wrapped[NONCE:],
                                             _wrap_aad_for(version, key_id, oid))
    except InvalidTag:
        raise IntegrityError(
            f"cannot unwrap the object's data key with master key {key_id!r}: "
            "wrong key material for that id, or tampered metadata"
        ) from None
    if version >= 2:
        stored = b64d(metadata.get(META_COMMIT, ""), META_COMMIT)
        if not hmac.compare_digest(stored, commitment(data_key, oid)):
            raise IntegrityError("the object's key commitment does not match its data key")
    return oid, data_key


# ---------------------------------------------------------------- segments


class SegmentCipher:
    """ObjectCipher for one object: AES-256-GCM per segment, random nonce, AAD = (oid, i, last).

    v1 seals segments and attrs with the data key itself; v2 with a content key and an attrs key
    derived from it (HKDF, constant salt, info = purpose || oid)."""

    __slots__ = ("__weakref__", "_aead", "_attrs_aead", "oid", "segment_size", "version")

    def __init__(self, oid: bytes, data_key: bytes, segment_size: int,
                 version: int = FORMAT_VERSION) -> None:
        self.oid = oid
        self.segment_size = segment_size
        self.version = version
        if version == 1:
            self._aead = self._attrs_aead = AESGCM(data_key)
        else:
            self._aead = AESGCM(hkdf(data_key, _V2_CONTENT + oid, salt=V2_SALT))
            self._attrs_aead = AESGCM(hkdf(data_key, _V2_ATTRS_KEY + oid, salt=V2_SALT))

    def _aad(self, index: int, last: bool) -> bytes:
        return _SEG_AAD.pack(self.version, self.oid, index, last)

    def _check(self, index: int, n: int, last: bool) -> None:
        if n > self.segment_size or (not last and n != self.segment_size):
            raise ValueError(
                f"segment {index}: {n} bytes (segment size {self.segment_size}, last={last})"
            )
        if n == 0 and index:
            raise ValueError("only segment 0 may be empty")

    def encrypt_segment(self, index: int, plaintext: bytes, last: bool) -> bytes:
        self._check(index, len(plaintext), last)
        nonce = random_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad(index, last))

    def encrypt_segment_into(self, index: int, plaintext: bytes | memoryview, last: bool,
                             out: memoryview) -> int:
        """`encrypt_segment` written at the start of `out`; its length (len + 28). An upload
        part is sealed into one buffer this way, not as a new bytes per segment joined."""
        n = len(plaintext)
        self._check(index, n, last)
        nonce = random_bytes(NONCE)
        out[:NONCE] = nonce
        self._aead.encrypt_into(nonce, plaintext, self._aad(index, last),
                                out[NONCE:NONCE + n + TAG])
        return n + SEGMENT_OVERHEAD

    def decrypt_segment(self, index: int, data: bytes | memoryview, last: bool) -> bytes:
        view = self._sealed(index, data, last)
        try:
            return self._aead.decrypt(view[:NONCE], view[NONCE:], self._aad(index, last))
        except InvalidTag:
            raise self._failed(index, last) from None

    def decrypt_segment_into(self, index: int, data: bytes | memoryview, last: bool,
                             out: memoryview) -> int:
        """`decrypt_segment`'s plaintext at the start of `out`; its length (on IntegrityError
        `out` holds nothing to use)."""
        view = self._sealed(index, data, last)
        n = len(view) - SEGMENT_OVERHEAD
        try:
            self._aead.decrypt_into(view[:NONCE], view[NONCE:], self._aad(index, last), out[:n])
        except InvalidTag:
            raise self._failed(index, last) from None
        return n

    def _sealed(self, index: int, data: bytes | memoryview, last: bool) -> memoryview:
        n, full = len(data), self.segment_size + SEGMENT_OVERHEAD
        if n < SEGMENT_OVERHEAD or n > full or (not last and n != full):
            raise IntegrityError(f"segment {index} has invalid length {n} (truncated?)")
        return memoryview(data)

    @staticmethod
    def _failed(index: int, last: bool) -> IntegrityError:
        return IntegrityError(f"segment {index} (last={last}) failed authentication: tampered, "
                              "truncated, reordered or from another object")


def encrypt_object(cipher: SegmentCipher, plaintext: bytes) -> bytes:
    """Whole-object helper (tests, small objects): plaintext -> object body."""
    s = cipher.segment_size
    count = max(1, -(-len(plaintext) // s))
    view = memoryview(plaintext)
    return b"".join(
        cipher.encrypt_segment(i, bytes(view[i * s : (i + 1) * s]), i == count - 1)
        for i in range(count)
    )


def decrypt_object(cipher: SegmentCipher, body: bytes) -> bytes:
    """Whole-object helper: object body -> plaintext (IntegrityError on any damage)."""
    stride = cipher.segment_size + SEGMENT_OVERHEAD
    if not body:
        raise IntegrityError("empty object body (truncated)")
    count = -(-len(body) // stride)
    view = memoryview(body)
    return b"".join(
        cipher.decrypt_segment(i, view[i * stride : (i + 1) * stride], i == count - 1)
        for i in range(count)
    )


# ---------------------------------------------------------------- attrs


def _attrs_aad(cipher: SegmentCipher, path: str) -> bytes:
    if cipher.version == 1:
        return _ATTRS_AAD + cipher.oid
    return _V2_ATTRS_AAD + cipher.oid + b"\x00" + path.encode("utf-8", "surrogateescape")


def seal_attrs(cipher: SegmentCipher, attrs: Mapping[str, str], path: str = "") -> str:
    """v2: bound to `path`, the object's key relative to the mount prefix (v1: not bound)."""
    for k, v in attrs.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("attrs must map str to str")
    plain = json.dumps(dict(attrs), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    nonce = random_bytes(NONCE)
    sealed = nonce + cipher._attrs_aead.encrypt(nonce, plain.encode("utf-8"),
                                                _attrs_aad(cipher, path))
    value = b64e(sealed)
    if len(value) > MAX_ATTRS_VALUE:
        raise ValueError(
            f"sealed attributes need {len(value)} bytes of S3 metadata (limit {MAX_ATTRS_VALUE}); "
            "too many or too large extended attributes"
        )
    return value


def open_attrs(cipher: SegmentCipher, value: str, path: str = "") -> dict[str, str]:
    sealed = b64d(value, META_ATTRS)
    if len(sealed) < SEGMENT_OVERHEAD:
        raise IntegrityError("sealed attrs too short")
    try:
        plain = cipher._attrs_aead.decrypt(sealed[:NONCE], sealed[NONCE:],
                                           _attrs_aad(cipher, path))
    except InvalidTag:
        raise IntegrityError(
            "object attributes failed authentication (tampered, from another object, or the "
            "object was moved or copied here from another name)"
        ) from None
    attrs = json.loads(plain.decode("utf-8"))
    if not isinstance(attrs, dict):
        raise IntegrityError("sealed attrs are not a mapping")
    return {str(k): str(v) for k, v in attrs.items()}


# blobs (`seal_blob`, `open_blob`, `blob_key_id`): crypto/blobs.py
