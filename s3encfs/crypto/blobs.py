"""Blobs: small standalone objects sealed by the master key (directory indexes, keycheck, the
cache key), `seal_blob(purpose, data)`; docs/FORMAT.md, "Blobs"."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3encfs.codec import IntegrityError

from . import envelope as env

_BLOB_INFO = b"s3encfs/v1/blob"
_BLOB_MAGIC = b"S3EB"
_BLOB_ZERO_NONCE = bytes(env.NONCE)
_BLOB_SALT = 16


def _blob_header(key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    return _BLOB_MAGIC + bytes([env.BLOB_VERSION, len(kid)]) + kid


def _blob_aad(header: bytes, purpose: str) -> bytes:
    return header + b"\x00" + purpose.encode("utf-8")


def seal_blob(keys: env.MasterKeys, purpose: str, data: bytes) -> bytes:
    """magic | version | len(kid) | kid | salt(16) | AESGCM(HKDF(master, salt), nonce 0)(data).

    The key is fresh per blob (random salt), so the fixed zero nonce is used exactly once."""
    header = _blob_header(keys.current)
    salt = env.random_bytes(_BLOB_SALT)
    key = env.hkdf(keys.get(keys.current), _BLOB_INFO, salt=salt)
    return header + salt + AESGCM(key).encrypt(_BLOB_ZERO_NONCE, data, _blob_aad(header, purpose))


def blob_key_id(data: bytes) -> str | None:
    """The master key id a blob's header names, unauthenticated (a hint for choosing a key;
    `open_blob` proves it), or None when `data` is not a blob."""
    if len(data) < 6 or data[:4] != _BLOB_MAGIC or data[4] != env.BLOB_VERSION:
        return None
    try:
        return data[6:6 + data[5]].decode("ascii") or None
    except UnicodeDecodeError:
        return None


def open_blob(keys: env.MasterKeys, purpose: str, data: bytes) -> bytes:
    if len(data) < 6 or data[:4] != _BLOB_MAGIC:
        raise IntegrityError(f"not an s3encfs blob ({purpose})")
    if data[4] != env.BLOB_VERSION:
        raise IntegrityError(f"unsupported blob version {data[4]}")
    end = 6 + data[5]
    body_start = end + _BLOB_SALT
    if len(data) < body_start + env.TAG:
        raise IntegrityError(f"blob ({purpose}) truncated")
    try:
        key_id = data[6:end].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError("blob header has an invalid key id") from None
    header = data[:end]
    key = env.hkdf(keys.get(key_id), _BLOB_INFO, salt=data[end:body_start])
    try:
        return AESGCM(key).decrypt(_BLOB_ZERO_NONCE, data[body_start:], _blob_aad(header, purpose))
    except InvalidTag:
        raise IntegrityError(
            f"blob ({purpose}) failed authentication with master key {key_id!r}: "
            "wrong key, wrong purpose or tampered"
        ) from None
