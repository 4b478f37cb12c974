"""The data plane on the AWS Common Runtime (awscrt's `S3Client`, the aws-c-s3 engine).

`CrtClient` stands in for the boto3 client inside `ObjectStore` (``--s3-client crt``): it answers
the data-plane calls (HEAD/GET/PUT of objects, multipart, copies, deletes) with the same
parameters and the same response dicts as boto3, and raises the same botocore exceptions, so the
store's SSE verification, SSE-C key fallback, conditional writes, error mapping and request
counters run unchanged. Anything else (LIST paginators, bucket calls, control-plane lookups) is
passed to the boto3 client it wraps.

Why: botocore spends ~1.5 ms of Python per small request on serialising, signing and parsing;
aws-c-s3 signs, pools connections and retries in C outside the GIL (~0.4 ms per PUT measured
here, docs/BENCHMARKS.md).

How it behaves like the boto3 client:
- credentials come from botocore's own chain (env, profile files, SSO, instance roles): fixed
  ones (env, a profile's keys) are handed to the CRT once; refreshable ones go through a
  delegate provider that asks botocore for frozen credentials on every signing, so they
  refresh exactly as under boto3;
- retries: aws-c-s3's standard retry strategy (exponential backoff with jitter, 5xx, throttling,
  connection failures) with ``max_attempts`` retries (botocore's ``max_attempts`` counts
  retries too: 1 + 8 tries by default); a request that receives no byte for
  ``read_timeout`` seconds is cancelled and retried here with backoff (aws-c-s3 has no read
  timeout of its own), like botocore's read timeout;
- the calls block the calling worker thread on the CRT future (the store is synchronous); the
  request itself runs on the CRT's event-loop threads. store/crt_async.py awaits the same
  requests from trio with no thread; crt_exchange.py collects responses and maps errors;
  crt_calls.py turns each boto3-named call into one request and its answer into boto3's dict.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt import auth, http
from awscrt import s3 as crt_s3
from awscrt.exceptions import AwsCrtError
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from . import crt_wire as wire
from .bodies import BufferStream, FileRange
from .crt_calls import GET_PART_BYTES, CrtCalls
from .crt_exchange import Exchange, client_error, s3_answer_error, transport_error

log = logging.getLogger(__name__)



class CrtClient(CrtCalls):
    """boto3-compatible data-plane calls on one `awscrt.s3.S3Client`, shared by all threads."""

    def __init__(
        self,
        fallback: Any,
        credentials: Any,
        *,
        max_attempts: int = 8,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_connections: int | None = None,
    ) -> None:
        """`fallback`: the boto3 client (endpoint, region, addressing, control plane);
        `credentials`: a callable returning botocore credentials (or None), called lazily."""
        self._fallback = fallback
        self._resolve_credentials = credentials
        self._creds: Any = None
        self._creds_lock = threading.Lock()
        self.read_timeout = read_timeout
        self.max_retries = max(0, max_attempts)  # botocore's meaning: retries after the first
        url = urlsplit(fallback.meta.endpoint_url)
        self.endpoint_url = fallback.meta.endpoint_url
        self._tls = url.scheme == "https"
        self._host = url.netloc
        self._base = url.path.rstrip("/")
        addressing = (getattr(fallback.meta.config, "s3", None) or {}).get("addressing_style")
        self._virtual = addressing != "path" and self._host.endswith("amazonaws.com")
        region = fallback.meta.region_name or "us-east-1"
        signing = crt_s3.create_default_s3_signing_config(
            region=region, credential_provider=self._credentials_provider())
        self._client = self._s3_client(region, signing, connect_timeout, max_connections)

    def _credentials_provider(self) -> Any:
        creds = self._botocore_credentials()  # eagerly: a mount needs them at once anyway
        if creds is not None and not isinstance(creds, RefreshableCredentials):
            # env or a profile file: fixed for the process, so no Python call per signing
            f = creds.get_frozen_credentials()
            return auth.AwsCredentialsProvider.new_static(f.access_key, f.secret_key, f.token)
        # refreshable (SSO, roles, credential_process, IMDS): botocore refreshes them
        return auth.AwsCredentialsProvider.new_delegate(self._frozen)

    def _s3_client(self, region: str, signing: Any, connect_timeout: float,
                   max_connections: int | None) -> Any:
        return crt_s3.S3Client(
            region=region,
            tls_mode=(crt_s3.S3RequestTlsMode.ENABLED if self._tls
                      else crt_s3.S3RequestTlsMode.DISABLED),
            signing_config=signing,
            retry_config=crt_s3.S3RetryConfig(
                max_retries=self.max_retries,
                retry_mode=(crt_s3.S3RetryMode.STANDARD if self.max_retries > 0
                            else crt_s3.S3RetryMode.NONE),
            ),
            connect_timeout_ms=max(1, int(connect_timeout * 1000)),
            max_active_connections_override=max_connections,
            part_size=GET_PART_BYTES,
        )

    def __getattr__(self, name: str) -> Any:
        # everything that is not data plane (paginators, bucket calls, meta) stays on boto3
        return getattr(self._fallback, name)

    # -- credentials ----------------------------------------------------------------------

    def _botocore_credentials(self) -> Any:
        with self._creds_lock:
            if self._creds is None:
                self._creds = self._resolve_credentials()
            return self._creds

    def _frozen(self) -> auth.AwsCredentials:
        """Called by the CRT for every signing: botocore refreshes expiring credentials here."""
        creds = self._botocore_credentials()
        if creds is None:
            raise NoCredentialsError()
        f = creds.get_frozen_credentials()
        return auth.AwsCredentials(f.access_key, f.secret_key, f.token)

    # -- one request --------------------------------------------------------------------------

    def _target(self, bucket: str, key: str | None) -> tuple[str, str]:
        """(Host header, path) for a bucket (and key)."""
        tail = "/" + wire.quote_key(key) if key is not None else "/"
        if self._virtual and "." not in bucket:
            return f"{bucket}.{self._host}", self._base + tail
        return self._host, f"{self._base}/{quote(bucket, safe='')}" + (
            tail if key is not None else "")

    def _send(
        self,
        op: str,
        method: str,
        bucket: str,
        key: str | None,
        *,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | bytearray | FileRange | None = None,
        split: bool = False,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host, path = self._address(bucket, key, query)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(op, method, host, path, headers or [], body, split)
            except ReadTimeoutError:
                if attempt > self.max_retries:
                    raise
                time.sleep(self.read_timeout_backoff(attempt))
                log.debug("%s %s: no data for %.0fs, retrying", op, path, self.read_timeout)

    def _address(self, bucket: str, key: str | None, query: str) -> tuple[str, str]:
        if self._botocore_credentials() is None:
            raise NoCredentialsError()
        host, path = self._target(bucket, key)
        return host, path + ("?" + query if query else "")

    @staticmethod
    def read_timeout_backoff(attempt: int) -> float:
        return random.uniform(0, min(20.0, 0.5 * 2 ** (attempt - 1)))

    def _start(
        self,
        op: str,
        method: str,
        host: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | bytearray | FileRange | None,
        split: bool = False,
    ) -> tuple[Any, Exchange, float]:
        """Start one request: (the CRT request, its exchange, its idle limit in seconds)."""
        h = http.HttpHeaders([("Host", host), *headers])
        stream = None
        if body is not None:
            h.add("Content-Length", str(len(body)))
            stream = (io.BytesIO(body) if isinstance(body, bytes) else
                      body.stream() if isinstance(body, FileRange) else BufferStream(body))
        elif method in ("PUT", "POST"):
            h.add("Content-Length", "0")
        ex = Exchange()
        try:
            request = self._client.make_request(
                type=crt_s3.S3RequestType.GET_OBJECT if split else crt_s3.S3RequestType.DEFAULT,
                request=http.HttpRequest(method, path, h, stream),
                operation_name=op,
                on_headers=ex.on_headers,
                on_body=ex.on_body,
                on_done=ex.on_done,
            )
        except AwsCrtError as exc:
            raise self._transport_error(exc) from None
        # the idle limit grows with the upload: no callback fires while a body is being sent
        return request, ex, self.read_timeout + (len(body) / (1 << 20) if body else 0.0)

    def _once(
        self,
        op: str,
        method: str,
        host: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | bytearray | FileRange | None,
        split: bool = False,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        request, ex, idle_limit = self._start(op, method, host, path, headers, body, split)
        fut: Future[None] = request.finished_future
        while True:
            remaining = ex.last + idle_limit - time.monotonic()
            try:
                fut.result(timeout=max(0.05, remaining))
                break
            except FutureTimeout:
                if time.monotonic() - ex.last < idle_limit:
                    continue
                self._abandon(request)
            except Exception:
                break  # a failed request: _result raises its error
        return self._result(op, method, request, ex)

    def _abandon(self, request: Any) -> None:
        """No byte for the idle limit: cancel the request; ReadTimeoutError (retried)."""
        request.cancel()
        try:
            request.finished_future.result(timeout=30)
        except Exception:
            pass
        raise ReadTimeoutError(endpoint_url=self.endpoint_url) from None

    def _result(self, op: str, method: str, request: Any,
                ex: Exchange) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) of a finished request, or its error as botocore's."""
        try:
            request.finished_future.result(timeout=0)
        except crt_s3.S3ResponseError as exc:
            raise client_error(op, exc.status_code, exc.headers or [], exc.body) from None
        except AwsCrtError as exc:
            answer = s3_answer_error(op, exc, ex)
            raise (answer or self._transport_error(exc)) from None
        data = ex.body()
        expected = next((v for n, v in ex.headers if n.lower() == "content-length"), None)
        if method != "HEAD" and expected is not None and int(expected) != len(data):
            raise ResponseStreamingError(
                error=f"{op}: body has {len(data)} of {expected} bytes")
        return ex.status, ex.headers, data

    def _transport_error(self, exc: AwsCrtError) -> Exception:
        return transport_error(exc, self.endpoint_url)
