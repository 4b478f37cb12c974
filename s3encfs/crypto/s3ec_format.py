"""Amazon S3 Encryption Client (S3EC) object format: metadata and content encryption.

Pure functions and small stream objects, no I/O and no keys of our own. The byte layout is the
one the AWS SDKs write (V2: AES-GCM with a random IV; V3: AES-GCM under an HKDF-SHA512 derived
key with a key commitment), described in docs/ENCRYPTION.md ("S3 Encryption Client mode").

* `parse_envelope` turns an object's user metadata (merged with its instruction file, if any)
  into an `Envelope`; it decides the version from the metadata names alone and refuses mixed or
  incomplete sets, so a reader never guesses.
* `content_key` gives the AES key, IV and AAD of an object once the data key is known; for V3 it
  checks the commitment (constant time) before anything is decrypted.
* The content ciphers (`Encryptor`, `Decryptor`, `ctr_decrypt_range`) are in s3ec_stream.py.

Metadata names are matched case-insensitively (Go writes ``X-Amz-Meta-X-Amz-C``); all names here
are the lower-case forms without the ``x-amz-meta-`` prefix.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from s3encfs.codec import IntegrityError

TAG_LEN = 16
KEY_LEN = 32
IV_LEN = 12
MESSAGE_ID_LEN = 28
COMMIT_LEN = 28
#: NIST SP 800-38D limit for one GCM invocation (2^39 - 256 bits), what the SDKs enforce.
MAX_PLAINTEXT = 2**36 - 32

# V1/V2 names
KEY_V1 = "x-amz-key"
KEY_V2 = "x-amz-key-v2"
IV = "x-amz-iv"
CEK_ALG = "x-amz-cek-alg"
WRAP_ALG = "x-amz-wrap-alg"
MATDESC = "x-amz-matdesc"
TAG_LEN_KEY = "x-amz-tag-len"
PLAIN_LEN = "x-amz-unencrypted-content-length"
# V3 names
V3_CEK = "x-amz-c"
V3_KEY = "x-amz-3"
V3_WRAP = "x-amz-w"
V3_COMMIT = "x-amz-d"
V3_MID = "x-amz-i"
V3_CONTEXT = "x-amz-t"
V3_MATDESC = "x-amz-m"

INSTRUCTION_SUFFIX = ".instruction"

GCM = "AES/GCM/NoPadding"
CBC = "AES/CBC/PKCS5Padding"
V3_SUITE = "115"  # ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY (0x0073) in decimal
_V3_SUITE_ID = b"\x00\x73"
_V3_IV = b"\x01" * IV_LEN

#: wrapping algorithms by their V2 name and V3 code
WRAP_KMS = "kms+context"
WRAP_AES = "AES/GCM"
WRAP_RSA = "RSA-OAEP-SHA1"
WRAP_KMS_V1 = "kms"  # legacy, read only
_V3_CODES = {"12": WRAP_KMS, "02": WRAP_AES, "22": WRAP_RSA}
V3_CODE = {v: k for k, v in _V3_CODES.items()}

V2_NAMES = frozenset({KEY_V1, KEY_V2, IV, CEK_ALG, WRAP_ALG, MATDESC, TAG_LEN_KEY})
V3_NAMES = frozenset({V3_CEK, V3_KEY, V3_WRAP, V3_COMMIT, V3_MID, V3_CONTEXT, V3_MATDESC})
#: V3 names that must stay in the object itself (the commitment binds whatever the file says)
V3_OBJECT_ONLY = frozenset({V3_CEK, V3_COMMIT, V3_MID})
ALL_NAMES = V2_NAMES | V3_NAMES | {PLAIN_LEN}


class NotS3EC(IntegrityError):
    """The object carries no (or an incomplete/contradictory) S3EC metadata set."""


class LegacyRefused(IntegrityError):
    """V1 or AES-CBC content: no integrity; refused unless the legacy flag is on."""


@dataclass(frozen=True)
class Envelope:
    """The parsed S3EC metadata of one object."""

    version: int  # 1, 2 or 3
    wrap_alg: str  # WRAP_* (V1 without x-amz-wrap-alg: "" = infer AES/RSA legacy)
    edk: bytes
    cek_alg: str = GCM  # GCM or CBC (V3 is always GCM)
    iv: bytes = b""  # V1/V2
    message_id: bytes = b""  # V3
    commitment: bytes = b""  # V3
    #: KMS encryption context (kms wraps) or raw-keyring material description, parsed
    description: dict[str, str] = field(default_factory=dict)
    plain_length: int | None = None

    @property
    def authenticated(self) -> bool:
        return self.cek_alg == GCM


def lower_keys(meta: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in meta.items()}


def is_s3ec(meta: Mapping[str, str]) -> bool:
    """True when the metadata names any S3EC content key (quick test; `parse_envelope` decides)."""
    low = lower_keys(meta)
    return any(k in low for k in (KEY_V1, KEY_V2, V3_CEK, V3_KEY, IV))


def needs_instruction_file(meta: Mapping[str, str]) -> bool:
    """V3 split metadata (commitment in the object, key in ``X.instruction``)."""
    low = lower_keys(meta)
    return V3_CEK in low and V3_KEY not in low


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NotS3EC(f"{what} is not base64") from None


def _json_map(value: str | None, what: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        raise NotS3EC(f"{what} is not JSON") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise NotS3EC(f"{what} is not a JSON map of strings")
    return parsed


def compact_json(d: Mapping[str, str]) -> str:
    return json.dumps(dict(d), separators=(",", ":"), sort_keys=True)


def merge_instruction(meta: Mapping[str, str], instruction_body: bytes) -> dict[str, str]:
    """Object metadata merged with an instruction file's JSON (V2: all keys; V3: key part).

    The file may carry S3EC names only, and never the V3 names that bind the object (a file
    that supplies its own commitment could swap the key undetected)."""
    try:
        doc = json.loads(instruction_body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotS3EC("instruction file is not JSON") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise NotS3EC("instruction file is not a JSON map of strings")
    inst = lower_keys(doc)
    if set(inst) - ALL_NAMES:
        raise NotS3EC("instruction file carries non-S3EC keys")
    if set(inst) & V3_OBJECT_ONLY:
        raise NotS3EC("instruction file carries object-bound V3 keys")
    low = lower_keys(meta)
    if V3_CEK not in low and set(low) & (V2_NAMES - {MATDESC}):
        raise NotS3EC("content keys both in the object and in its instruction file")
    return {**low, **inst}


def parse_envelope(meta: Mapping[str, str]) -> Envelope:
    """Decide the format from the metadata names; raises NotS3EC for anything incomplete."""
    low = lower_keys(meta)
    versions = [k for k in (KEY_V1, KEY_V2, V3_KEY) if k in low]
    if len(versions) > 1:
        raise NotS3EC("more than one S3EC key format in one object")
    if V3_CEK in low or V3_KEY in low:
        if set(low) & (V2_NAMES - {MATDESC}):
            raise NotS3EC("V2 content keys mixed with V3 ones")
        return _parse_v3(low)
    if versions:
        return _parse_v12(low, 1 if versions[0] == KEY_V1 else 2)
    raise NotS3EC("no S3EC metadata")


def _parse_v3(low: dict[str, str]) -> Envelope:
    for name in (V3_CEK, V3_KEY, V3_WRAP, V3_COMMIT, V3_MID):
        if name not in low:
            raise NotS3EC(f"V3 metadata without {name}")
    if low[V3_CEK] != V3_SUITE:
        raise NotS3EC(f"unknown V3 content algorithm {low[V3_CEK]!r}")
    wrap = _V3_CODES.get(low[V3_WRAP])
    if wrap is None:
        raise NotS3EC(f"unknown V3 wrapping algorithm {low[V3_WRAP]!r}")
    if wrap == WRAP_KMS:
        if V3_MATDESC in low:
            raise NotS3EC("V3 KMS object with a material description")
        desc = _json_map(low.get(V3_CONTEXT), "encryption context")
    else:
        if V3_CONTEXT in low:
            raise NotS3EC("V3 raw-key object with a KMS encryption context")
        desc = _json_map(low.get(V3_MATDESC), "material description")
    mid = _b64(low[V3_MID], "message id")
    commit = _b64(low[V3_COMMIT], "key commitment")
    if len(mid) != MESSAGE_ID_LEN or not any(mid):
        raise NotS3EC("bad V3 message id")
    if len(commit) != COMMIT_LEN:
        raise NotS3EC("bad V3 key commitment length")
    return Envelope(3, wrap, _b64(low[V3_KEY], "wrapped key"), GCM, b"", mid, commit, desc,
                    _plain_len(low))


def _parse_v12(low: dict[str, str], version: int) -> Envelope:
    if IV not in low:
        raise NotS3EC("V1/V2 metadata without x-amz-iv")
    cek = low.get(CEK_ALG, CBC)
    iv = _b64(low[IV], "iv")
    if cek == GCM:
        if version == 1:
            raise NotS3EC("V1 metadata with GCM content")
        if low.get(TAG_LEN_KEY) != "128":
            raise NotS3EC("GCM object without x-amz-tag-len 128")
        if len(iv) != IV_LEN or not any(iv):
            raise NotS3EC("bad GCM iv")
    elif cek == CBC:
        if len(iv) != 16:
            raise NotS3EC("bad CBC iv")
    else:
        raise NotS3EC(f"unknown content algorithm {cek!r}")
    wrap = low.get(WRAP_ALG, "")
    if version == 2 and wrap not in (WRAP_KMS, WRAP_AES, WRAP_RSA, WRAP_KMS_V1):
        raise NotS3EC(f"unsupported wrapping algorithm {wrap!r}")
    edk = _b64(low[KEY_V1 if version == 1 else KEY_V2], "wrapped key")
    desc = _json_map(low.get(MATDESC), "material description")
    return Envelope(version, wrap, edk, cek, iv, b"", b"", desc, _plain_len(low))


def _plain_len(low: dict[str, str]) -> int | None:
    v = low.get(PLAIN_LEN)
    if v is None:
        return None
    if not v.isdigit():
        raise NotS3EC("bad x-amz-unencrypted-content-length")
    return int(v)


def build_metadata(version: int, wrap_alg: str, edk: bytes, description: Mapping[str, str], *,
                   iv: bytes = b"", message_id: bytes = b"", commitment: bytes = b"",
                   ) -> dict[str, str]:
    """The metadata an SDK writes (object-metadata storage, compact JSON, no empty x-amz-m)."""
    b64 = base64.b64encode
    if version == 3:
        meta = {V3_CEK: V3_SUITE, V3_KEY: b64(edk).decode(), V3_WRAP: V3_CODE[wrap_alg],
                V3_COMMIT: b64(commitment).decode(), V3_MID: b64(message_id).decode()}
        if wrap_alg == WRAP_KMS:
            meta[V3_CONTEXT] = compact_json(description)
        elif description:
            meta[V3_MATDESC] = compact_json(description)
        return meta
    if version == 2:
        return {KEY_V2: b64(edk).decode(), IV: b64(iv).decode(), CEK_ALG: GCM,
                TAG_LEN_KEY: "128", WRAP_ALG: wrap_alg, MATDESC: compact_json(description)}
    raise ValueError(f"cannot write S3EC version {version}")


def cek_alg_tag(version: int) -> str:
    """What the wrap binds the content algorithm to: RSA suffix, AES/GCM AAD, KMS context."""
    return V3_SUITE if version == 3 else GCM


def derive_v3(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """(content key, commitment) = HKDF-SHA512(salt = message id, ikm = data key)."""
    prk = hmac.new(message_id, data_key, "sha512").digest()
    dek = HKDFExpand(hashes.SHA512(), KEY_LEN, _V3_SUITE_ID + b"DERIVEKEY").derive(prk)
    ck = HKDFExpand(hashes.SHA512(), COMMIT_LEN, _V3_SUITE_ID + b"COMMITKEY").derive(prk)
    return dek, ck


@dataclass(frozen=True)
class ContentKey:
    key: bytes
    iv: bytes
    aad: bytes
    cek_alg: str = GCM


def content_key(env: Envelope, data_key: bytes, *, allow_legacy: bool = False) -> ContentKey:
    """The content cipher's key for `env`. V3: commitment checked first (constant time)."""
    if len(data_key) != KEY_LEN:
        raise IntegrityError("data key is not 256 bits")
    if env.version == 3:
        dek, ck = derive_v3(data_key, env.message_id)
        if not hmac.compare_digest(ck, env.commitment):
            raise IntegrityError("S3EC key commitment mismatch")
        return ContentKey(dek, _V3_IV, _V3_SUITE_ID)
    if env.cek_alg != GCM or env.version == 1:
        if not allow_legacy:
            raise LegacyRefused("legacy S3EC object (AES-CBC, no integrity); refused")
        return ContentKey(data_key, env.iv, b"", CBC)
    return ContentKey(data_key, env.iv, b"")


def plain_size(object_size: int) -> int:
    """Plaintext size of a GCM S3EC object from its listed size (no HEAD)."""
    if object_size < TAG_LEN:
        raise IntegrityError(f"S3EC object of {object_size} B is shorter than its tag")
    return object_size - TAG_LEN
