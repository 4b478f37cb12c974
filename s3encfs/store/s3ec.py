"""`S3ECStore`: the bucket as the filesystem sees it in ``--encryption s3ec`` mode.

Every object that is not a directory marker (``…/``) is an Amazon S3 Encryption Client object
(V3 by default, V2 by option), so the AWS SDKs can read what the mount wrote and the mount reads
what they wrote. Above this class the filesystem works on plaintext, exactly as in plain mode;
this class is the whole S3EC boundary:

* LIST sizes are ``size - 16`` (one GCM tag per object), no HEAD; ``X.instruction`` companions
  are hidden and remembered, so deletes and renames carry them along.
* A read serves only bytes of a whole object whose tag has been verified: the first read of an
  (key, ETag) streams the object through the GCM decryptor into an unlinked local spool and
  publishes it only after the tag checks (`Views`). With ``unauthenticated_ranges`` a range is
  decrypted as AES-CTR (V3 after the commitment check), and a read that reaches the end of the
  object still verifies the whole tag first.
* HEAD results are checked: an object that is not S3EC, is legacy CBC, or has no matching key
  is presented with an error marker the codec turns into EIO (logged here once per ETag).
* Every PUT and every multipart upload gets a fresh data key and message id (V2: IV): the
  caller's cipher metadata is ignored, so a (key, nonce) pair can never be reused. Multipart
  parts are encrypted strictly in order as their turns come (s3ec_upload.py); UploadPartCopy
  becomes a verified read.
* Metadata-only copies (chmod, utime, xattrs) carry every S3EC key of the source unchanged and
  re-seal the POSIX attributes (`s3ec_attrs`); the copy is conditional on the ETag whose keys
  were read.
"""

from __future__ import annotations

import errno
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import Any

from s3encfs.codec import IntegrityError
from s3encfs.crypto import s3ec_attrs, s3ec_stream
from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto.s3ec_codec import ERROR_KEY  # presented instead of refused metadata
from s3encfs.crypto.s3ec_keyrings import S3ECKeys

from .bodies import FileRange
from .errors import NotFound, StoreError, UploadRestart
from .s3 import ListPage, ObjectInfo, ObjectStore
from .s3ec_upload import S3ECUpload
from .sealed_spool import Spool, Views
from .stats import SectionStats

log = logging.getLogger("s3encfs.s3ec")

_FETCH = 8 * 1024 * 1024
_PARALLEL = 4
_SUFFIX = fmt.INSTRUCTION_SUFFIX


class TooLarge(OSError):
    """Plaintext over the GCM limit (2^36 - 32 bytes): EFBIG."""


def _plain_key(key: str) -> bool:
    return key.endswith("/")


