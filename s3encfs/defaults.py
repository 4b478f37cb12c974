"""The one source of the mount's tunable defaults.

`config.MountConfig` (what a user sets: TOML keys and flags) and `fs.core.FsConfig` (what the
filesystem layer runs with) both take their defaults from here, so a mount built without a
config and an in-process filesystem built with `FsConfig()` behave the same
(tests/test_config.py asserts they agree).
"""

from __future__ import annotations

CACHE_SIZE = 10 * 1024**3  # local disk cache, bytes
MAX_DIRTY = 2 * 1024**3  # bytes not yet in S3 before writers wait for uploads
UPLOAD_CONCURRENCY = 32  # uploads in flight (small files, markers, indexes; parts: 4)
DOWNLOAD_CONCURRENCY = 8  # read-ahead / prefetch GETs in flight
UPLOAD_DELAY = 2.0  # seconds a closed file waits before its upload (coalescing)
MULTIPART_SIZE = 8 * 1024**2  # part size of a multipart upload (an object of 2 parts or more)
ATTR_TIMEOUT = 5.0  # seconds the kernel caches attributes and entries
DIR_TTL = 30.0  # seconds a directory listing is trusted before S3 is asked again
SYNC_TIMEOUT = 120.0  # fsync/fsyncdir give EIO after this long without S3
FAST_LIST = True  # cold tree walks list whole subtrees
