"""Filename encryption: deterministic AES-SIV per directory, base32 (lowercase, no padding).

A component ``name`` in plaintext directory ``parent`` becomes
``base32(AES-SIV(name_key, name_bytes, ad=[b"s3encfs/v1/name", parent_bytes]))`` where
``name_bytes = name.encode("utf-8", "surrogateescape")`` so any POSIX name (os.fsdecode output)
round-trips.  Deterministic: a lookup needs no LIST; the same name in different directories
encrypts differently.  The output alphabet ``[a-z2-7]`` never yields ``.``/``..`` or a leading
dot, and is safe on case-insensitive stores.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from s3encfs.codec import NameTooLong, UndecodableName

from .envelope import hkdf

NAME_INFO = b"s3encfs/v1/name"
SIV_TAG = 16
# one encoded component must fit NAME_MAX of ordinary filesystems — and of S3 servers built on
# them: SeaweedFS answers 400 KeyTooLongError for a longer component (measured)
MAX_ENCODED = 255
MAX_PLAIN = (MAX_ENCODED * 5 // 8) - SIV_TAG  # 143 bytes of UTF-8 (or raw) name
MAX_KEY_BYTES = 1024  # S3 object key limit, for identity names
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def name_bytes(name: str) -> bytes:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"invalid path component {name[:40]!r}")
    return name.encode("utf-8", "surrogateescape")


def _parent_bytes(parent: str) -> bytes:
    return parent.strip("/").encode("utf-8", "surrogateescape")


# encoded names memoized (~350 bytes each: ~5.6 MiB at most; 65,536 held ~22 MiB in client mode
# once a tree that big had been walked). Enough for the components of a few busy directories.
NAME_CACHE = 16384


class NameCipher:
    """Encrypts path components with a key derived from one master key (the naming key)."""

    encrypts_names = True

    def __init__(self, master_key: bytes) -> None:
        self._siv = AESSIV(hkdf(master_key, NAME_INFO, length=64))
        # deterministic, so memoizable: every S3 key is built from all its path components,
        # and an rsync asks for the same ones thousands of times (encode is ~50 µs of AES-SIV)
        self._encoded: dict[tuple[str, str], str] = {}

    def encode_name(self, parent: str, name: str) -> str:
        hit = self._encoded.get((parent, name))
        if hit is not None:
            return hit
        encoded = self._encode(parent, name)
        if len(self._encoded) >= NAME_CACHE:
            self._encoded.clear()
        self._encoded[(parent, name)] = encoded
        return encoded

    def _encode(self, parent: str, name: str) -> str:
        raw = name_bytes(name)
        if len(raw) > MAX_PLAIN:
            raise NameTooLong(
                f"name of {len(raw)} bytes exceeds {MAX_PLAIN} bytes when names are encrypted"
            )
        sealed = self._siv.encrypt(raw, [NAME_INFO, _parent_bytes(parent)])
        return base64.b32encode(sealed).rstrip(b"=").decode("ascii").lower()

    def decode_name(self, parent: str, encoded: str) -> str:
        if not encoded or len(encoded) > MAX_ENCODED or not _ALPHABET.issuperset(encoded):
            raise UndecodableName(encoded[:60])
        text = encoded.upper().encode("ascii")
        try:
            sealed = base64.b32decode(text + b"=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise UndecodableName(encoded[:60]) from None
        if len(sealed) <= SIV_TAG:
            raise UndecodableName(encoded[:60])
        try:
            raw = self._siv.decrypt(sealed, [NAME_INFO, _parent_bytes(parent)])
        except InvalidTag:
            raise UndecodableName(encoded[:60]) from None
        name = raw.decode("utf-8", "surrogateescape")
        if self.encode_name(parent, name) != encoded:  # non-canonical base32 trailing bits
            raise UndecodableName(encoded[:60])
        return name


class PlainNames:
    """Identity names (encrypt_names=False); still enforces S3's key length."""

    encrypts_names = False

    def encode_name(self, parent: str, name: str) -> str:
        if len(name_bytes(name)) > MAX_KEY_BYTES:
            raise NameTooLong(f"name exceeds {MAX_KEY_BYTES} bytes")
        return name

    def decode_name(self, parent: str, encoded: str) -> str:
        return encoded
