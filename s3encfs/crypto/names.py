"""Filename encryption: deterministic AES-SIV per directory, base32 (lowercase, no padding).

Two name schemes (docs/FORMAT.md, "Names"); a bucket uses one, recorded in its keycheck:

- scheme 1 (buckets made before it had a number): the exact name bytes, at most 143 of them;
- scheme 2: the name padded to a multiple of 32 bytes before AES-SIV, so only its length class
  shows; names up to 255 bytes. A padded name longer than `INLINE_PADDED` bytes is stored as a
  *hashed* component ``gl-`` + base32(HMAC-SHA256(long-name key, sealed name)); the sealed name
  itself goes into a side object next to it (store/longnames.py). `NameCipher` remembers the
  sealed form of every long name it encoded or verified, which is all the side objects need.

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
import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from s3encfs.codec import IntegrityError, NameTooLong, UndecodableName

from .envelope import hkdf

NAME_INFO = b"s3encfs/v1/name"
SIV_TAG = 16
# one encoded component must fit NAME_MAX of ordinary filesystems — and of S3 servers built on
# them: SeaweedFS answers 400 KeyTooLongError for a longer component (measured)
MAX_ENCODED = 255
MAX_PLAIN = (MAX_ENCODED * 5 // 8) - SIV_TAG  # 143 bytes of UTF-8 (or raw) name
MAX_KEY_BYTES = 1024  # S3 object key limit, for identity names
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")

# scheme 2 (see the module docstring)
NAME2_AD = b"s3encfs/v3/name"  # the associated-data label: a scheme-1 name never opens as 2
LONG_INFO = b"s3encfs/v3/longname"  # HKDF info of the HMAC key that names hashed components
PAD_BLOCK = 32
NAME_MAX = 255  # POSIX NAME_MAX: the longest plaintext name in scheme 2
# padded names up to 96 bytes (plaintext up to 95) stay inline: at most 180 characters, so five
# of the longest inline components (and 18 hashed ones of 55) still fit a 1,024-byte S3 key
INLINE_PADDED = 96
LONG_PREFIX = "gl-"  # '-' is not in the base32 alphabet: no inline name starts like this
HASH_CHARS = 52  # base32 of 32 bytes, no padding
SIDE_SUFFIX = ".name"  # the side object of `dir/gl-X` is `dir/gl-X.name`
_LONG_MEMO = 1 << 16


def is_long(component: str) -> bool:
    """Whether an encoded component is a scheme-2 hashed (long) name."""
    return (len(component) == len(LONG_PREFIX) + HASH_CHARS
            and component.startswith(LONG_PREFIX)
            and _ALPHABET.issuperset(component[len(LONG_PREFIX):]))


def pad(raw: bytes) -> bytes:
    """PKCS#7 to a multiple of PAD_BLOCK (1..32 bytes of value n): unambiguous to strip."""
    n = PAD_BLOCK - len(raw) % PAD_BLOCK
    return raw + bytes([n]) * n


def unpad(padded: bytes) -> bytes | None:
    if not padded or len(padded) % PAD_BLOCK:
        return None
    n = padded[-1]
    if not 1 <= n <= PAD_BLOCK or padded[-n:] != bytes([n]) * n or n == len(padded):
        return None
    return padded[:-n]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).rstrip(b"=").decode("ascii").lower()


def _b32_len(n: int) -> int:
    """Characters of `_b32` of n bytes."""
    return (n * 8 + 4) // 5


