"""A version whose write or close failed is never uploaded (docs/INTERNALS.md, "Faults: full
disk, outages, bounded waits").

On a full cache disk a write fails with ENOSPC halfway through a file, or close() cannot journal
the file.  Uploading what staging holds then would put a 0-byte or half-length object under the
name — replacing the previous good version.  So a failed write or journal write marks the
content (`Content.failed`), every later close() of it reports that error, and when the last
writer closes the content is abandoned: the file is again what S3 holds (a new file: empty).
"""

from __future__ import annotations

import errno
import logging
import os

from s3encfs.fs.nodes import Content

log = logging.getLogger("s3encfs.fs")


def failure_errno(exc: OSError) -> int:
    """What a writer is told: a full disk as such, anything else EIO."""
    return exc.errno if exc.errno in (errno.ENOSPC, errno.EDQUOT) else errno.EIO


def mark_failed(c: Content, code: int, path: str) -> None:
    if not c.failed:
        log.error("%r: a write failed (%s); this version of the file will not be uploaded",
                  path, os.strerror(code))
    c.failed = c.failed or code
