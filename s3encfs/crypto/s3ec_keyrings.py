"""S3EC keyrings: how an object's 256-bit data key is wrapped (raw AES-GCM, RSA-OAEP, KMS).

Each keyring makes a fresh data key for a write (`generate`) and unwraps the key of an existing
object (`unwrap`). `S3ECKeys` holds several at once: the first (newest) writes; a read picks the
one keyring the object's metadata names (wrapping algorithm + material description, or the KMS
context) and never tries keys in turn — a wrong pick is an error, not a fallback.

Bindings (what makes a swapped or edited wrapped key fail):
* AES/GCM: the wrap's AAD is the content algorithm ("AES/GCM/NoPadding" for V2, "115" for V3).
* RSA-OAEP-SHA1: the OAEP plaintext is ``len(DK) || DK || content algorithm``, checked on unwrap.
* KMS: the encryption context (caller's + ``aws:x-amz-cek-alg``) is KMS's AAD.
The raw keyrings' material description is NOT authenticated (it only selects the key), as in
the SDKs; V3's commitment still binds the data key to the object.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3encfs.codec import IntegrityError

from . import s3ec_format as fmt

CEK_CONTEXT_KEY = "aws:x-amz-cek-alg"
_KMS_RESERVED = frozenset({CEK_CONTEXT_KEY, "kms_cmk_id"})


class MissingS3ECKey(IntegrityError):
    """No configured keyring matches the object's wrapping algorithm / description."""


@dataclass(frozen=True)
class Wrapped:
    data_key: bytes
    edk: bytes
    wrap_alg: str
    description: dict[str, str]  # stored as x-amz-matdesc / x-amz-t / x-amz-m


class Keyring(Protocol):
    wrap_alg: str
    name: str

    def generate(self, version: int) -> Wrapped: ...

    def wrap(self, dk: bytes, version: int) -> Wrapped: ...

    def matches(self, env: fmt.Envelope) -> bool: ...

    def unwrap(self, env: fmt.Envelope) -> bytes: ...


def _random_key() -> bytes:
    return os.urandom(fmt.KEY_LEN)


class AesKeyring:
    """Raw AES-256 key-encryption key, wrap ``AES/GCM``: EDK = IV12 || GCM(KEK, IV, AAD)(DK)."""

    wrap_alg = fmt.WRAP_AES

    def __init__(self, name: str, kek: bytes, description: Mapping[str, str] | None = None):
        if len(kek) != 32:
            raise ValueError("an S3EC AES wrapping key is 32 bytes")
        self.name = name
        self._aead = AESGCM(kek)
        self.description = dict(description or {})

    def generate(self, version: int) -> Wrapped:
        return self.wrap(_random_key(), version)

    def wrap(self, dk: bytes, version: int) -> Wrapped:
        """Wrap a given data key (`generate` for a new one; `rekey` rewraps existing ones)."""
        iv = os.urandom(12)
        edk = iv + self._aead.encrypt(iv, dk, fmt.cek_alg_tag(version).encode())
        return Wrapped(dk, edk, self.wrap_alg, dict(self.description))

    def matches(self, env: fmt.Envelope) -> bool:
        return env.wrap_alg == self.wrap_alg and env.description == self.description

    def unwrap(self, env: fmt.Envelope) -> bytes:
        if len(env.edk) != 12 + fmt.KEY_LEN + 16:
            raise IntegrityError("AES/GCM wrapped key has the wrong length")
        try:
            dk = self._aead.decrypt(env.edk[:12], env.edk[12:], _aad_of(env))
        except InvalidTag:
            raise IntegrityError("AES/GCM wrapped key failed authentication") from None
        return dk


def _aad_of(env: fmt.Envelope) -> bytes:
    return fmt.cek_alg_tag(env.version).encode()


_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


