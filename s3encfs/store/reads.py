"""Reads of `ObjectStore`: HeadBucket, HEAD, ranged and whole GETs, LIST pages."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, PaginationError

from .errors import AccessDenied, NotFound, StoreError, map_error
from .objinfo import ListPage, ObjectInfo, _etag, _info, _quoted
from .request import StoreCore
from .sse import SseCPolicy


class StoreReads(StoreCore):
    """HEAD, GET and LIST, each under the SSE-C read-key candidates."""

    def _key_id(self, key: str) -> str | None:
        """SSE-C key id of `key` (HEADs it when unknown); None when not SSE-C."""
        if not isinstance(self.sse, SseCPolicy):
            return None
        known = self._keyids.get(key)
        if known is None:
            self.head(key)
            known = self._keyids.get(key)
        return known or None

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
        params = self._range_params(key, start, end, if_match)

        def attempt(args: dict[str, Any]) -> bytes:
            try:
                resp = self._call("GetObject", key, self.client.get_object, **params, **args)
            except StoreError as exc:
                if exc.code == "InvalidRange":
                    return b""
                raise
            return self._read_body(key, resp)

        return self._with_read_key(key, attempt)

    def raw_ranges(self, key: str, etag: str, size: int, part: int,
                   parallel: int) -> Generator[bytes]:
        """Object bytes [0, size) of ETag `etag` in order, `part` bytes per ranged GET,
        `parallel` of them in flight (this class's GET: a subclass's transforms are skipped)."""
        todo = iter([(o, min(o + part, size)) for o in range(0, size, part)])
        with ThreadPoolExecutor(max_workers=parallel) as pool:

            def submit(r: tuple[int, int]) -> Future[bytes]:
                return pool.submit(self.raw_get_range, key, r[0], r[1], if_match=etag)

            window = deque(submit(r) for r in itertools.islice(todo, parallel))
            try:
                while window:
                    chunk = window.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        window.append(submit(nxt))  # in flight while the caller takes chunk
                    yield chunk
            finally:
                for f in window:
                    f.cancel()

    def raw_get_range(self, key: str, start: int, end: int, *,
                      if_match: str | None = None) -> bytes:
        """Stored bytes [start, end) as S3 holds them, no subclass transform (S3EC's
        decryption) applied; a past view (store/asof.py) still pins the version."""
        return StoreReads.get_range(self, key, start, end, if_match=if_match)

    @staticmethod
    def _range_params(key: str, start: int, end: int, if_match: str | None) -> dict[str, Any]:
        """GetObject's parameters for bytes [start, end) (If-Match: the ETag we expect)."""
        cond: dict[str, Any] = {"IfMatch": _quoted(if_match)} if if_match else {}
        return {"Key": key, "Range": f"bytes={start}-{end - 1}", **cond}

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
        """The LIST pages of `prefix`, one ListObjectsV2 call each, followed by hand (not
        botocore's paginator) so that the CRT client answers them (`CrtCalls.list_objects_v2`:
        a third of botocore's CPU a page, the largest cost of a cold tree walk)."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            params["Delimiter"] = delimiter
        while True:
            self.breaker.admit("ListObjectsV2", self.bucket, prefix)
            try:
                page = self.client.list_objects_v2(**params)
                token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
                if token is not None and token == params.get("ContinuationToken"):
                    raise PaginationError(message=f"the same next token came twice: {token}")
                if page.get("IsTruncated") and not token:  # never a short listing as whole
                    raise PaginationError(message="a truncated LIST page without a next token")
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
            if token is None:
                return
            params["ContinuationToken"] = token
