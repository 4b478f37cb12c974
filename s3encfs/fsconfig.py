"""A mount's settings (`config.MountConfig`) → the filesystem layer's (`fs.core.FsConfig`).

Every setting a user can give that the filesystem layer uses goes through `fs_config`, in one
place, so none is parsed, validated and documented but never reaches the mount (issue 11:
`download_concurrency` and `multipart_size` did not).
"""

from __future__ import annotations

import os

from s3encfs.codec import SegmentGeometry
from s3encfs.config import MountConfig
from s3encfs.fs.core import FsConfig

MIN_UPLOAD_CONCURRENCY = 4  # streamed parts take half of the upload slots


def part_segments(multipart_size: int, seg: SegmentGeometry) -> int:
    """Segments per multipart part: `multipart_size` of plaintext (S3's 5 MiB minimum is
    checked by the config; the uploader rounds parts up to whole cache blocks)."""
    return max(1, multipart_size // seg.segment_size)


def fs_config(cfg: MountConfig, cache_dir: str, seg: SegmentGeometry) -> FsConfig:
    return FsConfig(cache_dir=cache_dir, cache_size=cfg.cache_size,
                    upload_delay=cfg.upload_delay, dirty_limit=cfg.max_dirty,
                    entry_ttl=cfg.attr_timeout, dir_ttl=cfg.dir_ttl, fast_list=cfg.fast_list,
                    upload_concurrency=max(MIN_UPLOAD_CONCURRENCY, cfg.upload_concurrency),
                    download_concurrency=cfg.download_concurrency,
                    part_segments=part_segments(cfg.multipart_size, seg),
                    read_only="ro" in cfg.options, uid=os.getuid(), gid=os.getgid(),
                    sync_timeout=cfg.sync_timeout)
