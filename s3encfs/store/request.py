"""The request core of `ObjectStore`: the boto3 (or CRT) client, one call with its counters,
error mapping and circuit breaker, SSE verification of responses, SSE-C read-key candidates.

Everything a read or a write sends goes through `_call` (blocking, a worker thread) or
`_acall` (awaited from trio on the CRT), which share `_failed`/`_answered`: the same counters,
breaker feed and SSE-C read verification for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .breaker import Breaker
from .errors import StoreError, client_error_info, map_error
from .objinfo import _KeyIdCache, parse_timestamp
from .retries import without_retry_quota
from .sse import SSEC_META, KmsLikePolicy, SseCPolicy, SsePolicy
from .stats import StoreStats

log = logging.getLogger("s3encfs.store.s3")
T = TypeVar("T")


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


def _session(profile: str | None, region: str | None) -> Any:
    """A boto3 session whose timestamps parse the fast way (parse_timestamp)."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=core, profile_name=profile,
                                 region_name=region)


def _boto_config(max_pool: int, ctimeout: float, read_timeout: float, attempts: int,
                 s3cfg: Any) -> Config:
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


def _crt_client(fallback: Any, session: Any, max_attempts: int, connect_timeout: float,
                read_timeout: float, max_pool: int) -> Any:
    from .crt import CrtClient

    return CrtClient(fallback, session.get_credentials, max_attempts=max_attempts,
                     connect_timeout=connect_timeout, read_timeout=read_timeout,
                     max_connections=max_pool)


class StoreCore:
    """The client, the policy, one request with everything around it (see module doc)."""

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
        session = _session(profile, region)
        s3cfg: Any = {"addressing_style": "path"} if endpoint_url else {}
        self.client = session.client("s3", endpoint_url=endpoint_url, config=_boto_config(
            max_pool, connect_timeout, read_timeout, max_attempts, s3cfg))
        without_retry_quota(self.client)  # an outage must not leave requests unretried
        # fail fast during outages; the probe bypasses _call: StoreStats count real requests
        self.breaker = Breaker(probe=lambda: self._probe.head_bucket(Bucket=self.bucket))
        self.client.meta.events.register("needs-retry.s3", self.breaker.on_attempt)
        # Mount-time probe: fail fast instead of sitting through a full retry schedule.
        self._probe = session.client("s3", endpoint_url=endpoint_url, config=_boto_config(
            max_pool, min(connect_timeout, 5), read_timeout, min(2, max_attempts), s3cfg))
        if s3_client == "crt":  # data plane on awscrt; LIST and bucket calls stay on boto3
            self.client = _crt_client(self.client, session, max_attempts, connect_timeout,
                                      read_timeout, max_pool)
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
        except ClientError as exc:  # an answer: no probe, nothing blocks
            raise self._failed(op, key, exc, started, "") from exc
        except BotoCoreError as exc:
            # S3 did not answer: the breaker may ask S3 (a blocking HeadBucket) before it
            # opens, which must not stall the trio thread that answers FUSE
            import trio

            raise await trio.to_thread.run_sync(self._failed, op, key, exc, started,
                                                "") from exc
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

    def _after_write(self, key: str) -> None:
        if isinstance(self.sse, SseCPolicy):
            self._keyids.put(key, self.sse.writer)

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
                first = self._refused_read_key(cands, exc, first)
                continue
            self._read_key_opened(key, kid)
            return result
        raise self._no_read_key(first)

    @staticmethod
    def _refused_read_key(cands: list[str | None], exc: StoreError,
                          first: StoreError | None) -> StoreError:
        """One SSE-C candidate refused with 400/403 while others remain: the first such
        refusal (what `_no_read_key` reports); any other error is raised as it is."""
        if len(cands) > 1 and exc.status in (400, 403):
            return first or exc
        raise exc

    def _read_key_opened(self, key: str, kid: str | None) -> None:
        """`kid` (None: no SSE-C key) opened `key`: try it first next time."""
        if isinstance(self.sse, SseCPolicy) and (kid is None or self._keyids.get(key) != ""):
            self._keyids.put(key, kid or "")  # ("" stays: _verify_read saw no SSE-C)

    @staticmethod
    def _no_read_key(first: StoreError | None) -> StoreError:
        """The error of a read that no candidate SSE-C key opened (the first refusal)."""
        assert first is not None
        first.args = (f"{first} (no SSE-C key of the keyring opens this object)",)
        return first

    def _remember(self, key: str, metadata: dict[str, str] | None) -> None:
        if isinstance(self.sse, SseCPolicy) and metadata is not None and SSEC_META in metadata:
            self._keyids.put(key, metadata[SSEC_META])