def _unb32(encoded: str) -> bytes | None:
    text = encoded.upper().encode("ascii")
    try:
        return base64.b32decode(text + b"=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None


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

    def __init__(self, master_key: bytes, scheme: int = 1) -> None:
        if scheme not in (1, 2):
            raise ValueError(f"unknown name scheme {scheme}")
        self.scheme = scheme
        self.name_max = MAX_PLAIN if scheme == 1 else NAME_MAX
        self._siv = AESSIV(hkdf(master_key, NAME_INFO, length=64))
        self._mac_key = hkdf(master_key, LONG_INFO)
        # hashed component -> its sealed name (HMAC-verified): what a side object holds
        self._long: dict[str, bytes] = {}
        # deterministic, so memoizable: every S3 key is built from all its path components,
        # and an rsync asks for the same ones thousands of times (encode is ~50 µs of AES-SIV)
        self._encoded: dict[tuple[str, str], str] = {}
        # and the other way: a listing of names this mount encoded (or decoded before) needs
        # no AES-SIV decryption. Sound: the encoding is deterministic and canonical, so
        # decode(parent, encode(parent, name)) is always `name`
        self._decoded: dict[tuple[str, str], str] = {}

    def encode_name(self, parent: str, name: str) -> str:
        hit = self._encoded.get((parent, name))
        if hit is not None:
            return hit
        encoded = self._encode(parent, name)
        self._memo(parent, name, encoded)
        return encoded

    def encoded_len(self, name: str) -> int:
        """``len(encode_name(parent, name))`` for any parent, without AES-SIV; raises what
        `encode_name` raises. Checking a new name's limits needs no encryption: a name made is
        often a temporary one that never reaches S3 (rsync's ``.name.XXXXXX``)."""
        raw = name_bytes(name)
        if self.scheme == 2:
            if len(raw) > NAME_MAX:
                raise NameTooLong(f"name of {len(raw)} bytes exceeds {NAME_MAX} bytes")
            padded = len(raw) + PAD_BLOCK - len(raw) % PAD_BLOCK
            if padded > INLINE_PADDED:
                return len(LONG_PREFIX) + HASH_CHARS
            return _b32_len(padded + SIV_TAG)
        if len(raw) > MAX_PLAIN:
            raise NameTooLong(
                f"name of {len(raw)} bytes exceeds {MAX_PLAIN} bytes when names are encrypted"
            )
        return _b32_len(len(raw) + SIV_TAG)

    def _memo(self, parent: str, name: str, encoded: str) -> None:
        if len(self._encoded) >= NAME_CACHE or len(self._decoded) >= NAME_CACHE:
            self._encoded.clear()
            self._decoded.clear()
        self._encoded[(parent, name)] = encoded
        self._decoded[(parent, encoded)] = name

    def decode_name(self, parent: str, encoded: str) -> str:
        hit = self._decoded.get((parent, encoded))
        if hit is not None:
            return hit
        # the canonical check in _decode (encode_name of the result) memoizes both ways
        return self._decode2(parent, encoded) if self.scheme == 2 else self._decode1(parent,
                                                                                     encoded)

    def _encode(self, parent: str, name: str) -> str:
        raw = name_bytes(name)
        if self.scheme == 2:
            return self._encode2(parent, raw)
        if len(raw) > MAX_PLAIN:
            raise NameTooLong(
                f"name of {len(raw)} bytes exceeds {MAX_PLAIN} bytes when names are encrypted"
            )
        sealed = self._siv.encrypt(raw, [NAME_INFO, _parent_bytes(parent)])
        return base64.b32encode(sealed).rstrip(b"=").decode("ascii").lower()

    def _encode2(self, parent: str, raw: bytes) -> str:
        if len(raw) > NAME_MAX:
            raise NameTooLong(f"name of {len(raw)} bytes exceeds {NAME_MAX} bytes")
        padded = pad(raw)
        sealed = self._siv.encrypt(padded, [NAME2_AD, _parent_bytes(parent)])
        if len(padded) <= INLINE_PADDED:
            return _b32(sealed)
        hashed = LONG_PREFIX + _b32(self._mac(sealed))
        self._remember(hashed, sealed)
        return hashed

    def _mac(self, sealed: bytes) -> bytes:
        return hmac.new(self._mac_key, sealed, hashlib.sha256).digest()

    def _remember(self, hashed: str, sealed: bytes) -> None:
        if hashed not in self._long and len(self._long) >= _LONG_MEMO:
            self._long.pop(next(iter(self._long)))  # the oldest
        self._long[hashed] = sealed

    # -- long names (scheme 2): the side objects' bodies
    def long_body(self, hashed: str) -> bytes | None:
        """The sealed name a hashed component stands for, if this cipher has seen it."""
        return self._long.get(hashed)

    def learn_long(self, hashed: str, body: bytes) -> bool:
        """Accept a side object's body for `hashed` if its HMAC matches (False: tampered)."""
        if not is_long(hashed) or len(body) <= SIV_TAG + INLINE_PADDED:
            return False
        # compared as text, not as decoded bytes: base32's trailing bits would let a second,
        # non-canonical spelling of the same HMAC pass (and then list as a foreign name, not EIO)
        if not hmac.compare_digest(hashed[len(LONG_PREFIX):], _b32(self._mac(body))):
            return False
        self._remember(hashed, body)
        return True

    def _decode2(self, parent: str, encoded: str) -> str:
        long = is_long(encoded)
        if long:
            sealed = self._long.get(encoded)
            if sealed is None:  # no side object seen (store/longnames.py fetches them)
                raise UndecodableName(encoded[:60])
        else:
            if not encoded or len(encoded) > MAX_ENCODED or not _ALPHABET.issuperset(encoded):
                raise UndecodableName(encoded[:60])
            got = _unb32(encoded)
            if got is None:
                raise UndecodableName(encoded[:60])
            sealed = got
        if len(sealed) <= SIV_TAG:
            raise UndecodableName(encoded[:60])
        try:
            padded = self._siv.decrypt(sealed, [NAME2_AD, _parent_bytes(parent)])
        except InvalidTag:
            if long:  # its HMAC was right, so the pair was moved from another directory
                raise IntegrityError(f"long name {encoded} belongs to another directory") \
                    from None
            raise UndecodableName(encoded[:60]) from None
        raw = unpad(padded)
        if raw is None or (len(padded) > INLINE_PADDED) != long:
            raise UndecodableName(encoded[:60])
        name = raw.decode("utf-8", "surrogateescape")
        if self.encode_name(parent, name) != encoded:  # non-canonical base32 trailing bits
            raise UndecodableName(encoded[:60])
        return name

    def _decode1(self, parent: str, encoded: str) -> str:
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
    scheme = 1
    name_max = NAME_MAX

    def long_body(self, hashed: str) -> bytes | None:
        return None

    def learn_long(self, hashed: str, body: bytes) -> bool:
        return False

    def encode_name(self, parent: str, name: str) -> str:
        if len(name_bytes(name)) > MAX_KEY_BYTES:
            raise NameTooLong(f"name exceeds {MAX_KEY_BYTES} bytes")
        return name

    def decode_name(self, parent: str, encoded: str) -> str:
        return encoded
