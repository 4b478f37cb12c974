"""Multipart uploads of `ObjectStore`: create, parts (and part copies), complete, abort, list."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .areads import StoreAwaitedReads
from .bodies import FileRange
from .errors import NotFound, StoreError, map_error
from .objinfo import _etag, _quoted

log = logging.getLogger("s3encfs.store.s3")


class StoreMultipart(StoreAwaitedReads):
    @property
    def file_parts(self) -> bool:
        """`upload_part` sends a `FileRange` body from the file as it goes (the CRT reads it
        into its own buffer): no bytes of the part are built in Python.  False where the part
        is transformed (S3EC encrypts it) or the client takes only bytes."""
        return self._untransformed_on_crt(("upload_part", StoreMultipart.upload_part))

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

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    body: bytes | bytearray | FileRange) -> str:
        if isinstance(body, FileRange) and not self.file_parts:
            body = body.read()
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
