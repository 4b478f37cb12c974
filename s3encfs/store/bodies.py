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


class FileRangeStream(io.RawIOBase):
    """A `FileRange` as the seekable stream an awscrt request body reads (`readinto`)."""

    def __init__(self, rng: FileRange) -> None:
        super().__init__()
        self._rng = rng
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        n = max(0, min(len(out), self._rng.length - self._pos))
        if n:
            view = memoryview(out).cast("B")[:n]
            fill(self._rng.fd, self._rng.offset + self._pos, view)
            self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._rng.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos
