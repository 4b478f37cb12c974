"""One HTTP exchange on the CRT, as boto3 would report it: the callbacks that collect a
response (status, headers, body, time of the last byte), the ``Body`` object get_object hands
back, and the mapping of S3 and CRT errors to the botocore exceptions the store expects."""

from __future__ import annotations

import time
from typing import Any

from awscrt.exceptions import AwsCrtError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
)

from . import crt_wire as wire

# CRT error names that mean "could not talk to the endpoint" (map to EndpointUnreachable).
_UNREACHABLE = ("AWS_IO_SOCKET", "AWS_IO_DNS", "AWS_IO_TLS", "AWS_ERROR_HTTP_CONNECTION",
                "AWS_ERROR_HTTP_SERVER_CLOSED", "AWS_IO_CHANNEL")


# aws-c-s3 errors that stand for an S3 answer: (S3 error code, HTTP status)
_S3_ANSWERS = {"AWS_ERROR_S3_SLOW_DOWN": ("SlowDown", 503),
               "AWS_ERROR_S3_INTERNAL_ERROR": ("InternalError", 500)}


class Body:
    """The ``Body`` of a get_object response: the bytes already read, with boto3's interface."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def read(self, amt: int | None = None) -> bytes:
        if self._pos == 0 and amt is None:
            self._pos = len(self._data)
            return self._data
        end = len(self._data) if amt is None else min(len(self._data), self._pos + amt)
        out = self._data[self._pos:end]
        self._pos = end
        return out

    def close(self) -> None:
        self._data = b""


class Exchange:
    """One HTTP exchange's callbacks: status, headers, body, and the time of the last byte."""

    __slots__ = ("chunks", "done", "headers", "last", "size", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.last = time.monotonic()
        self.done: tuple[int | None, Any, Any] | None = None  # status, headers, body at the end

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status = status_code
        self.headers = headers
        self.last = time.monotonic()

    def on_body(self, chunk: Any, offset: int, **_: Any) -> None:
        self.chunks.append(bytes(chunk))
        self.size += len(chunk)
        self.last = time.monotonic()

    def on_done(self, status_code: int | None = None, error_headers: Any = None,
                error_body: Any = None, **_: Any) -> None:
        self.done = (status_code, error_headers, error_body)

    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


def client_error(op: str, status: int | None, headers: list[tuple[str, str]],
                 body: bytes | None) -> ClientError:
    """botocore's ClientError for an S3 error answer (XML body, or the status alone)."""
    err = wire.error_from_xml(body, status) or {
        "Code": str(status or "Unknown"), "Message": _reason(status)}
    meta = wire.response_fields(status or 0, headers)["ResponseMetadata"]
    response: Any = {"Error": err, "ResponseMetadata": meta}
    return ClientError(response, op)


def transport_error(exc: AwsCrtError, endpoint_url: str) -> Exception:
    """The botocore exception for a CRT error that is not an S3 answer."""
    name = exc.name or ""
    if name.startswith("AWS_AUTH") or "CREDENTIALS" in name:
        return NoCredentialsError()
    if name.startswith(_UNREACHABLE) or "TIMEOUT" in name:
        return EndpointConnectionError(endpoint_url=f"{endpoint_url} ({name})")
    return ConnectionClosedError(endpoint_url=f"{endpoint_url} ({name}: {exc.message})")


def s3_answer_error(op: str, exc: AwsCrtError, ex: Exchange) -> ClientError | None:
    """An S3 answer that aws-c-s3 reports as its own error (after its retries of a 503
    SlowDown / 500): the S3 error, as botocore raises it; None if it is no S3 answer."""
    status = (ex.done[0] if ex.done else None) or ex.status or None
    known = _S3_ANSWERS.get(exc.name or "")
    if not (known or (status and status >= 300)):
        return None
    code, default = known or (str(status), status)
    body = (ex.done[2] if ex.done else None) or (
        f"<Error><Code>{code}</Code><Message>{exc.message}</Message></Error>".encode())
    return client_error(op, status or default, ex.headers, body)

def _reason(status: int | None) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status or 0).phrase
    except ValueError:
        return ""
