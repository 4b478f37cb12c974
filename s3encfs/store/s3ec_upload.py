"""One S3EC multipart upload: parts encrypted strictly in order, as early as it is safe.

An S3EC object is one AES-GCM stream, so part ``n`` can be encrypted only after parts
``1..n-1``. It is encrypted and sent the moment it is its turn and either it is at least S3's
smallest non-final part (5 MiB: should it turn out to be the last, the tag goes alone as one
more part) or part ``n+1`` has arrived (so it is not the last). The streaming uploader's parts
therefore go to S3 while the file is still written, each from the thread that brought it, so
the sends run in parallel while the encryption stays in order. Completion encrypts what is left,
the tag appended to the last part (or sent alone when every part went already). A file range
that reaches its file's end is probably the last part: it waits for part ``n+1`` or the
completion, which appends the tag to it (no 16-byte part of its own: one request fewer).

Nothing is copied to local disk on the way: a part that is its turn is encrypted into a reused
ciphertext buffer, from the caller's bytes or, for a range of the staging file (`FileRange`,
the filesystem's parts), read straight into that buffer and encrypted in place: no plaintext
part is built. A file range that arrives shortly before its turn waits for it (up to `_WAIT`:
the part before it is normally a moment behind, its thread having started first; after one
wait timed out, no more waits in this upload); only parts still not their turn after that,
and bytes, are kept: in memory up to `_HOLD` bytes, beyond that in a sealed spool
(`PartSpool`; a ranged copy of a big object sends 512 MiB parts four at a time).
A file range is read only during `add`, so the caller's file may change once it returned.

The stream's (data key, message id) pair must never encrypt two different plaintexts at one
offset. So a part re-sent after it was encrypted (a write into a streamed part), an early send
that failed, or a completion whose part list is not the parts sent so far followed by the rest
raises `UploadRestart`: the caller aborts this upload and sends the object again from its source
(fs/uploader.py does, at once, from the staging file) in a new upload, which `create_multipart`
gives a fresh data key and message id.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto import s3ec_stream

from .bodies import FileRange, fill
from .errors import UploadRestart
from .sealed_spool import PartSpool

MIN_PART = 5 * 1024 * 1024  # S3's smallest non-final part
_PARALLEL = 4  # sends of one batch at a time (a batch: parts that waited for an earlier one)
_HOLD = 32 * 1024 * 1024  # bytes of early parts kept in memory before they go to the spool
_SPARE = 4  # ciphertext buffers kept for reuse
_WAIT = 1.0  # seconds a file range that arrived early waits for its turn before it is kept
_AHEAD = 8  # ... if at most this many parts ahead (the uploader has 8 in flight, streaming 4)
Send = Callable[[int, bytearray], str]  # (S3 part number, ciphertext) -> etag
Body = bytes | bytearray | FileRange


class S3ECUpload:
    def __init__(self, ck: fmt.ContentKey, spool_dir: str, key: str = "") -> None:
        self.key = key
        self._enc = s3ec_stream.Encryptor(ck)
        self._spool_dir = spool_dir
        self._next = 1  # the next part number to encrypt
        self._sizes: dict[int, int] = {}  # every part that arrived, encrypted or not
        self._sent: dict[int, Future[str]] = {}
        self._held: dict[int, bytes | bytearray] = {}  # early parts in memory
        self._held_bytes = 0
        self._spool: PartSpool | None = None  # early parts beyond _HOLD
        self._broken = ""
        self._free: list[bytearray] = []
        self._waiting: set[int] = set()  # early file ranges whose threads wait for their turn
        self._last: set[int] = set()  # parts whose file range reached the end of its file
        self._patient = True  # no wait has timed out: the parts come in order (a sequential write)
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # notified when `_next` moves or breaks

    def size(self) -> int:
        return sum(self._sizes.values())

    def numbers(self) -> list[int]:
        return sorted(self._sizes)

    def _restart(self, why: str) -> UploadRestart:
        self._broken = self._broken or why
        return UploadRestart(f"{self.key}: S3EC multipart upload must start again: "
                             f"{self._broken}", key=self.key)

    def add(self, number: int, body: Body, send: Send) -> None:
        """Take part `number`; encrypt and send every part whose turn it now is."""
        failed: BaseException | None = None
        with self._lock:
            if self._broken or number < self._next:
                raise self._restart(f"part {number} sent again after it was encrypted")
            at_end = isinstance(body, FileRange) and \
                body.offset + len(body) >= os.fstat(body.fd).st_size
            self._drop(number)
            self._sizes[number] = len(body)
            (self._last.add if at_end else self._last.discard)(number)
            if isinstance(body, FileRange):
                self._wait_turn(number)
            batch = self._ready(number, body)
            if number not in self._sent:  # not its turn yet: keep it
                try:
                    self._keep(number, self._read(body) if isinstance(body, FileRange) else body)
                except BaseException as exc:  # not read: not here (the caller sends it again)
                    del self._sizes[number]
                    failed = exc
        self._send(batch, send)
        if failed is not None:
            raise failed

    def _keep(self, number: int, body: bytes | bytearray) -> None:
        if self._held_bytes + len(body) <= _HOLD:
            self._held[number] = body
            self._held_bytes += len(body)
        else:
            if self._spool is None:
                self._spool = PartSpool(self._spool_dir)
            self._spool.put(number, body)

    def _wait_turn(self, number: int) -> None:
        """Under the lock: while a part before `number` is missing (or waits itself), wait up
        to `_WAIT` for it; meanwhile no other thread takes this part (it is not in memory).
        Not for a part far ahead, nor once a wait timed out: the parts of this upload do not
        come in order (a sparse or parallel write), and waiting would only stall them."""
        if not self._patient or number - self._next > _AHEAD:
            return
        self._waiting.add(number)
        deadline = time.monotonic() + _WAIT
        try:
            while not self._broken and any(i not in self._sizes or i in self._waiting
                                           for i in range(self._next, number)):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._patient = False
                    return
                self._turn.wait(left)
        finally:
            self._waiting.discard(number)
        if self._broken or number < self._next:
            raise self._restart(f"part {number} sent again after it was encrypted")

    @staticmethod
    def _read(rng: FileRange) -> bytearray:
        buf = bytearray(len(rng))
        fill(rng.fd, rng.offset, memoryview(buf))
        return buf

    def _drop(self, number: int) -> None:
        old = self._held.pop(number, None)
        if old is not None:
            self._held_bytes -= len(old)

    def _body(self, number: int) -> bytes | bytearray:
        """An early part's plaintext, taken out of memory or read back from the spool."""
        body = self._held.pop(number, None)
        if body is not None:
            self._held_bytes -= len(body)
            return body
        assert self._spool is not None
        return self._spool.get(number)

    def _ready(self, number: int, body: Body) -> list[tuple[int, bytearray]]:
        """Under the lock: encrypt, in order, every part that may be encrypted now (not one
        whose own thread waits for its turn: that thread encrypts it)."""
        out: list[tuple[int, bytearray]] = []
        try:
            while self._next in self._sizes and (self._next + 1 in self._sizes or (
                    self._sizes[self._next] >= MIN_PART and self._next not in self._last)):
                n = self._next
                if n != number and n in self._waiting:
                    break
                out.append((n, self._encrypt(body if n == number else self._body(n))))
                self._sent[n] = Future()
                self._next += 1
        except BaseException as exc:  # the GCM stream may have moved past parts never sent
            self._broken = self._broken or f"part {self._next} could not be encrypted: {exc}"
            for n, _buf in out:
                self._sent[n].set_exception(exc)
            raise
        finally:
            self._turn.notify_all()
        return out

    def _encrypt(self, plain: Body, tag: bool = False) -> bytearray:
        n = len(plain)
        buf = next((b for b in self._free if len(b) == n + 16 * tag), None)
        if buf is None:
            buf = bytearray(n + 16 * tag)
        else:
            self._free.remove(buf)
        if isinstance(plain, FileRange):  # read into the part's buffer, encrypted in place
            view = memoryview(buf)[:n]
            fill(plain.fd, plain.offset, view)
            self._enc.update_into(view, view)
        else:
            self._enc.update_into(plain, buf)
        if tag:
            buf[n:] = self._enc.finish()
        return buf

    def _send(self, batch: list[tuple[int, bytearray]], send: Send) -> None:
        """Send a batch (the first part in this thread, the others beside it)."""
        if not batch:
            return
        if len(batch) == 1:
            self._send_one(*batch[0], send)
            return
        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(batch))) as pool:
            futs = [pool.submit(self._send_one, n, buf, send) for n, buf in batch]
        for f in futs:
            f.result()

    def _send_one(self, n: int, buf: bytearray, send: Send) -> None:
        fut = self._sent[n]
        try:
            fut.set_result(send(n, buf))
        except BaseException as exc:
            fut.set_exception(exc)
            with self._lock:
                self._broken = self._broken or f"part {n} failed to send: {exc}"
            raise
        finally:
            with self._lock:
                if len(self._free) < _SPARE:
                    self._free.append(buf)

    def finish(self, numbers: list[int], send: Send) -> list[tuple[int, str]]:
        """Encrypt and send the rest (the tag ends the last part): every (S3 part number,
        etag) in order. UploadRestart when the parts sent cannot be completed as `numbers`."""
        with self._lock:
            k = self._next - 1
            if self._broken or self._waiting or numbers != list(range(1, len(numbers) + 1)) \
                    or len(numbers) < k or set(numbers) - set(self._sizes):
                raise self._restart(self._broken or f"completing parts {numbers[:3]}… of "
                                    f"{k} encrypted and {sorted(self._sizes)[:3]}… sent")
            self._broken = "completed already"  # encrypts at most once, whatever follows
            self._turn.notify_all()
            batch = []
            for n in numbers[k:]:
                batch.append((n, self._encrypt(self._body(n), tag=n == len(numbers))))
                self._sent[n] = Future()
            if k == len(numbers):  # every part went early: the tag alone is the last part
                batch.append((k + 1, bytearray(self._enc.finish())))
                self._sent[k + 1] = Future()
        self._send(batch, send)
        try:
            return [(n, self._sent[n].result()) for n in sorted(self._sent)]
        except Exception as exc:
            raise UploadRestart(f"{self.key}: S3EC multipart upload must start again: a part "
                                f"failed to send: {exc}", key=self.key) from exc

    def abandon(self) -> None:
        """The upload was aborted: parts waiting for their turn give up (UploadRestart)."""
        with self._lock:
            self._broken = self._broken or "aborted"
            self._turn.notify_all()