class S3ECStore(ObjectStore):
    def __init__(self, bucket: str, *, s3ec: S3ECKeys, spool_dir: str,
                 unauthenticated_ranges: bool = False, view_bytes: int = 4 * 1024**3,
                 **kwargs: Any) -> None:
        super().__init__(bucket, **kwargs)
        self.s3ec = s3ec
        self.unauthenticated_ranges = unauthenticated_ranges
        self.views = Views(spool_dir, view_bytes)
        self._spool_dir = spool_dir
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], Future[Spool]] = {}
        self._opened: OrderedDict[str, tuple[fmt.Envelope, fmt.ContentKey, bytes]] = OrderedDict()
        self._instr: set[str] = set()
        self._ranged: OrderedDict[tuple[str, str | None], tuple[fmt.ContentKey, int, str]] = \
            OrderedDict()
        self._uploads: dict[str, S3ECUpload] = {}
        self._warned: set[tuple[str, str]] = set()
        self.s3ec_stats = {"verified_objects": 0, "verify_failures": 0, "refused_objects": 0}
        # `status` shows S3EC counters (verified / refused objects, KMS calls and cache hits)
        self.stats = SectionStats("s3ec", lambda: {**self.s3ec_stats,
                                                   **self.s3ec.kms_counters()}, self.stats.client)

    # -- keys ----------------------------------------------------------------------------------
    def _s3ec_meta(self, key: str, meta: dict[str, str] | None) -> dict[str, str]:
        """The object's S3EC names (merged with its instruction file when it has one)."""
        low = fmt.lower_keys(meta or {})
        s3 = {k: v for k, v in low.items() if k in fmt.ALL_NAMES}
        if fmt.needs_instruction_file(s3) or not fmt.is_s3ec(s3):
            try:
                body, _info = super().get(key + _SUFFIX)
            except NotFound:
                raise fmt.NotS3EC("not an S3 Encryption Client object") from None
            self._instr.add(key)
            s3 = fmt.merge_instruction(s3, body)
        return s3

    def _open(self, key: str, meta: dict[str, str] | None
              ) -> tuple[fmt.Envelope, fmt.ContentKey, bytes]:
        s3 = self._s3ec_meta(key, meta)
        ident = fmt.compact_json(s3)
        with self._lock:
            hit = self._opened.get(ident)
            if hit is not None:
                self._opened.move_to_end(ident)
                return hit
        env = fmt.parse_envelope(s3)
        ck, dk = self.s3ec.open_object(s3)
        if not env.authenticated:
            raise fmt.LegacyRefused("legacy AES-CBC objects are not served by the mount")
        self._keep_opened(ident, (env, ck, dk))
        return env, ck, dk

    def _keep_opened(self, ident: str, opened: tuple[fmt.Envelope, fmt.ContentKey, bytes]) -> None:
        with self._lock:
            self._opened[ident] = opened
            while len(self._opened) > 4096:
                self._opened.popitem(last=False)

    def _present(self, info: ObjectInfo) -> ObjectInfo:
        meta = info.metadata or {}
        try:
            env, _ck, dk = self._open(info.key, meta)
            if not env.authenticated:
                # LIST sizes (size - 16) are wrong for padded CBC, and CBC has no integrity
                raise fmt.LegacyRefused("legacy AES-CBC objects are not served by the mount")
            attrs = s3ec_attrs.open_sealed(dk, env, fmt.lower_keys(meta))
            size = fmt.plain_size(info.size)
            if env.plain_length is not None and env.plain_length != size:
                raise IntegrityError(f"x-amz-unencrypted-content-length {env.plain_length} "
                                     f"disagrees with the object size ({size} + 16)")
        except IntegrityError as exc:
            if (info.key, info.etag) not in self._warned:
                self._warned.add((info.key, info.etag))
                self.s3ec_stats["refused_objects"] += 1
                log.error("s3ec: %s (ETag %s) refused: %s", info.key, info.etag, exc)
            return ObjectInfo(info.key, max(0, info.size - fmt.TAG_LEN), info.etag,
                              info.last_modified, {ERROR_KEY: str(exc)})
        shown = {k: v for k, v in fmt.lower_keys(meta).items()
                 if k != s3ec_attrs.ATTRS_KEY and k not in attrs}
        return ObjectInfo(info.key, size, info.etag, info.last_modified, {**shown, **attrs})

    @staticmethod
    def _attrs_of(metadata: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in fmt.lower_keys(metadata).items()
                if k not in fmt.ALL_NAMES and k not in (ERROR_KEY, s3ec_attrs.ATTRS_KEY)}

    def _fresh(self, metadata: dict[str, str]) -> tuple[fmt.ContentKey, dict[str, str]]:
        ck, s3meta, dk, env = self.s3ec.new_object()
        self._keep_opened(fmt.compact_json(s3meta), (env, ck, dk))
        return ck, {**s3meta, **s3ec_attrs.seal(dk, env, self._attrs_of(metadata))}

    # -- reads ---------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        info = super().head(key)
        return info if _plain_key(key) else self._present(info)

    def get(self, key: str, *, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        body, info = super().get(key, if_match=if_match)
        if _plain_key(key):
            return body, info
        _env, ck, _dk = self._open(key, info.metadata)
        plain = s3ec_stream.decrypt_body(ck, body)
        shown = self._present(info)
        shown.size = len(plain)
        return plain, shown

    def get_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        if _plain_key(key) or end <= start:
            return super().get_range(key, start, end, if_match=if_match)
        if self.unauthenticated_ranges:
            return self._ctr_range(key, start, end, if_match)
        return self._view(key, if_match).read(start, end)

    def _ctr_range(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        """UNAUTHENTICATED (opt-in): AES-CTR of the range; V3's commitment is checked first."""
        got = self._ranged.get((key, etag)) if etag else None
        if got is None:
            info = super().head(key)
            if etag and info.etag != etag:
                return self._view(key, etag).read(start, end)  # the conditional GET decides
            _env, ck, _dk = self._open(key, info.metadata)
            got = (ck, fmt.plain_size(info.size), info.etag)
            with self._lock:
                self._ranged[(key, info.etag)] = got
                while len(self._ranged) > 4096:
                    self._ranged.popitem(last=False)
        ck, plain, real = got
        if end >= plain:  # the end is read: the whole tag is checked before anything returns
            return self._view(key, real).read(start, end)
        data = super().get_range(key, start, end, if_match=real)
        return s3ec_stream.ctr_decrypt_range(ck, start, data)

    def _view(self, key: str, etag: str | None) -> Spool:
        if etag is None:
            etag = super().head(key).etag
        got = self.views.get(key, etag)
        if got is not None:
            return got
        with self._lock:
            fut = self._inflight.get((key, etag))
            mine = fut is None
            if fut is None:
                fut = self._inflight[(key, etag)] = Future()
        if not mine:
            return fut.result()
        try:
            spool = self._verify_object(key, etag)
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop((key, etag), None)
        fut.set_result(spool)
        return spool

    def _verify_object(self, key: str, etag: str) -> Spool:
        """The whole object's verified plaintext as a view (published only if the tag checks)."""
        spool = self.views.new()
        self.read_verified(key, etag, spool.write)
        self.views.publish(key, etag, spool)
        return spool

    @property
    def verifies_whole_objects(self) -> bool:
        """The block cache fills a missing object's blocks through `read_verified` (all at
        once, published after the tag checked) instead of ranges of a view."""
        return not self.unauthenticated_ranges

    def read_verified(self, key: str, etag: str, write: Callable[[memoryview], None]) -> int:
        """Stream the whole object (ETag `etag`) through GCM: its plaintext, in order, into
        `write` (a view valid only during the call); returns the plaintext length once the tag
        checked, IntegrityError if it does not. NOTHING written is authenticated before this
        returns: the caller must not let a reader see any of it earlier."""
        view = self.views.get(key, etag)
        if view is not None:  # verified already (this mount wrote it): no download
            return view.stream(write)
        info = super().head(key)
        if info.etag != etag:
            # the conditional GET below fails the way the caller expects (412)
            super().get_range(key, 0, 1, if_match=etag)
        _env, ck, _dk = self._open(key, info.metadata)
        if info.size < fmt.TAG_LEN:
            raise IntegrityError(f"{key}: S3EC object shorter than its tag")
        dec = s3ec_stream.Decryptor(ck)
        total = 0
        try:
            for chunk in self.raw_ranges(key, etag, info.size, _FETCH, _PARALLEL):
                out = dec.update_view(chunk)
                total += len(out)
                write(out)  # the decryptor's buffer: copied (written) before the next chunk
            tail = dec.finish()
        except IntegrityError as exc:
            self.s3ec_stats["verify_failures"] += 1
            log.error("s3ec: %s (ETag %s) failed verification: %s", key, etag, exc)
            raise
        write(memoryview(tail))
        self.s3ec_stats["verified_objects"] += 1
        return total + len(tail)

    def list_pages(self, prefix: str, delimiter: str | None = "/") -> Generator[ListPage]:
        seen: set[str] = set()
        for page in super().list_pages(prefix, delimiter):
            objs = []
            for o in page.objects:
                if o.key.endswith(_SUFFIX) and o.key[:-len(_SUFFIX)] in seen:
                    self._instr.add(o.key[:-len(_SUFFIX)])
                    continue
                seen.add(o.key)
                if not _plain_key(o.key):
                    o.size = max(0, o.size - fmt.TAG_LEN)
                objs.append(o)
            yield ListPage(objs, page.prefixes)

    # -- writes --------------------------------------------------------------------------------
    def put(self, key: str, body: bytes, metadata: dict[str, str], *,
            if_match: str | None = None, if_none_match: bool = False,
            content_type: str | None = None) -> str:
        if _plain_key(key):  # markers stay plain and carry nothing readable
            return super().put(key, body, {} if not body else metadata, if_match=if_match,
                               if_none_match=if_none_match, content_type=content_type)
        sealed, meta, view = self._sealed(body, metadata)
        etag = super().put(key, sealed, meta, if_match=if_match, if_none_match=if_none_match,
                           content_type=content_type)
        self.views.publish(key, etag, view)  # we just wrote it: verified by construction
        return etag

    async def aput(self, key: str, body: bytes, metadata: dict[str, str], *,
                   if_match: str | None = None, if_none_match: bool = False) -> str:
        """`put` awaited on trio with no worker thread (the filesystem's small bodies, up to
        1 MiB: encrypted here, AES-GCM costs ~50 us per MiB)."""
        if _plain_key(key):
            return await super().aput(key, body, {} if not body else metadata,
                                      if_match=if_match, if_none_match=if_none_match)
        sealed, meta, view = self._sealed(body, metadata)
        etag = await super().aput(key, sealed, meta, if_match=if_match,
                                  if_none_match=if_none_match)
        self.views.publish(key, etag, view)
        return etag

    def _sealed(self, body: bytes, metadata: dict[str, str]
                ) -> tuple[bytes, dict[str, str], Spool]:
        """A new object's body encrypted under a fresh data key, its metadata, a view of it."""
        if len(body) > fmt.MAX_PLAINTEXT:
            raise TooLarge(errno.EFBIG, "file larger than the S3EC (AES-GCM) limit")
        ck, meta = self._fresh(metadata)
        return s3ec_stream.encrypt_body(ck, body), meta, self.views.written(body)

    def copy(self, src: str, dst: str, *, metadata: dict[str, str] | None = None,
             if_match: str | None = None) -> str:
        if _plain_key(src):
            return super().copy(src, dst, metadata=metadata, if_match=if_match)
        if metadata is None and src != dst:
            etag = super().copy(src, dst, if_match=if_match)
        else:
            raw = super().head(src)
            if if_match and raw.etag != if_match:
                return super().copy(src, dst, metadata=raw.metadata, if_match=if_match)  # 412
            env, _ck, dk = self._open(src, raw.metadata)
            keep = {k: v for k, v in fmt.lower_keys(raw.metadata or {}).items()
                    if k in fmt.ALL_NAMES}
            attrs = self._attrs_of(metadata if metadata is not None else
                                   (self._present(raw).metadata or {}))
            new = {**keep, **s3ec_attrs.seal(dk, env, attrs)}
            etag = super().copy(src, dst, metadata=new, if_match=raw.etag)
        if src != dst and src in self._instr:
            super().copy(src + _SUFFIX, dst + _SUFFIX)
            self._instr.add(dst)
        return etag

    def delete(self, key: str) -> None:
        super().delete(key)
        self.views.drop_key(key)
        if key in self._instr:
            super().delete(key + _SUFFIX)
            self._instr.discard(key)

    def delete_many(self, keys: list[str]) -> None:
        extra = [k + _SUFFIX for k in keys if k in self._instr]
        super().delete_many(keys + extra)
        for k in keys:
            self._instr.discard(k)
            self.views.drop_key(k)

    # -- multipart: parts encrypted in order as early as is safe (s3ec_upload.py) -------------
    def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        """A real upload (the journal knows its id, a crash gets it aborted) whose fresh data
        key and message id are fixed now."""
        ck, meta = self._fresh(metadata)
        upload_id = super().create_multipart(key, meta)
        with self._lock:
            self._uploads[upload_id] = S3ECUpload(ck, self._spool_dir, key)
        return upload_id

    def _upload(self, key: str, upload_id: str, pop: bool = False) -> S3ECUpload:
        with self._lock:
            up = self._uploads.pop(upload_id, None) if pop else self._uploads.get(upload_id)
        if up is None:
            raise UploadRestart(f"{key}: S3EC multipart upload {upload_id[:12]}… was already "
                                "encrypted or is unknown; it must start again", key=key)
        return up

    file_parts = True  # a FileRange part is read during upload_part (s3ec_upload.py)

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    body: bytes | bytearray | FileRange) -> str:
        self._upload(key, upload_id).add(part_number, body, self._sender(key, upload_id))
        # a token the caller hands back at completion (which ignores it): no hash of 8 MiB
        return f"s3ec-{part_number}-{len(body)}-{secrets.token_hex(4)}"

    def upload_part_copy(self, key: str, upload_id: str, part_number: int, src: str,
                         start: int, end: int, *, src_etag: str | None = None) -> str:
        """The verified plaintext of the range, as a part. A part that fails to send breaks
        the upload (its GCM stream may not encrypt it twice): UploadRestart, so the caller
        (StoreWrites._multipart_copy, fs/uploader.py) starts over in a new upload."""
        data = self.get_range(src, start, end, if_match=src_etag)
        try:
            return self.upload_part(key, upload_id, part_number, data)
        except UploadRestart:
            raise
        except StoreError as exc:
            raise UploadRestart(f"{key}: part {part_number} failed to send: {exc}",
                                key=key) from exc

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]], *,
                           if_match: str | None = None, if_none_match: bool = False) -> str:
        # taken out first: this upload's (data key, message id) encrypts exactly once, so a
        # retry can never encrypt different parts under the same nonce. UploadRestart (parts
        # sent that this list does not continue): the caller aborts and starts again
        up = self._upload(key, upload_id, pop=True)
        if up.size() > fmt.MAX_PLAINTEXT:
            raise TooLarge(errno.EFBIG, "file larger than the S3EC (AES-GCM) limit")
        done = up.finish([n for n, _e in sorted(parts)], self._sender(key, upload_id))
        return super().complete_multipart(key, upload_id, done, if_match=if_match,
                                          if_none_match=if_none_match)

    def _sender(self, key: str, upload_id: str) -> Callable[[int, bytearray], str]:
        return lambda n, data: super(S3ECStore, self).upload_part(key, upload_id, n, data)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with self._lock:
            up = self._uploads.pop(upload_id, None)
        if up is not None:
            up.abandon()  # parts waiting for their turn give up
        super().abort_multipart(key, upload_id)