class RsaKeyring:
    """``RSA-OAEP-SHA1`` (MGF1-SHA1, empty label). A public key alone can write, not read."""

    wrap_alg = fmt.WRAP_RSA

    def __init__(self, name: str, key: rsa.RSAPrivateKey | rsa.RSAPublicKey,
                 description: Mapping[str, str] | None = None):
        self.name = name
        self._private = key if isinstance(key, rsa.RSAPrivateKey) else None
        self._public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
        if self._public.key_size < 2048:
            raise ValueError("RSA keys shorter than 2048 bits are refused")
        self.description = dict(description or {})

    @classmethod
    def from_pem(cls, name: str, pem: bytes,
                 description: Mapping[str, str] | None = None) -> RsaKeyring:
        key: Any
        if b"PRIVATE KEY" in pem:
            key = serialization.load_pem_private_key(pem, password=None)
        else:
            key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise ValueError("not an RSA key")
        return cls(name, key, description)

    @property
    def can_read(self) -> bool:
        return self._private is not None

    def generate(self, version: int) -> Wrapped:
        return self.wrap(_random_key(), version)

    def wrap(self, dk: bytes, version: int) -> Wrapped:
        pseudo = bytes([len(dk)]) + dk + fmt.cek_alg_tag(version).encode()
        return Wrapped(dk, self._public.encrypt(pseudo, _OAEP), self.wrap_alg,
                       dict(self.description))

    def matches(self, env: fmt.Envelope) -> bool:
        return env.wrap_alg == self.wrap_alg and env.description == self.description

    def unwrap(self, env: fmt.Envelope) -> bytes:
        if self._private is None:
            raise MissingS3ECKey(f"RSA key {self.name!r} is public only (write-only host)")
        try:
            pseudo = self._private.decrypt(env.edk, _OAEP)
        except ValueError:
            raise IntegrityError("RSA wrapped key failed to decrypt") from None
        suffix = _aad_of(env)
        n = pseudo[0] if pseudo else 0
        if n != fmt.KEY_LEN or len(pseudo) != 1 + n + len(suffix) or not hmac.compare_digest(
                pseudo[1 + n:], suffix):
            raise IntegrityError("RSA wrapped key is bound to another content algorithm")
        return pseudo[1:1 + n]


@dataclass
class KmsCounters:
    generate: int = 0
    decrypt: int = 0
    cache_hits: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"kms_generate_calls": self.generate, "kms_decrypt_calls": self.decrypt,
                "kms_cache_hits": self.cache_hits}


@dataclass
class _Cache:
    size: int
    items: OrderedDict[tuple[bytes, str], Any] = field(default_factory=OrderedDict)


class KmsKeyring:
    """``kms+context`` through a boto3 KMS client (any endpoint, e.g. moto's in tests).

    Reads check that the stored context, minus the reserved keys, equals the configured one (the
    SDKs do the same; KMS then authenticates the full context). Unwrapped data keys are cached by
    wrapped key + context (LRU, `cache_size` entries): reopening a file costs no KMS call. Every
    write gets a fresh data key (GenerateDataKey), never a cached one."""

    wrap_alg = fmt.WRAP_KMS

    def __init__(self, client: Any, key_id: str, context: Mapping[str, str] | None = None, *,
                 cache_size: int = 1024, name: str | None = None, older: Sequence[str] = ()):
        """`older`: KMS keys this one replaces (``--s3ec-kms-key NEW,OLD``). The metadata cannot
        tell them apart (same context), so with older keys a Decrypt names no KeyId: KMS finds
        the key from the wrapped blob, and the key it reports must be one of these."""
        context = dict(context or {})
        self.older = list(older)
        self._arns: dict[str, str] = {}
        if set(context) & _KMS_RESERVED:
            raise ValueError(f"the encryption context may not set {sorted(_KMS_RESERVED)}")
        self.client = client
        self.key_id = key_id
        self.name = name or f"kms:{key_id}"
        self.context = context
        self.counters = KmsCounters()
        self._cache = _Cache(cache_size)
        self._lock = threading.Lock()

    def generate(self, version: int) -> Wrapped:
        ctx = {**self.context, CEK_CONTEXT_KEY: fmt.cek_alg_tag(version)}
        with self._lock:
            self.counters.generate += 1
        r = self.client.generate_data_key(KeyId=self.key_id, KeySpec="AES_256",
                                          EncryptionContext=ctx)
        return Wrapped(bytes(r["Plaintext"]), bytes(r["CiphertextBlob"]), self.wrap_alg, ctx)

    def wrap(self, dk: bytes, version: int) -> Wrapped:
        """KMS Encrypt of a given data key under the same context a new object gets."""
        ctx = {**self.context, CEK_CONTEXT_KEY: fmt.cek_alg_tag(version)}
        r = self.client.encrypt(KeyId=self.key_id, Plaintext=dk, EncryptionContext=ctx)
        return Wrapped(dk, bytes(r["CiphertextBlob"]), self.wrap_alg, ctx)

    def matches(self, env: fmt.Envelope) -> bool:
        if env.wrap_alg != self.wrap_alg:
            return False
        rest = {k: v for k, v in env.description.items() if k not in _KMS_RESERVED}
        return rest == self.context

    def unwrap(self, env: fmt.Envelope) -> bytes:
        return self._unwrap(env)[0]

    def is_current(self, env: fmt.Envelope) -> bool:
        """Whether the object's data key is wrapped under the writing KMS key (not an older one):
        with older keys, one Decrypt (cached) tells."""
        return not self.older or self._unwrap(env)[1] == self._arn(self.key_id)

    def _arn(self, key_id: str) -> str:
        with self._lock:
            if key_id in self._arns:
                return self._arns[key_id]
        arn = str(self.client.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])
        with self._lock:
            self._arns[key_id] = arn
        return arn

    def _unwrap(self, env: fmt.Envelope) -> tuple[bytes, str]:
        """(data key, ARN of the KMS key that wrapped it)."""
        if env.description.get(CEK_CONTEXT_KEY) != fmt.cek_alg_tag(env.version):
            raise IntegrityError("KMS context names another content algorithm")
        ckey = (env.edk, fmt.compact_json(env.description))
        with self._lock:
            hit = self._cache.items.get(ckey)
            if hit is not None:
                self._cache.items.move_to_end(ckey)
                self.counters.cache_hits += 1
                return hit
            self.counters.decrypt += 1
        which = {} if self.older else {"KeyId": self.key_id}
        try:
            r = self.client.decrypt(CiphertextBlob=env.edk, EncryptionContext=env.description,
                                    **which)
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise IntegrityError(f"KMS refused the wrapped key ({code})") from None
            raise
        dk, arn = bytes(r["Plaintext"]), str(r.get("KeyId") or self.key_id)
        if len(dk) != fmt.KEY_LEN:
            raise IntegrityError("KMS returned a data key that is not 256 bits")
        if self.older and arn not in {self._arn(k) for k in [self.key_id, *self.older]}:
            raise IntegrityError(f"wrapped under KMS key {arn}, not one of the configured keys")
        with self._lock:
            self._cache.items[ckey] = (dk, arn)
            while len(self._cache.items) > self._cache.size:
                self._cache.items.popitem(last=False)
        return dk, arn


