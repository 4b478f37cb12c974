"""A request body that is a range of an open file, read only as it is sent.

A plain-mode upload part is bytes of the staging file as they are.  Built in Python it cost a
`pread` per 64 KiB segment, a join into one 8 MiB `bytes` (fresh pages each time) and the CRT's
copy of it into its own buffer: three copies of every byte before the socket.  As a `FileRange`
the CRT's buffer is filled straight from the page cache (`preadv`), one copy
(docs/BENCHMARKS.md, "W1's CPU").  Clients that take only bytes get `read()`.

Past the file's end a range reads as zeros, as a staging file's unwritten tail does
(`StagingFile.read_segment`).  The caller keeps the file open, and its bytes unchanged, until
the request is over (a streamed part written again meanwhile is sent again at close).
"""

from __future__ import annotations

import io
import os
from typing import Any


class FileRange:
    """`length` bytes of the open file `fd` from `offset` (zeros past its end)."""

    __slots__ = ("fd", "length", "offset")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The whole range as bytes (for clients that send only bytes)."""
        buf = bytearray(self.length)
        fill(self.fd, self.offset, memoryview(buf))
        return bytes(buf)

    def stream(self) -> FileRangeStream:
        return FileRangeStream(self)


def fill(fd: int, offset: int, out: memoryview) -> None:
    """Read `len(out)` bytes of `fd` at `offset` into `out`; zeros past the file's end."""
    done, want = 0, len(out)
    while done < want:
        got = os.preadv(fd, [out[done:]], offset + done)
        if got <= 0:
            out[done:] = bytes(want - done)
            return
        done += got


class BodyStream(io.RawIOBase):
    """A seekable request body of `length` bytes that awscrt reads with `readinto`; a
    subclass says where bytes [pos, pos + len(out)) come from (`_fill`)."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self._length = length
        self._pos = 0

    def _fill(self, pos: int, out: memoryview) -> None:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        n = max(0, min(len(out), self._length - self._pos))
        if n:
            self._fill(self._pos, memoryview(out).cast("B")[:n])
            self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class FileRangeStream(BodyStream):
    """A `FileRange` as a request body stream, read from the file as it is sent."""

    def __init__(self, rng: FileRange) -> None:
        super().__init__(rng.length)
        self._rng = rng

    def _fill(self, pos: int, out: memoryview) -> None:
        fill(self._rng.fd, self._rng.offset + pos, out)


class BufferStream(BodyStream):
    """A request body read straight out of the caller's buffer: `io.BytesIO` shares a `bytes`
    object but copies a bytearray (S3EC's reused ciphertext buffers, store/s3ec_upload.py)."""

    def __init__(self, buf: bytearray) -> None:
        self._view = memoryview(buf)
        super().__init__(len(self._view))

    def _fill(self, pos: int, out: memoryview) -> None:
        out[:] = self._view[pos:pos + len(out)]
