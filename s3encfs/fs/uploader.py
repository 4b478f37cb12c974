"""Turning a file's local changes into an S3 object (blocking; runs in worker threads).

The new object is assembled segment by segment: dirty segments are sealed from the staging file,
untouched segments reuse the base object's bytes as they are (or are re-sealed when their
last-segment status or length changed).  Small objects go as one PUT; large ones as a multipart
upload whose parts made only of reusable segments are sent as UploadPartCopy — so editing 1 MiB of
a 64 MiB file uploads one part.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from s3encfs.cache.blocks import BlockCache
from s3encfs.cache.staging import DirtySet, StagingFile, scratch
from s3encfs.codec import IdentityCipher, ObjectCipher, SegmentGeometry
from s3encfs.fs.nodes import ObjectRef
from s3encfs.store.bodies import FileRange
from s3encfs.store.errors import UploadRestart
from s3encfs.store.s3 import ObjectStore

log = logging.getLogger("s3encfs.upload")

MAX_PARTS = 10_000


@dataclass
class UploadJob:
    key: str
    size: int
    dirty: DirtySet
    staging: StagingFile | None
    cipher: ObjectCipher
    meta: dict[str, str]
    base: ObjectRef | None
    base_cipher: ObjectCipher | None
    base_segs: int
    stream: StreamedParts | None = None
    # What S3 must still hold at `key` for this write to be ours to make (lost-update guard):
    # an ETag (If-Match), or nothing at all (If-None-Match: *); `expect_any` skips the check.
    expect_etag: str | None = None
    expect_any: bool = True


def staged_range(store: ObjectStore, cipher: ObjectCipher, staging: StagingFile | None,
                 dirty: DirtySet, segment_size: int, first: int, end: int,
                 size: int) -> FileRange | None:
    """Segments [first, end) of a file of `size` bytes as a range of its staging file, when
    those bytes go to S3 as they are, every segment written here, and the store sends file
    ranges (store/bodies.py): plain mode (no object cipher, no staging seal), or client mode
    when every slot of the range is that segment as the object holds it (ObjectSlots: a
    whole slot sealed with `cipher`, and none of them the object's last segment —
    `StagingFile.segments_of`).  A streamed part passes a `size` past its end (its
    segments are not the last).  None: build the part's bytes."""
    if staging is None or not store.file_parts or \
            not all(i in dirty for i in range(first, end)):
        return None
    if isinstance(cipher, IdentityCipher) and not staging.cipher.overhead:
        start = first * segment_size
        return FileRange(staging.fd, start, max(0, min(end * segment_size, size) - start))
    if end * segment_size < size and staging.segments_of(cipher, first, end):
        return FileRange(staging.fd, first * staging.slot, (end - first) * staging.slot)
    return None


@dataclass
class StreamedParts:
    """Parts already sent while the file was being written (fs/streaming.py)."""

    upload_id: str
    per: int
    parts: dict[int, str]


