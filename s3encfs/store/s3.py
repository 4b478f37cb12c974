"""Thread-safe blocking S3 access: one shared boto3 client, botocore retries, SSE on every call.

Called from `trio.to_thread.run_sync` workers. Every method maps botocore failures to
`errors.StoreError` subclasses, strips quotes from ETags, and passes write responses through
`SsePolicy.verify` so that an object stored without the promised encryption is never reported
as durable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

from .breaker import Breaker
from .errors import (
    AccessDenied,
    NotFound,
    StoreError,
    client_error_info,
    map_error,
)
from .retries import without_retry_quota
from .sse import SSEC_META, KmsLikePolicy, SseCPolicy, SsePolicy

MAX_COPY = 5 * 1024**3  # largest single CopyObject
COPY_PART = 512 * 1024**2  # part size for multipart copies of larger objects
DELETE_BATCH = 1000

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ObjectInfo:
    key: str
    size: int
    etag: str  # without quotes
    last_modified: float  # epoch seconds
    metadata: dict[str, str] | None  # lowercase names without "x-amz-meta-"; None from LIST


def parse_timestamp(value: str) -> datetime:
    """LIST's `LastModified` is ISO 8601 ("2026-11-27T03:44:01.123Z"): `fromisoformat` reads it
    ~20x faster than botocore's dateutil-based default, which was most of the CPU of parsing a
    1,000-key LIST page. Anything else (HTTP dates in headers) goes to the default."""
    if value[-1:] == "Z" and "T" in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    result: datetime = DEFAULT_TIMESTAMP_PARSER(value)
    return result


@dataclass
class ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]  # full CommonPrefixes keys ending with "/"


@dataclass
class StoreStats:
    """Counters shared by all worker threads."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    retries: int = 0
    errors: int = 0
    # wall-clock start of the first request that failed (unreachable, timeout, 5xx, after its
    # retries) since the last success: `status` shows it as s3_unreachable_since
    unreachable_since: float | None = None
    client: str = "boto3"  # the data-plane library (ObjectStore's s3_client)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self, op: str, *, up: int = 0, down: int = 0, retries: int = 0, error: bool = False,
        down_error: bool = False, started: float = 0.0,
    ) -> None:
        with self._lock:
            self.requests[op] = self.requests.get(op, 0) + 1
            self.bytes_up += up
            self.bytes_down += down
            self.retries += retries
            self.errors += int(error)
            if not error:
                self.unreachable_since = None
            elif down_error and self.unreachable_since is None:
                self.unreachable_since = started or time.time()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "retries": self.retries,
                "errors": self.errors,
                "client": self.client,
            }


class _KeyIdCache:
    """Small LRU: object key -> SSE-C key id that wrote it ("" = not SSE-C)."""

    def __init__(self, size: int = 4096):
        self._d: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: str, key_id: str) -> None:
        with self._lock:
            self._d[key] = key_id
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._d.pop(key, None)


