"""Server-side encryption policy: which headers every call carries, and proof they were honoured.

One `SsePolicy` is chosen at mount. `ObjectStore` asks it for boto3 parameters on every call and
hands it every write response to `verify`. A server that silently drops SSE (moto, SeaweedFS with
DSSE-KMS) is caught either by `verify` or by the mount-time canary (`store/probe.py`). This
module imports nothing of the store, so the store can import it without a cycle.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes

from .errors import SseMismatch, StoreError

SSEC_META = "s3encfs-ssec"  # user metadata naming the SSE-C key that wrote an object
# Operations whose responses may legitimately omit SSE headers (SeaweedFS omits them on
# Create/CompleteMultipartUpload under SSE-S3/KMS); the store HEADs after complete instead.
# SeaweedFS also omits them on CopyObject. The store HEADs the result when they are missing.
LENIENT_OPS = frozenset(
    {"create_multipart", "complete_multipart", "upload_part", "upload_part_copy", "copy"}
)


class SsePolicy:
    """No server-side encryption requested (the base class is mode ``none``)."""

    mode = "none"

    def write_args(self) -> dict[str, Any]:
        return {}

    def part_args(self) -> dict[str, Any]:
        return {}

    def read_args(self, key_id: str | None) -> dict[str, Any]:
        return {}

    def copy_source_args(self, key_id: str | None) -> dict[str, Any]:
        return {}

    def write_metadata(self) -> dict[str, str]:
        return {}

    def read_key_ids(self) -> list[str]:
        """Key ids to try, newest first, when reading an object whose key id is unknown."""
        return []

    def verify(self, response: dict[str, Any], op: str, key: str) -> None:
        return None

    def silent(self, response: dict[str, Any]) -> bool:
        """True when a response says nothing about SSE (so a HEAD must confirm it)."""
        return False

    def describe(self) -> str:
        return self.mode

    def __repr__(self) -> str:  # never shows secrets
        return f"<SsePolicy {self.describe()}>"


def _mismatch(op: str, key: str, what: str, got: object) -> SseMismatch:
    return SseMismatch(
        f"{key}: {op} response lacks promised SSE: expected {what}, server said {got!r}",
        code="SseMismatch",
        key=key,
    )


class KmsLikePolicy(SsePolicy):
    """SSE-S3 (AES256), SSE-KMS (aws:kms) and DSSE-KMS (aws:kms:dsse): the server holds keys."""

    def __init__(self, mode: str, algorithm: str, kms_key_id: str | None, bucket_key: bool):
        self.mode = mode
        self.algorithm = algorithm
        self.kms_key_id = kms_key_id
        self.bucket_key = bucket_key
        # an alias's key: its ARN from DescribeKey at mount (store/kms.py), else the first
        # key id a response names; every later response must name the same key
        self.resolved_key: str | None = None
        self._pin_lock = threading.Lock()

    def write_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.bucket_key:
            args["BucketKeyEnabled"] = True
        return args

    def silent(self, response: dict[str, Any]) -> bool:
        return response.get("ServerSideEncryption") is None

    def _key_matches(self, got: str) -> bool:
        want = self.kms_key_id or ""
        if not want or got == want:
            return True
        if want.startswith("alias/") or ":alias/" in want:
            if not got:
                return False
            with self._pin_lock:  # AWS answers with the key ARN, not the alias
                if self.resolved_key is None:
                    self.resolved_key = got
                    return True
                have = self.resolved_key
            return got == have or have.endswith(("/" + got, ":" + got)) or \
                got.endswith(("/" + have, ":" + have))
        return got.endswith(("/" + want, ":" + want))

    def verify(self, response: dict[str, Any], op: str, key: str) -> None:
        got = response.get("ServerSideEncryption")
        if got is None and op in LENIENT_OPS:
            return
        if got != self.algorithm:
            raise _mismatch(op, key, f"ServerSideEncryption={self.algorithm}", got)
        if self.algorithm != "AES256" and self.kms_key_id:
            kid = response.get("SSEKMSKeyId")
            if kid is not None and not self._key_matches(str(kid)):
                raise _mismatch(op, key, f"SSEKMSKeyId={self.kms_key_id}", kid)
        bk = response.get("BucketKeyEnabled")
        # Bucket keys are a KMS cost setting, not confidentiality: write responses must echo it,
        # but SeaweedFS's HEAD omits it on PUT objects, so on HEAD only an explicit "false" fails.
        if self.bucket_key and (bk is False or (bk is None and op not in ("head", *LENIENT_OPS))):
            raise _mismatch(op, key, "BucketKeyEnabled=true", bk)

    def describe(self) -> str:
        kid = f":{self.kms_key_id}" if self.kms_key_id else ""
        return f"{self.mode}{kid}" + (" +bucket-key" if self.bucket_key else "")


def key_md5(secret: bytes) -> str:
    """Base64 MD5 of an SSE-C key, as S3 echoes it (a fingerprint, not a secret)."""
    h = hashes.Hash(hashes.MD5())
    h.update(secret)
    return base64.b64encode(h.finalize()).decode()


class SseCPolicy(SsePolicy):
    """SSE-C: the key travels with every request; S3 never stores it. Newest key writes."""

    mode = "sse-c"

    def __init__(self, keys: list[tuple[str, bytes]], *, read_unencrypted: bool = False):
        # read_unencrypted: serve objects stored without SSE-C (migrations only); otherwise a
        # GET/HEAD answered without SSE-C under a keyring key is refused (EIO in the mount)
        self.read_unencrypted = read_unencrypted
        if not keys:
            raise ValueError("sse-c needs at least one key")
        for name, secret in keys:
            if len(secret) != 32:
                raise ValueError(f"sse-c key {name!r} must be 32 bytes")
            if not name or "," in name:
                raise ValueError(f"bad sse-c key name {name!r}")
        self._keys = dict(keys)
        self._order = [name for name, _ in keys]
        self._md5 = {name: key_md5(secret) for name, secret in keys}

    @property
    def writer(self) -> str:
        return self._order[0]

    def _secret(self, key_id: str | None) -> bytes:
        name = key_id or self.writer
        try:
            return self._keys[name]
        except KeyError:
            raise StoreError(
                f"object was written with SSE-C key {name!r}, which is not in the keyring",
                code="UnknownSseCKey",
            ) from None

    def _args(self, prefix: str, key_id: str | None) -> dict[str, Any]:
        secret = self._secret(key_id)
        # botocore base64-encodes raw bytes and adds the MD5 header itself.
        return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": secret}

    def write_args(self) -> dict[str, Any]:
        return self._args("", None)

    def part_args(self) -> dict[str, Any]:
        return self._args("", None)

    def read_args(self, key_id: str | None) -> dict[str, Any]:
        return self._args("", key_id)

    def copy_source_args(self, key_id: str | None) -> dict[str, Any]:
        return self._args("CopySource", key_id)

    def write_metadata(self) -> dict[str, str]:
        return {SSEC_META: self.writer}

    def read_key_ids(self) -> list[str]:
        return list(self._order)

    def known_md5(self, key_id: str) -> str:
        return self._md5[key_id]

    def silent(self, response: dict[str, Any]) -> bool:
        return response.get("SSECustomerAlgorithm") is None

    def verify(self, response: dict[str, Any], op: str, key: str) -> None:
        alg = response.get("SSECustomerAlgorithm")
        md5 = response.get("SSECustomerKeyMD5")
        if alg is None and md5 is None and op in LENIENT_OPS:
            return
        if alg != "AES256":
            raise _mismatch(op, key, "SSECustomerAlgorithm=AES256", alg)
        # SeaweedFS repeats the header after multipart ("X, X"): every copy must agree.
        values = {v.strip() for v in str(md5 or "").split(",")}
        allowed = set(self._md5.values()) if op == "head" else {self._md5[self.writer]}
        if not values or not values <= allowed:
            raise _mismatch(op, key, "SSECustomerKeyMD5 of the keyring key", "<other key>")

    def verify_read(self, response: dict[str, Any], sent: bytes | None, op: str,
                    key: str) -> None:
        """A GET/HEAD answer must show SSE-C under the key we sent (`sent`; None when reading
        without a key, allowed only with read_unencrypted). An empty `dir/` marker has nothing
        to protect and SeaweedFS stores it without SSE, so it is let through."""
        if key.endswith("/") and not int(response.get("ContentLength") or 0):
            return
        alg = response.get("SSECustomerAlgorithm")
        if alg is None and self.read_unencrypted:
            return  # SeaweedFS answers a keyed GET of an unencrypted object with the plaintext
        if sent is None:
            raise _mismatch(op, key, "an SSE-C object", alg or "no SSE-C key sent")
        if alg != "AES256":
            raise _mismatch(op, key, "SSECustomerAlgorithm=AES256", alg)
        values = {v.strip() for v in str(response.get("SSECustomerKeyMD5") or "").split(",")}
        if values != {key_md5(sent)}:
            raise _mismatch(op, key, "SSECustomerKeyMD5 of the key sent", "<other key>")

    def describe(self) -> str:
        extra = "; reads unencrypted objects" if self.read_unencrypted else ""
        return f"sse-c (keys: {', '.join(self._order)}; writes with {self.writer}{extra})"


def parse_policy(
    spec: str, *, bucket_key: bool = False, ssec_keys: list[tuple[str, bytes]] | None = None,
    read_unencrypted: bool = False,
) -> SsePolicy:
    """``none`` | ``sse-s3`` | ``sse-kms[:KEY]`` | ``dsse-kms[:KEY]`` | ``sse-c``."""
    mode, _, arg = spec.strip().partition(":")
    mode = mode.lower()
    kid = arg or None
    if mode in ("", "none", "client"):
        return SsePolicy()
    if mode == "sse-s3":
        if kid:
            raise ValueError("sse-s3 takes no key id")
        return KmsLikePolicy("sse-s3", "AES256", None, bucket_key)
    if mode == "sse-kms":
        return KmsLikePolicy("sse-kms", "aws:kms", kid, bucket_key)
    if mode == "dsse-kms":
        return KmsLikePolicy("dsse-kms", "aws:kms:dsse", kid, bucket_key)
    if mode == "sse-c":
        if kid:
            raise ValueError("sse-c takes its keys from the keyring, not from the spec")
        return SseCPolicy(list(ssec_keys or []), read_unencrypted=read_unencrypted)
    raise ValueError(
        f"unknown SSE mode {spec!r} (none, sse-s3, sse-kms[:KEY], dsse-kms[:KEY], sse-c)"
    )


def check_transport(policy: SsePolicy, endpoint_url: str | None, allow_insecure: bool) -> None:
    """SSE-C keys travel in request headers: refuse plain http:// to anything but loopback
    (AWS itself refuses SSE-C over http) unless explicitly allowed. ValueError says why."""
    endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))  # botocore's own fallbacks
    if not isinstance(policy, SseCPolicy) or not endpoint_url or allow_insecure:
        return
    url = urlsplit(endpoint_url)
    if url.scheme.lower() != "http":
        return
    host = (url.hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(
            f"sse-c over plain http to {host or endpoint_url}: the SSE-C key would cross the "
            "network unencrypted; use https (or --allow-insecure-http on a network you trust)")

