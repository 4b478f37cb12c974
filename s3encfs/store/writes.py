"""Writes of `ObjectStore`: PUT (blocking and awaited), server-side copy, deletes."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import NotFound, StoreError, UploadRestart
from .multipart import StoreMultipart
from .objinfo import ObjectInfo, _etag, _quoted

MAX_COPY = 5 * 1024**3  # largest single CopyObject
COPY_PART = 512 * 1024**2  # part size for multipart copies of larger objects
DELETE_BATCH = 1000

log = logging.getLogger("s3encfs.store.s3")


class StoreWrites(StoreMultipart):
    max_copy = MAX_COPY  # a bigger source is copied part by part (tests lower both)
    copy_part = COPY_PART

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
        if type(self).put is not StoreWrites.put and type(self).aput is StoreWrites.aput:
            return False  # a store that transforms a PUT must transform aput too (S3EC does)
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
        if metadata is None and (self.sse.write_metadata() or src == dst):
            src_info = self.head(src)
            metadata = {k: v for k, v in (src_info.metadata or {}).items()}
        params = self._copy_params(src, dst, src_kid, metadata, if_match)
        try:
            resp = self._call("CopyObject", dst, self.client.copy_object, **params)
        except StoreError as exc:
            if exc.code not in ("InvalidRequest", "EntityTooLarge", "InvalidArgument"):
                raise
            if src_info is None:
                src_info = self.head(src)
            if src_info.size <= self.max_copy:
                raise
            return self._multipart_copy(src, dst, src_info, params.get("Metadata"), if_match)
        self._after_write(dst)
        self._verify_written(resp, "copy", dst)
        return _etag(resp.get("CopyObjectResult", {}).get("ETag"))

    def _copy_params(self, src: str, dst: str, src_kid: str | None,
                     metadata: dict[str, str] | None, if_match: str | None) -> dict[str, Any]:
        """CopyObject's arguments: metadata directive, source condition, SSE both sides."""
        params: dict[str, Any] = {"Key": dst, "CopySource": {"Bucket": self.bucket, "Key": src}}
        if metadata is None:
            params["MetadataDirective"] = "COPY"
        else:
            params["MetadataDirective"] = "REPLACE"
            params["Metadata"] = {**metadata, **self.sse.write_metadata()}
        if if_match:
            params["CopySourceIfMatch"] = _quoted(if_match)
        params.update(self._write_args())
        params.update(self.sse.copy_source_args(src_kid) if src_kid else {})
        return params

    def _multipart_copy(
        self,
        src: str,
        dst: str,
        info: ObjectInfo,
        metadata: dict[str, str] | None,
        if_match: str | None,
    ) -> str:
        meta = metadata if metadata is not None else dict(info.metadata or {})
        try:
            return self._copy_parts(src, dst, info, meta, if_match)
        except UploadRestart as exc:
            # S3EC: a part failed to send after the upload's one GCM stream encrypted it, and
            # that key may not encrypt it again; a new upload (a fresh data key) may, once
            log.warning("%s; copying %s again in a new upload", exc, src)
            return self._copy_parts(src, dst, info, meta, if_match)

    def _copy_parts(self, src: str, dst: str, info: ObjectInfo, meta: dict[str, str],
                    if_match: str | None) -> str:
        """One multipart upload of `dst` from ranges of `src`; aborted if anything fails."""
        upload_id = self.create_multipart(dst, meta)
        try:
            ranges = [
                (n + 1, s, min(s + self.copy_part, info.size))
                for n, s in enumerate(range(0, info.size, self.copy_part))
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
            try:
                self.abort_multipart(dst, upload_id)
            except StoreError as exc:  # the first error is the one to report
                log.error("%s: abort of multipart upload %s failed (check --abort-uploads "
                          "removes it): %s", dst, upload_id[:12], exc)
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

