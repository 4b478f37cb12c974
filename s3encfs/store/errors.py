"""Exceptions of the S3 access layer, and the one place botocore errors are translated.

Every message is one line naming ``s3://bucket/key``, the operation and the S3 error code, so a
sysadmin reading a journal line knows what failed without a traceback.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3encfs.codec import IntegrityError


class StoreError(Exception):
    """Any failure talking to S3. ``code`` is the S3 error code (or a short local one)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        key: str | None = None,
        bucket: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.key = key
        self.bucket = bucket


class DamagedLongName(StoreError, IntegrityError):
    """A hashed long name (store/longnames.py) whose side object is missing, fails its HMAC or
    belongs to another directory. A StoreError too, so the listing that met it fails with EIO
    (as a failed LIST does) instead of hiding the name."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message, code="DamagedLongName", key=key)


class NotFound(StoreError):
    """The object (or upload) does not exist."""


class AccessDenied(StoreError):
    """403: credentials, bucket policy, or (SSE-C) the wrong customer key."""


class PreconditionFailed(StoreError):
    """412: If-Match / If-None-Match did not hold (someone else changed the object)."""


class UploadRestart(StoreError):
    """This multipart upload cannot be completed as sent; send the whole object again, in a new
    upload, from its source (S3EC: a part re-sent after the single GCM stream encrypted it, a
    failed part send, or a part list that does not continue the parts encrypted so far)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message, code="UploadRestart", key=key)


class BucketMissing(StoreError):
    """The bucket does not exist."""


class EndpointUnreachable(StoreError):
    """No connection to the endpoint (refused, DNS, timeout) after botocore's retries."""


class SseMismatch(StoreError):
    """The server's response did not carry the server-side encryption the policy demands."""


class SseNotEnforced(StoreError):
    """The mount-time canary proved the server ignores the requested SSE mode."""


def where(bucket: str, key: str | None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"


def client_error_info(exc: ClientError) -> tuple[str, int | None, str]:
    """(code, HTTP status, message) of a botocore ClientError."""
    err = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    status = meta.get("HTTPStatusCode")
    code = str(err.get("Code") or status or "Unknown")
    return code, status, str(err.get("Message") or "")


_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchUpload", "NoSuchVersion"}
_DENIED_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
}


def _from_client_error(exc: ClientError, loc: str, op: str, tail: str, *, bucket: str,
                       key: str | None) -> StoreError:
    """An S3 error response: the class by code, else by HTTP status."""
    code, status, msg = client_error_info(exc)
    text = f"{loc}: {op} failed: {status} {code}" + (f" - {msg}" if msg else "") + tail
    cls: type[StoreError] = StoreError
    if code == "NoSuchBucket":
        cls = BucketMissing
    elif code in _NOT_FOUND_CODES or status == 404:
        cls = NotFound
    elif code in _DENIED_CODES or status == 403:
        cls = AccessDenied
    elif code in {"PreconditionFailed", "412"} or status == 412:
        cls = PreconditionFailed
    return cls(text, code=code, status=status, key=key, bucket=bucket)


def map_error(
    exc: Exception, *, bucket: str, key: str | None, op: str, hint: str = ""
) -> StoreError:
    """Translate a botocore exception into the matching StoreError subclass."""
    loc = where(bucket, key)
    tail = f" ({hint})" if hint else ""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        return _from_client_error(exc, loc, op, tail, bucket=bucket, key=key)
    if isinstance(exc, (BotoConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return EndpointUnreachable(
            f"{loc}: {op} failed: endpoint unreachable: {exc}{tail}",
            code="EndpointUnreachable",
            key=key,
            bucket=bucket,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDenied(
            f"{loc}: {op} failed: no usable AWS credentials ({exc}){tail}",
            code="NoCredentials",
            key=key,
            bucket=bucket,
        )
    if isinstance(exc, BotoCoreError):
        return StoreError(
            f"{loc}: {op} failed: {type(exc).__name__}: {exc}{tail}",
            code=type(exc).__name__,
            key=key,
            bucket=bucket,
        )
    return StoreError(f"{loc}: {op} failed: {exc!r}{tail}", code="Local", key=key, bucket=bucket)
