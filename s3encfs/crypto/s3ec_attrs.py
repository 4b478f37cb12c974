"""POSIX attributes of an S3EC object, sealed in our own metadata key next to the S3EC keys.

Never in the KMS encryption context (any extra context key breaks a plain SDK `get_object`) and
never in the material description (unauthenticated; it selects keys in Java). The key comes from
the object's data key (HKDF-SHA256, our own label) and the AAD is the object's unique S3EC values
(V3 message id + commitment, V2 IV), so attributes cannot be moved to another object, and a
rewrap (new wrapped key, same data key) keeps them valid.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from s3encfs.codec import IntegrityError

from . import s3ec_format as fmt

ATTRS_KEY = "s3encfs-s3ec-attrs"
_INFO = b"s3encfs/s3ec/attrs/v1"


def _aead(data_key: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=_INFO).derive(data_key))


def _aad(env: fmt.Envelope) -> bytes:
    return _INFO + b"\0" + env.message_id + env.commitment + env.iv


def seal(data_key: bytes, env: fmt.Envelope, attrs: Mapping[str, str]) -> dict[str, str]:
    if not attrs:
        return {}
    nonce = os.urandom(12)
    body = json.dumps(dict(attrs), separators=(",", ":"), sort_keys=True).encode()
    ct = _aead(data_key).encrypt(nonce, body, _aad(env))
    return {ATTRS_KEY: base64.b64encode(nonce + ct).decode()}


def open_sealed(data_key: bytes, env: fmt.Envelope, meta: Mapping[str, str]) -> dict[str, str]:
    """{} when the object carries no sealed attributes (written by an SDK)."""
    value = meta.get(ATTRS_KEY)
    if value is None:
        return {}
    try:
        raw = base64.b64decode(value, validate=True)
        body = _aead(data_key).decrypt(raw[:12], raw[12:], _aad(env))
        attrs = json.loads(body)
    except (binascii.Error, ValueError, InvalidTag):
        raise IntegrityError("sealed S3EC attributes failed authentication") from None
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        raise IntegrityError("sealed S3EC attributes are not a map of strings")
    return attrs
