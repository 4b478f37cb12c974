"""One S3EC multipart upload: parts encrypted strictly in order, as early as it is safe.

An S3EC object is one AES-GCM stream, so part ``n`` can be encrypted only after parts ``1..n-1``
and only once it is known not to be the last one (the tag follows the last part). Every part the
filesystem sends is spooled (sealed, `PartSpool`); part ``n`` is encrypted and sent to S3 as soon
as parts ``1..n`` and ``n+1`` are all there — while the file is still being written, as plain
mode's streamed parts are — and completion encrypts what is left, the tag appended to the last
part (or sent alone as one more part when every part went already).

The stream's (data key, message id) pair must never encrypt two different plaintexts at one
offset. So a part re-sent after it was encrypted (a write into a streamed part), an eager send
that failed, or a completion whose part list does not start with the parts encrypted so far
makes the upload *tainted*: completion then aborts it and encrypts every part again under a
fresh data key and message id, in a new upload (`S3ECStore.complete_multipart`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto import s3ec_stream

from .sealed_spool import PartSpool

_PARALLEL = 4
_RECENT = 4  # parts kept in memory until encrypted (in order, that is one or two)
Send = Callable[[int, bytes], str]  # (S3 part number, ciphertext) -> etag


class S3ECUpload:
    def __init__(self, ck: fmt.ContentKey, spool: PartSpool, metadata: dict[str, str]) -> None:
        self.ck = ck
        self.spool = spool
        self.metadata = metadata  # as given to create_multipart (attributes for a fresh start)
        self._enc = s3ec_stream.Encryptor(ck)
        self._next = 1  # the next part number to encrypt
        self._sent: dict[int, Future[str]] = {}
        self._tainted = False
        self._recent: dict[int, bytes] = {}  # the last few parts' bodies: no spool read-back
        self._lock = threading.Lock()

    def add(self, number: int, body: bytes, send: Send) -> None:
        """Spool part `number`, then encrypt and send every part now known not to be last."""
        self.spool.put(number, body)  # every part, for a fresh start after a taint
        todo: list[tuple[int, bytes, Future[str]]] = []
        with self._lock:
            if number < self._next:
                self._tainted = True  # its old contents are encrypted and sent already
                return
            self._recent[number] = body
            while len(self._recent) > _RECENT:
                del self._recent[max(self._recent)]
            have = set(self.spool.numbers())
            while not self._tainted and self._next in have and self._next + 1 in have:
                n, fut = self._next, Future[str]()
                self._sent[n] = fut
                plain = self._recent.pop(n, None)
                todo.append((n, self._enc.update(plain if plain is not None
                                                 else self.spool.get(n)), fut))
                self._next += 1
        for n, ciphertext, fut in todo:
            try:
                fut.set_result(send(n, ciphertext))
            except BaseException as exc:
                fut.set_exception(exc)
                with self._lock:
                    self._tainted = True
                raise

    def finish(self, numbers: list[int], send: Send) -> list[tuple[int, str]] | None:
        """Encrypt and send the rest (the tag ends the last part); every (S3 part number,
        etag) in order, or None when the upload is tainted and must start again."""
        with self._lock:
            k = self._next - 1
            if self._tainted or numbers[:k] != list(range(1, k + 1)):
                return None
            sent = dict(self._sent)
        done: list[tuple[int, str]] = []
        for n in range(1, k + 1):
            try:
                done.append((n, sent[n].result()))
            except Exception:
                return None
        rest = numbers[k:]
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            futs: list[tuple[int, Future[str]]] = []
            for i, n in enumerate(rest, start=k + 1):
                body = self._enc.update(self.spool.get(n))
                if i == len(numbers):
                    body += self._enc.finish()
                while sum(not f.done() for _n, f in futs) >= _PARALLEL:  # bounds memory
                    next(f for _n, f in futs if not f.done()).result()
                futs.append((i, pool.submit(send, i, body)))
            if not rest:  # every part went early: the tag alone is the last part
                futs.append((k + 1, pool.submit(send, k + 1, self._enc.finish())))
            done += [(i, f.result()) for i, f in futs]
        return done