class S3ECKeys:
    """Several keyrings: ``keyrings[0]`` writes; reads go to the single one the metadata names."""

    def __init__(self, keyrings: Sequence[Keyring], *, version: int = 3,
                 allow_legacy: bool = False):
        if not keyrings:
            raise ValueError("S3EC mode needs at least one key")
        if version not in (2, 3):
            raise ValueError("S3EC writes V2 or V3")
        self.keyrings = list(keyrings)
        self.version = version
        self.allow_legacy = allow_legacy
        seen: set[tuple[str, str]] = set()
        for k in self.keyrings:
            sel = (k.wrap_alg, fmt.compact_json(getattr(k, "description", None)
                                                or getattr(k, "context", {})))
            if sel in seen:
                raise ValueError("two S3EC keys with the same wrapping algorithm and material "
                                 "description: reads could not tell them apart")
            seen.add(sel)

    @property
    def writer(self) -> Keyring:
        return self.keyrings[0]

    def keyring_for(self, env: fmt.Envelope) -> Keyring:
        for k in self.keyrings:
            if k.matches(env):
                return k
        raise MissingS3ECKey(f"no S3EC key for wrap {env.wrap_alg!r} with description "
                             f"{sorted(env.description)!r}")

    def new_object(self) -> tuple[fmt.ContentKey, dict[str, str], bytes, fmt.Envelope]:
        """Fresh data key (and message id / IV): content key, S3EC metadata, data key, and
        that metadata parsed (the envelope every reader will see)."""
        w = self.writer.generate(self.version)
        if self.version == 3:
            mid = os.urandom(fmt.MESSAGE_ID_LEN)
            _dek, commit = fmt.derive_v3(w.data_key, mid)
            meta = fmt.build_metadata(3, w.wrap_alg, w.edk, w.description, message_id=mid,
                                      commitment=commit)
        else:
            iv = os.urandom(fmt.IV_LEN)
            meta = fmt.build_metadata(2, w.wrap_alg, w.edk, w.description, iv=iv)
        env = fmt.parse_envelope(meta)
        return fmt.content_key(env, w.data_key), meta, w.data_key, env

    def open_object(self, metadata: Mapping[str, str]) -> tuple[fmt.ContentKey, bytes]:
        """Content key and data key of an existing object (V3: commitment checked)."""
        env = fmt.parse_envelope(metadata)
        if not env.authenticated or env.version == 1:
            if not self.allow_legacy:
                raise fmt.LegacyRefused("legacy S3EC object (AES-CBC); refused")
        if env.wrap_alg == fmt.WRAP_KMS_V1 or env.wrap_alg == "":
            if not self.allow_legacy:
                raise fmt.LegacyRefused(f"legacy S3EC wrapping {env.wrap_alg or 'AES/RSA'!r}")
            raise MissingS3ECKey("legacy S3EC wrapping algorithms are not implemented")
        dk = self.keyring_for(env).unwrap(env)
        return fmt.content_key(env, dk, allow_legacy=self.allow_legacy), dk

    def kms_counters(self) -> dict[str, int]:
        out = {"kms_generate_calls": 0, "kms_decrypt_calls": 0, "kms_cache_hits": 0}
        for k in self.keyrings:
            if isinstance(k, KmsKeyring):
                for name, v in k.counters.as_dict().items():
                    out[name] += v
        return out