class SegmentSource:
    """Plaintext and object bytes of a file's segments, from staging or the base object."""

    def __init__(self, geometry: SegmentGeometry, blocks: BlockCache, segs_per_block: int,
                 base: ObjectRef | None, base_cipher: ObjectCipher | None, base_segs: int,
                 dirty: DirtySet, staging: StagingFile | None):
        self.geometry = geometry
        self.blocks = blocks
        self.k = segs_per_block
        self.base = base
        self.base_cipher = base_cipher
        self.base_segs = base_segs
        self.base_nseg = geometry.segment_count(base.plain_size) if base else 0
        self.dirty = dirty
        self.staging = staging
        # set by callers on the event-loop thread: serve from memory or the local disk cache,
        # never wait for S3 (LookupError instead)
        self.local_only = False

    def base_backed(self, i: int) -> bool:
        return i < self.base_segs and i not in self.dirty

    def base_raw(self, i: int, *, run: int = 1) -> bytes:
        assert self.base is not None
        block, within = divmod(i, self.k)
        start = within * self.geometry.stride
        end = start + self.geometry.segment_plain_len(i, self.base.plain_size) + \
            self.geometry.overhead
        return self.blocks.read_part(self.base.key, self.base.etag, self.base.obj_size, block,
                                     start, end, run=run, local_only=self.local_only)

    def base_plain(self, i: int, *, run: int = 1) -> bytes:
        assert self.base_cipher is not None and self.base is not None
        raw = self.base_raw(i, run=run)
        try:
            return self.base_cipher.decrypt_segment(i, raw, i == self.base_nseg - 1)
        except Exception:
            if self.local_only:
                raise LookupError(i) from None
            # a cached block may be damaged: drop it and try S3 once more before failing
            self.blocks.invalidate(self.base.key, self.base.etag, i // self.k)
            raw = self.base_raw(i)
            return self.base_cipher.decrypt_segment(i, raw, i == self.base_nseg - 1)

    def base_range(self, off: int, end: int, *, run: int = 1) -> bytes | memoryview:
        """Plaintext [off, end) of a clean file (every segment base-backed): one cache read per
        block touched, not one per segment. The identity codec copies nothing for a range
        within one block: a read-only view of the cached block (FUSE replies from any buffer)."""
        assert self.base is not None and self.base_cipher is not None
        lay, k = self.geometry, self.k
        S, stride, size = lay.segment_size, lay.stride, self.base.plain_size
        identity = lay.overhead == 0
        out: list[bytes | memoryview] = []
        i, last = off // S, (end - 1) // S
        while i <= last:
            block = i // k
            j = min(last, block * k + k - 1)
            if identity:
                lo, hi = max(off, i * S), min(end, j * S + S)
                out.append(self.blocks.view_part(
                    self.base.key, self.base.etag, self.base.obj_size, block,
                    lo - block * k * S, hi - block * k * S, run=run, local_only=self.local_only))
            else:
                first_in = (i - block * k) * stride
                raw = self.blocks.view_part(
                    self.base.key, self.base.etag, self.base.obj_size, block, first_in,
                    (j - block * k) * stride + lay.segment_plain_len(j, size) + lay.overhead,
                    run=run, local_only=self.local_only)
                for s in range(i, j + 1):
                    seg = raw[(s - i) * stride:(s - i + 1) * stride]
                    try:
                        plain = self.base_cipher.decrypt_segment(s, seg, s == self.base_nseg - 1)
                    except Exception:
                        plain = self.base_plain(s)  # damaged cached block: drop it, refetch once
                    lo, hi = max(off, s * S) - s * S, min(end, s * S + S) - s * S
                    out.append(plain[lo:hi])
            i = j + 1
        return out[0] if len(out) == 1 else b"".join(out)

    def plain(self, i: int, *, run: int = 1) -> bytes:
        """Full-length (segment_size, zero padded) plaintext of segment i."""
        if self.staging is not None and i in self.dirty:
            return self.staging.read_segment(i)
        if self.base_backed(i):
            data = self.base_plain(i, run=run)
            if len(data) < self.geometry.segment_size:
                data += bytes(self.geometry.segment_size - len(data))
            return data
        return bytes(self.geometry.segment_size)


def seal_staged(cipher: ObjectCipher, staging: StagingFile, first: int, stop: int,
                stride: int) -> bytearray:
    """The object bytes of full, non-last segments [first, stop), all dirty in `staging`,
    sealed into one buffer: each read into and opened in this thread's scratch buffer and
    encrypted in place in the part (a streamed part is 128 of them)."""
    out = bytearray((stop - first) * stride)
    view, plain, pos = memoryview(out), scratch("plain", staging.segment_size), 0
    for i in range(first, stop):
        if staging.read_sealed_into(i, view[pos:pos + stride], cipher):  # as it is staged
            pos += stride
            continue
        pos += cipher.encrypt_segment_into(i, staging.read_segment_into(i, plain), False,
                                           view[pos:])
    if pos != len(out):
        raise ValueError(f"sealed part: {pos} bytes, {len(out)} expected")
    return out


class Uploader:
    def __init__(self, store: ObjectStore, blocks: BlockCache, geometry: SegmentGeometry,
                 segs_per_block: int, part_segments: int, pool: ThreadPoolExecutor,
                 parts_in_flight: int = 8,
                 track: Callable[[str, str], None] | None = None,
                 untrack: Callable[[str], None] | None = None,
                 reuse_base: bool = True):
        self.store = store
        # False for codecs that re-seal every version under a fresh key (client format v2):
        # the base object's bytes are then read and re-sealed, never copied
        self.reuse_base = reuse_base
        self.blocks = blocks
        self.geometry = geometry
        self.k = segs_per_block
        self.part_segments = part_segments
        self.pool = pool
        # journal every multipart upload id until it is completed or aborted, so an upload
        # whose abort fails (server down) is aborted by the next mount, never orphaned
        self.track = track or (lambda key, upload_id: None)
        self.untrack = untrack or (lambda upload_id: None)
        # bounds memory: each part in flight holds its whole body (8 MiB by default)
        self._part_slots = threading.BoundedSemaphore(parts_in_flight)

    def _reusable(self, src: SegmentSource, i: int, size: int, nseg: int) -> bool:
        if not self.reuse_base or not src.base_backed(i) or src.base is None:
            return False
        base_last = i == src.base_nseg - 1
        return (base_last == (i == nseg - 1)
                and self.geometry.segment_plain_len(i, src.base.plain_size)
                == self.geometry.segment_plain_len(i, size))

    def _body(self, job: UploadJob, src: SegmentSource, first: int, end: int,
              nseg: int) -> bytearray:
        """The object bytes of segments [first, end) in one buffer: base bytes reused as they
        are, every other segment sealed in place (staged ones read and opened in this thread's
        scratch buffer), not a new bytes per segment joined."""
        g = self.geometry
        out = bytearray(sum(g.segment_plain_len(i, job.size) for i in range(first, end))
                        + (end - first) * g.overhead)
        view, plain, pos = memoryview(out), scratch("plain", g.segment_size), 0
        for i in range(first, end):
            if self._reusable(src, i, job.size, nseg):
                raw = src.base_raw(i, run=4)
                view[pos:pos + len(raw)] = raw
                pos += len(raw)
                continue
            plen = g.segment_plain_len(i, job.size)
            if src.staging is not None and i in src.dirty:
                if plen == g.segment_size and i < nseg - 1 and src.staging.read_sealed_into(
                        i, view[pos:pos + g.stride], job.cipher):  # sent as it is staged
                    pos += g.stride
                    continue
                pt: bytes | memoryview = src.staging.read_segment_into(i, plain)[:plen]
            else:
                pt = src.plain(i, run=4)[:plen]
            pos += job.cipher.encrypt_segment_into(i, pt, i == nseg - 1, view[pos:])
        if pos != len(out):
            raise ValueError(f"{job.key}: sealed {pos} bytes of {len(out)} for segments "
                             f"{first}-{end}")
        return out

    def part_plan(self, nseg: int) -> list[tuple[int, int]]:
        per = max(self.part_segments, -(-nseg // MAX_PARTS))
        per = -(-per // self.k) * self.k  # parts hold whole cache blocks
        return [(s, min(s + per, nseg)) for s in range(0, nseg, per)]

    def small_body(self, job: UploadJob, limit: int) -> bytearray | None:
        """The body of a new file's single PUT when it is at most `limit` bytes, else None.
        Reads only the staging file (no base object, so no S3 read): cheap enough for the trio
        thread, which then awaits the PUT with no worker thread (fs/small_upload.py)."""
        geometry = self.geometry
        if job.base is not None or job.stream is not None or \
                geometry.object_size(job.size) > limit:
            return None
        nseg = geometry.segment_count(job.size)
        if len(self.part_plan(nseg)) > 1:
            return None
        src = SegmentSource(geometry, self.blocks, self.k, None, None, 0, job.dirty, job.staging)
        return self._body(job, src, 0, nseg, nseg)

    def upload(self, job: UploadJob) -> ObjectRef:
        try:
            return self._upload(job)
        except UploadRestart as exc:  # S3EC: parts sent cannot be completed (s3ec_upload.py)
            log.info("%s; sending it again in a new upload", exc)
            return self._upload(replace(job, stream=None))

    def _upload(self, job: UploadJob) -> ObjectRef:
        geometry = self.geometry
        nseg = geometry.segment_count(job.size)
        obj_size = geometry.object_size(job.size)
        src = SegmentSource(geometry, self.blocks, self.k, job.base, job.base_cipher,
                            job.base_segs, job.dirty, job.staging)
        plan = self.part_plan(nseg)
        if len(plan) <= 1 or obj_size < 2 * self.part_segments * geometry.stride:
            if job.stream is not None:
                self._abort(job.key, job.stream.upload_id)
            body = bytes(self._body(job, src, 0, nseg, nseg))  # (the CRT's PUT takes bytes)
            etag = self.store.put(job.key, body, job.meta, **self._conditions(job))
            return ObjectRef(job.key, etag, len(body), job.size, dict(job.meta))
        upload_id, streamed = self._multipart_start(job, plan, nseg)
        futures: list[Future[str]] = []
        try:
            for number, (first, end) in enumerate(plan, start=1):
                if number in streamed:
                    done: Future[str] = Future()
                    done.set_result(streamed[number])
                    futures.append(done)
                    continue
                futures.append(self.pool.submit(self._part, job, src, upload_id, number,
                                                first, end, nseg))
            parts = [(n, f.result()) for n, f in enumerate(futures, start=1)]
            etag = self.store.complete_multipart(job.key, upload_id, parts,
                                                 **self._conditions(job))
            self.untrack(upload_id)
        except BaseException:
            for f in futures:
                f.cancel()
            self._abort(job.key, upload_id)
            raise
        return ObjectRef(job.key, etag, obj_size, job.size, dict(job.meta))

    def _multipart_start(self, job: UploadJob, plan: list[tuple[int, int]],
                         nseg: int) -> tuple[str, dict[int, str]]:
        """The multipart upload to finish: the one streamed while the file was written when
        its part size still fits the plan (with its parts that stay valid), else a new one
        (the streamed one is aborted)."""
        if job.stream is not None and plan[0][1] - plan[0][0] == job.stream.per:
            streamed = {n: e for n, e in job.stream.parts.items()
                        if n * job.stream.per < nseg}  # a part holding the last segment is resealed
            return job.stream.upload_id, streamed
        if job.stream is not None:
            self._abort(job.key, job.stream.upload_id)
        upload_id = self.store.create_multipart(job.key, job.meta)
        self.track(job.key, upload_id)
        return upload_id, {}

    @staticmethod
    def _conditions(job: UploadJob) -> dict[str, Any]:
        if job.expect_any:
            return {}
        if job.expect_etag:
            return {"if_match": job.expect_etag}
        return {"if_none_match": True}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.store.abort_multipart(key, upload_id)
        except Exception as exc:  # stays journaled: the next mount aborts it
            log.warning("could not abort multipart upload of %s: %s", key, exc)
            return
        self.untrack(upload_id)

    def _part(self, job: UploadJob, src: SegmentSource, upload_id: str, number: int,
              first: int, end: int, nseg: int) -> str:
        with self._part_slots:
            return self._send_part(job, src, upload_id, number, first, end, nseg)

    def _send_part(self, job: UploadJob, src: SegmentSource, upload_id: str, number: int,
                   first: int, end: int, nseg: int) -> str:
        if src.base is not None and all(self._reusable(src, i, job.size, nseg)
                                        for i in range(first, end)):
            start = first * self.geometry.stride
            stop = (end - 1) * self.geometry.stride + self.geometry.overhead + \
                self.geometry.segment_plain_len(end - 1, job.size)
            return self.store.upload_part_copy(job.key, upload_id, number, src.base.key,
                                               start, stop, src_etag=src.base.etag)
        rng = staged_range(self.store, job.cipher, job.staging, job.dirty,
                           self.geometry.segment_size, first, end, job.size)
        body = rng if rng is not None else self._body(job, src, first, end, nseg)
        return self.store.upload_part(job.key, upload_id, number, body)