class _RedactSecrets(logging.Filter):
    """botocore DEBUG logs print request params and signed headers: drop any SSE-C key."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        return "SSECustomerKey" not in text and "customer-key" not in text.lower()


_REDACT = _RedactSecrets()
for _name in (
    "botocore.endpoint",
    "botocore.auth",
    "botocore.hooks",
    "botocore.parsers",
    "botocore.httpchecksum",
    "botocore.regions",
    "botocore.retryhandler",
):
    logging.getLogger(_name).addFilter(_REDACT)


def _etag(value: object) -> str:
    return str(value or "").strip('"')


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _meta(raw: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (raw or {}).items()}


def _info(key: str, resp: dict[str, Any]) -> ObjectInfo:
    lm = resp.get("LastModified")
    return ObjectInfo(
        key=key,
        size=int(resp.get("ContentLength", 0)),
        etag=_etag(resp.get("ETag")),
        last_modified=lm.timestamp() if lm is not None else 0.0,
        metadata=_meta(resp.get("Metadata")),
    )


def _kms_hint(policy: SsePolicy, exc: ClientError) -> str | None:
    """Name the KMS key (or the unsupported feature) when an SSE-KMS/DSSE-KMS call fails."""
    if not isinstance(policy, KmsLikePolicy) or policy.mode not in ("sse-kms", "dsse-kms"):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    message = str(exc.response.get("Error", {}).get("Message", ""))
    key = policy.kms_key_id or "the bucket's default KMS key"
    if code in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
        if policy.mode == "dsse-kms" and ("dsse" in message.lower() or code == "NotImplemented"):
            return "this server does not support DSSE-KMS (aws:kms:dsse)"
        if policy.bucket_key and "bucket" in message.lower():
            return "this server does not support S3 Bucket Keys (drop --bucket-key)"
    if code.startswith("KMS.") or code in ("AccessDenied", "KMSAccessDenied") or \
            _status(exc) in (400, 403):
        return (f"{policy.mode} with KMS key {key}: check that it exists, is enabled, and that "
                "this identity may use it (kms:GenerateDataKey, kms:Decrypt)")
    return None


def _status(exc: ClientError) -> int | None:
    return client_error_info(exc)[1]


class ObjectStore:
    """All S3 calls of one mount: a bucket, an SSE policy and one pooled boto3 client."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        sse: SsePolicy | None = None,
        max_pool: int = 64,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 8,
        s3_client: str = "boto3",
    ) -> None:
        self.bucket = bucket
        self.sse = sse or SsePolicy()
        self.strict_sse = True  # False: SSE mismatches in responses are logged, not refused
        self._sse_warned: set[str] = set()
        self.stats = StoreStats(client=s3_client)
        self._keyids = _KeyIdCache()
        self._no_part_copy = False  # set after a 501: SeaweedFS refuses SSE-C/KMS sources
        # --object-lock: ObjectLockMode/RetainUntilDate for each new object (objectlock.py)
        self.object_lock: Callable[[], dict[str, Any]] | None = None
        self.bwlimit: Any = None  # a bwlimit.BandwidthLimit for uploads (--bwlimit)
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp)
        session = boto3.session.Session(botocore_session=core, profile_name=profile,
                                        region_name=region)
        s3cfg: Any = {"addressing_style": "path"} if endpoint_url else {}

        def config(attempts: int, ctimeout: float) -> Config:
            return Config(
                max_pool_connections=max_pool,
                connect_timeout=ctimeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": attempts},
                s3=s3cfg,
                # CRC trailers cost CPU and trip some S3-compatible servers; send when required.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )

        self.client = session.client(
            "s3", endpoint_url=endpoint_url, config=config(max_attempts, connect_timeout)
        )
        without_retry_quota(self.client)  # an outage must not leave requests unretried
        # fail fast during outages; the probe bypasses _call: StoreStats count real requests
        self.breaker = Breaker(probe=lambda: self._probe.head_bucket(Bucket=self.bucket))
        self.client.meta.events.register("needs-retry.s3", self.breaker.on_attempt)
        # Mount-time probe: fail fast instead of sitting through a full retry schedule.
        self._probe = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=config(min(2, max_attempts), min(connect_timeout, 5)),
        )
        if s3_client == "crt":  # data plane on awscrt; LIST and bucket calls stay on boto3
            from .crt import CrtClient

            crt: Any = CrtClient(self.client, session.get_credentials,
                                 max_attempts=max_attempts, connect_timeout=connect_timeout,
                                 read_timeout=read_timeout, max_connections=max_pool)
            self.client = crt
        elif s3_client != "boto3":
            raise ValueError(f"unknown s3_client {s3_client!r} (crt or boto3)")

    # -- plumbing ---------------------------------------------------------------------------

    def _call(
        self,
        op: str,
        key: str | None,
        fn: Callable[..., Any],
        *,
        up: int = 0,
        hint: str = "",
        **params: Any,
    ) -> dict[str, Any]:
        if up and self.bwlimit is not None:
            self.bwlimit.take(up)  # --bwlimit: wait for this body's share of the rate
        started = time.time()
        self.breaker.admit(op, self.bucket, key)
        try:
            resp: dict[str, Any] = fn(Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(op, key, exc, started, hint) from exc
        return self._answered(op, key, resp, up, params)

    async def _acall(self, op: str, key: str | None, fn: Callable[..., Any], *, up: int = 0,
                     **params: Any) -> dict[str, Any]:
        """`_call` of an awaitable client call (store/crt_async.py); no --bwlimit here."""
        self.breaker.admit(op, self.bucket, key)
        started = time.time()
        try:
            resp: dict[str, Any] = await fn(self.client, Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(op, key, exc, started, "") from exc
        return self._answered(op, key, resp, up, params)

    def _failed(self, op: str, key: str | None, exc: ClientError | BotoCoreError,
                started: float, hint: str) -> Exception:
        self.breaker.failed(exc)
        retries = 0
        if isinstance(exc, ClientError):
            retries = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        down = not isinstance(exc, ClientError) or (_status(exc) or 0) >= 500
        # a 404 answers a probe ("does this exist?"), it is not a failure of S3
        self.stats.record(op, retries=retries, started=started, down_error=down,
                          error=not (isinstance(exc, ClientError) and _status(exc) == 404))
        if (
            not hint
            and isinstance(self.sse, SseCPolicy)
            and op in ("PutObject", "CreateMultipartUpload")
            and isinstance(exc, ClientError)
            and _status(exc) == 403
        ):
            hint = (
                "new AWS buckets (April 2026+) block SSE-C writes unless the owner allows them"
            )
        if not hint and isinstance(exc, ClientError):
            hint = _kms_hint(self.sse, exc) or hint
        return map_error(exc, bucket=self.bucket, key=key, op=op, hint=hint)

    def _answered(self, op: str, key: str | None, resp: dict[str, Any], up: int,
                  params: dict[str, Any]) -> dict[str, Any]:
        retries = int(resp.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        self.stats.record(op, up=up, retries=retries)
        self.breaker.answered()
        if op in ("GetObject", "HeadObject") and isinstance(self.sse, SseCPolicy):
            self._verify_read(resp, op, key or "", params.get("SSECustomerKey"))
        return resp

    def _verify_read(self, resp: dict[str, Any], op: str, key: str, sent: bytes | None) -> None:
        """SSE-C: a GET/HEAD answered without SSE-C under the key we sent is refused (EIO):
        a planted unencrypted object must not be served. --allow-unverified-sse (a server that
        does not echo SSE-C) lets keyed reads through with one warning; keyless never."""
        assert isinstance(self.sse, SseCPolicy)
        if self.sse.read_unencrypted and resp.get("SSECustomerAlgorithm") is None:
            self._keyids.put(key, "")  # not SSE-C: copies of it must not send a source key
        try:
            self.sse.verify_read(resp, sent, op, key)
        except StoreError as exc:
            exc.bucket = self.bucket
            exc.args = (f"s3://{self.bucket}/{exc}",)
            if not self.strict_sse and sent is not None:
                if "read" not in self._sse_warned:
                    self._sse_warned.add("read")
                    log.warning("%s (accepted: --allow-unverified-sse)", exc)
                return
            if "Body" in resp:
                resp["Body"].close()
            raise
    def _write_args(self, body: bool = False) -> dict[str, Any]:
        """SSE headers, plus retention headers when the mount locks what it writes (AWS then
        wants a checksum on a PUT with a body: CRC32, computed by botocore)."""
        args = self.sse.write_args()
        if not self.object_lock:
            return args
        return {**args, **self.object_lock(), **({"ChecksumAlgorithm": "CRC32"} if body else {})}

    def _verify(self, resp: dict[str, Any], op: str, key: str) -> None:
        try:
            self.sse.verify(resp, op, key)
        except StoreError as exc:
            exc.bucket = self.bucket
            exc.args = (f"s3://{self.bucket}/{exc}",)
            if not self.strict_sse:
                # the user accepted a server that does not prove SSE (--allow-unverified-sse):
                # say so once per kind of write, but let the data through
                if op not in self._sse_warned:
                    self._sse_warned.add(op)
                    log.warning("%s (accepted: --allow-unverified-sse)", exc)
                return
            raise

    def _verify_written(self, resp: dict[str, Any], op: str, key: str) -> None:
        """Verify a write response; if it is silent about SSE (SeaweedFS on copy/complete),
        prove the promised SSE with a HEAD of the stored object instead."""
        self._verify(resp, op, key)
        if self.sse.silent(resp) and self.strict_sse:
            head = self._call(
                "HeadObject", key, self.client.head_object, Key=key, **self.sse.read_args(None)
            )
            self._verify(head, "head", key)

    def _read_candidates(self, key: str) -> list[str | None]:
        """SSE-C key ids to try for `key`: the remembered one, else newest first, then none."""
        if not isinstance(self.sse, SseCPolicy):
            return [None]
        order: list[str | None] = [*self.sse.read_key_ids()]
        if self.sse.read_unencrypted:  # migrations only: objects stored without SSE-C
            order.append(None)
        known = self._keyids.get(key)
        if known is not None:
            first = known or None
            order.remove(first) if first in order else None
            order.insert(0, first)
        return order

    def _with_read_key(self, key: str, attempt: Callable[[dict[str, Any]], T]) -> T:
        """Run `attempt(read_args)` with each candidate SSE-C key until one is accepted."""
        cands = self._read_candidates(key)
        first: StoreError | None = None
        for kid in cands:
            args = self.sse.read_args(kid) if kid else {}
            try:
                result = attempt(args)
            except StoreError as exc:
                if len(cands) > 1 and exc.status in (400, 403):
                    first = first or exc
                    continue
                raise
            if isinstance(self.sse, SseCPolicy) and (kid is None or self._keyids.get(key) != ""):
                self._keyids.put(key, kid or "")  # ("" stays: _verify_read saw no SSE-C)
            return result
        assert first is not None
        first.args = (f"{first} (no SSE-C key of the keyring opens this object)",)
        raise first

    def _remember(self, key: str, metadata: dict[str, str] | None) -> None:
        if isinstance(self.sse, SseCPolicy) and metadata is not None and SSEC_META in metadata:
            self._keyids.put(key, metadata[SSEC_META])

    def _key_id(self, key: str) -> str | None:
        """SSE-C key id of `key` (HEADs it when unknown); None when not SSE-C."""
        if not isinstance(self.sse, SseCPolicy):
            return None
        known = self._keyids.get(key)
        if known is None:
            self.head(key)
            known = self._keyids.get(key)
        return known or None

    # -- bucket and objects -----------------------------------------------------------------

    def check_bucket(self) -> None:
        """HeadBucket, short retry budget. BucketMissing/AccessDenied/EndpointUnreachable."""
        try:
            self._call("HeadBucket", None, self._probe.head_bucket)
        except NotFound as exc:
            from .errors import BucketMissing

            raise BucketMissing(
                f"s3://{self.bucket}: bucket does not exist ({exc.code})",
                code=exc.code,
                status=exc.status,
                bucket=self.bucket,
            ) from exc
        except AccessDenied as exc:
            why = ("no AWS credentials found - set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                   "or a profile" if exc.code == "NoCredentials" else
                   "access denied - check the credentials and the bucket policy")
            raise AccessDenied(
                f"s3://{self.bucket}: {why} ({exc.code})",
                code=exc.code,
                status=exc.status,
                bucket=self.bucket,
            ) from exc

    def head(self, key: str) -> ObjectInfo:
        resp = self._with_read_key(
            key, lambda a: self._call("HeadObject", key, self.client.head_object, Key=key, **a)
        )
        info = _info(key, resp)
        self._remember(key, info.metadata)
        return info

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if end <= start:
            return b""
        cond: dict[str, Any] = {"IfMatch": _quoted(if_match)} if if_match else {}

        def attempt(args: dict[str, Any]) -> bytes:
            try:
                resp = self._call(
                    "GetObject",
                    key,
                    self.client.get_object,
                    Key=key,
                    Range=f"bytes={start}-{end - 1}",
                    **cond,
                    **args,
                )
            except StoreError as exc:
                if exc.code == "InvalidRange":
                    return b""
                raise
            return self._read_body(key, resp)

        return self._with_read_key(key, attempt)

    def _read_body(self, key: str, resp: dict[str, Any]) -> bytes:
        try:
            data: bytes = resp["Body"].read()
        except (BotoCoreError, OSError) as exc:
            self.stats.record("GetObjectBody", error=True)
            raise map_error(exc, bucket=self.bucket, key=key, op="GetObject(body)") from exc
        self.stats.record("GetObjectBody", down=len(data))
        return data

    def get(self, key: str, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        cond: dict[str, Any] = {"IfMatch": _quoted(if_match)} if if_match else {}

        def attempt(args: dict[str, Any]) -> tuple[bytes, ObjectInfo]:
            resp = self._call("GetObject", key, self.client.get_object, Key=key, **cond, **args)
            data = self._read_body(key, resp)
            info = _info(key, resp)
            info.size = len(data)
            return data, info

        data, info = self._with_read_key(key, attempt)
        self._remember(key, info.metadata)
        return data, info

    def list_pages(self, prefix: str, delimiter: str | None = "/") -> Generator[ListPage]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = delimiter
        pages = self.client.get_paginator("list_objects_v2").paginate(**params)
        it = iter(pages)
        while True:
            self.breaker.admit("ListObjectsV2", self.bucket, prefix)
            try:
                page = next(it)
            except StopIteration:
                return
            except (ClientError, BotoCoreError) as exc:
                self.breaker.failed(exc)
                self.stats.record("ListObjectsV2", error=True)
                raise map_error(exc, bucket=self.bucket, key=prefix, op="ListObjectsV2") from exc
            self.stats.record(
                "ListObjectsV2",
                retries=int(page.get("ResponseMetadata", {}).get("RetryAttempts", 0)),
            )
            self.breaker.answered()
            objs = [
                ObjectInfo(
                    o["Key"],
                    int(o.get("Size", 0)),
                    _etag(o.get("ETag")),
                    o["LastModified"].timestamp() if o.get("LastModified") else 0.0,
                    None,
                )
                for o in page.get("Contents", []) or []
            ]
            prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", []) or []]
            yield ListPage(objs, prefixes)

    def put(
        self,
        key: str,
        body: bytes,
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        params = self._put_params(key, body, metadata, if_match, if_none_match, content_type)
        resp = self._call("PutObject", key, self.client.put_object, up=len(body), **params)
        return self._put_done(key, body, resp)

    @property
    def awaitable_puts(self) -> bool:
        """`aput` can run: the CRT data plane, and no --bwlimit (whose wait blocks)."""
        if self.stats.client != "crt" or self.bwlimit is not None:
            return False
        if type(self).put is not ObjectStore.put:
            return False  # a store that transforms a PUT (S3EC encrypts in put) never skips it
        from .crt import CrtClient

        return isinstance(self.client, CrtClient)  # not wrapped (tests record requests)

    async def aput(self, key: str, body: bytes, metadata: dict[str, str], *,
                   if_match: str | None = None, if_none_match: bool = False) -> str:
        """`put`, awaited from trio with no worker thread (only when `awaitable_puts`)."""
        from s3encfs.store import crt_async

        params = self._put_params(key, body, metadata, if_match, if_none_match, None)
        resp = await self._acall("PutObject", key, crt_async.put_object, up=len(body),
                                 **params)
        return self._put_done(key, body, resp)

    def _put_params(self, key: str, body: bytes, metadata: dict[str, str],
                    if_match: str | None, if_none_match: bool,
                    content_type: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Key": key,
            "Body": body,
            "Metadata": {**metadata, **self.sse.write_metadata()},
        }
        if if_match:
            params["IfMatch"] = _quoted(if_match)
        if if_none_match:
            params["IfNoneMatch"] = "*"
        if content_type:
            params["ContentType"] = content_type
        return {**params, **self._write_args(body=True)}

    def _put_done(self, key: str, body: bytes, resp: dict[str, Any]) -> str:
        if key.endswith("/") and not body and self.sse.silent(resp):
            # SeaweedFS turns an empty "dir/" marker into a filer directory and ignores SSE on
            # it. Such a marker has no body to protect (SSE never covers user metadata), so a
            # silent answer is accepted here; the mount-time canary still proves real objects.
            log.debug("%s: directory marker stored without SSE headers in the response", key)
        else:
            self._verify(resp, "put", key)
        self._after_write(key)
        return _etag(resp.get("ETag"))

    def _after_write(self, key: str) -> None:
        if isinstance(self.sse, SseCPolicy):
            self._keyids.put(key, self.sse.writer)

    def copy(
        self,
        src: str,
        dst: str,
        *,
        metadata: dict[str, str] | None = None,
        if_match: str | None = None,
    ) -> str:
        """Server-side copy. `if_match` is the ETag the *source* must still have.

        metadata None keeps the source's metadata (COPY directive); under SSE-C, or onto the
        same key, the source metadata is re-sent with REPLACE so the key-id tag stays right."""
        src_kid = self._key_id(src)
        src_info: ObjectInfo | None = None
        write_meta = self.sse.write_metadata()
        if metadata is None and (write_meta or src == dst):
            src_info = self.head(src)
            metadata = {k: v for k, v in (src_info.metadata or {}).items()}
        params: dict[str, Any] = {"Key": dst, "CopySource": {"Bucket": self.bucket, "Key": src}}
        if metadata is None:
            params["MetadataDirective"] = "COPY"
        else:
            params["MetadataDirective"] = "REPLACE"
            params["Metadata"] = {**metadata, **write_meta}
        if if_match:
            params["CopySourceIfMatch"] = _quoted(if_match)
        params.update(self._write_args())
        params.update(self.sse.copy_source_args(src_kid) if src_kid else {})
        try:
            resp = self._call("CopyObject", dst, self.client.copy_object, **params)
        except StoreError as exc:
            if exc.code not in ("InvalidRequest", "EntityTooLarge", "InvalidArgument"):
                raise
            if src_info is None:
                src_info = self.head(src)
            if src_info.size <= MAX_COPY:
                raise
            return self._multipart_copy(src, dst, src_info, params.get("Metadata"), if_match)
        self._after_write(dst)
        self._verify_written(resp, "copy", dst)
        return _etag(resp.get("CopyObjectResult", {}).get("ETag"))

    def _multipart_copy(
        self,
        src: str,
        dst: str,
        info: ObjectInfo,
        metadata: dict[str, str] | None,
        if_match: str | None,
    ) -> str:
        meta = metadata if metadata is not None else dict(info.metadata or {})
        upload_id = self.create_multipart(dst, meta)
        try:
            ranges = [
                (n + 1, s, min(s + COPY_PART, info.size))
                for n, s in enumerate(range(0, info.size, COPY_PART))
            ]
            with ThreadPoolExecutor(max_workers=4) as pool:
                etags = list(
                    pool.map(
                        lambda r: self.upload_part_copy(
                            dst, upload_id, r[0], src, r[1], r[2], src_etag=if_match or info.etag
                        ),
                        ranges,
                    )
                )
            return self.complete_multipart(
                dst, upload_id, [(r[0], e) for r, e in zip(ranges, etags, strict=False)]
            )
        except BaseException:
            self.abort_multipart(dst, upload_id)
            raise

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self._call("DeleteObject", key, self.client.delete_object, Key=key)
        self._keyids.drop(key)

    def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            resp = self._call(
                "DeleteObjects",
                batch[0] if batch else None,
                self.client.delete_objects,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            for k in batch:
                self._keyids.drop(k)
            errs = [e for e in resp.get("Errors", []) or [] if e.get("Code") != "NoSuchKey"]
            if errs:
                first = errs[0]
                raise StoreError(
                    f"s3://{self.bucket}/{first.get('Key')}: DeleteObjects failed for {len(errs)} "
                    f"key(s): {first.get('Code')} - {first.get('Message', '')}",
                    code=str(first.get("Code")),
                    key=first.get("Key"),
                    bucket=self.bucket,
                )

    # -- multipart ----------------------------------------------------------------------------

    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        resp = self._call(
            "CreateMultipartUpload",
            key,
            self.client.create_multipart_upload,
            Key=key,
            Metadata={**metadata, **self.sse.write_metadata()},
            **self._write_args(),
        )
        self._verify(resp, "create_multipart", key)
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, part_number: int, body: bytes) -> str:
        resp = self._call(
            "UploadPart",
            key,
            self.client.upload_part,
            up=len(body),
            Key=key,
            UploadId=upload_id,
            PartNumber=part_number,
            Body=body,
            **self.sse.part_args(),
        )
        self._verify(resp, "upload_part", key)
        return _etag(resp.get("ETag"))

    def upload_part_copy(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        src: str,
        start: int,
        end: int,
        *,
        src_etag: str | None = None,
    ) -> str:
        if end <= start:
            return self.upload_part(key, upload_id, part_number, b"")
        src_kid = self._key_id(src)
        if not self._no_part_copy:
            params: dict[str, Any] = {
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
                "CopySource": {"Bucket": self.bucket, "Key": src},
                "CopySourceRange": f"bytes={start}-{end - 1}",
            }
            if src_etag:
                params["CopySourceIfMatch"] = _quoted(src_etag)
            params.update(self.sse.part_args())
            params.update(self.sse.copy_source_args(src_kid) if src_kid else {})
            try:
                resp = self._call("UploadPartCopy", key, self.client.upload_part_copy, **params)
            except StoreError as exc:
                if exc.status != 501 and exc.code != "NotImplemented":
                    raise
                self._no_part_copy = self.sse.mode != "none"
                log.info("UploadPartCopy not implemented for %s; copying through the client", src)
            else:
                self._verify(resp, "upload_part_copy", key)
                return _etag(resp.get("CopyPartResult", {}).get("ETag"))
        data = self.get_range(src, start, end, if_match=src_etag)
        return self.upload_part(key, upload_id, part_number, data)

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        params: dict[str, Any] = {
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {
                "Parts": [{"PartNumber": n, "ETag": _quoted(e)} for n, e in sorted(parts)]
            },
        }
        if if_match:
            params["IfMatch"] = _quoted(if_match)
        if if_none_match:
            params["IfNoneMatch"] = "*"
        params.update(self.sse.part_args())
        resp = self._call(
            "CompleteMultipartUpload", key, self.client.complete_multipart_upload, **params
        )
        self._after_write(key)
        self._verify_written(resp, "complete_multipart", key)
        return _etag(resp.get("ETag"))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._call(
                "AbortMultipartUpload",
                key,
                self.client.abort_multipart_upload,
                Key=key,
                UploadId=upload_id,
            )

    def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, float]]:
        out: list[tuple[str, str, float]] = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                self.stats.record("ListMultipartUploads")
                for u in page.get("Uploads", []) or []:
                    ini = u.get("Initiated")
                    out.append((u["Key"], u["UploadId"], ini.timestamp() if ini else 0.0))
        except (ClientError, BotoCoreError) as exc:
            self.stats.record("ListMultipartUploads", error=True)
            raise map_error(exc, bucket=self.bucket, key=prefix, op="ListMultipartUploads") from exc
        return out
