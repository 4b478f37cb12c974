"""Checks of a whole `MountConfig`: values that depend on each other, or on other modules.

`validate` runs after every load and merge, so a mistake is reported with the file (or "command
line") it came from, before anything is mounted.
"""

from __future__ import annotations

import os
import re

from s3encfs.config_model import MountConfig
from s3encfs.config_values import ConfigError, is_s3ec, parse_encryption, parse_source

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def validate(cfg: MountConfig, complete: bool = True) -> MountConfig:
    """Check values that depend on each other; ``complete`` requires source and mountpoint."""
    where = cfg.path or "configuration"
    client, sse = _validate_basics(cfg, where, complete)
    _validate_encryption(cfg, where, client, sse)
    _validate_tuning(cfg, where)
    _validate_operator(cfg, where)
    _check_history_keys(cfg, where)
    return cfg


def _validate_basics(cfg: MountConfig, where: str, complete: bool) -> tuple[bool, str | None]:
    """Source, mountpoint, encryption syntax, paths, log level: (client side, SSE mode)."""
    if complete and not cfg.source:
        raise ConfigError(f"{where}: no source (s3://BUCKET[/PREFIX]) given")
    if complete and not cfg.mountpoint:
        raise ConfigError(f"{where}: no mountpoint given")
    try:
        if cfg.source:
            parse_source(cfg.source)
        client, sse, _ = parse_encryption(cfg.encryption)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if cfg.mountpoint and not os.path.isabs(cfg.mountpoint):
        raise ConfigError(f"{where}: mountpoint must be an absolute path: {cfg.mountpoint!r}")
    if cfg.cache_dir and not os.path.isabs(cfg.cache_dir):
        raise ConfigError(f"{where}: cache_dir must be an absolute path: {cfg.cache_dir!r}")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"{where}: log_level must be one of {', '.join(LOG_LEVELS)}")
    return client, sse


def _validate_encryption(cfg: MountConfig, where: str, client: bool, sse: str | None) -> None:
    """Settings that apply to some encryption modes only."""
    if cfg.bucket_key and sse not in ("sse-kms", "dsse-kms"):
        raise ConfigError(f"{where}: bucket_key only applies to sse-kms / dsse-kms encryption")
    if cfg.key and not client and not is_s3ec(cfg.encryption):
        raise ConfigError(
            f"{where}: key names a client-side key, but encryption is {cfg.encryption!r}"
        )
    s3ec_set = [f for f in ("s3ec_kms_key", "s3ec_kms_context", "s3ec_rsa_key")
                if getattr(cfg, f)] + ["s3ec_unauthenticated_ranges"] * \
        cfg.s3ec_unauthenticated_ranges
    if s3ec_set and not is_s3ec(cfg.encryption):
        raise ConfigError(f"{where}: {', '.join(s3ec_set)} only apply to encryption = \"s3ec\"")
    if cfg.s3ec_version not in (2, 3):
        raise ConfigError(f"{where}: s3ec_version must be 2 or 3")


def _validate_tuning(cfg: MountConfig, where: str) -> None:
    """Concurrency, sizes, delays, the S3 client."""
    for name in ("upload_concurrency", "download_concurrency"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{where}: {name} must be at least 1")
    if cfg.multipart_size < 5 * 1024**2:
        raise ConfigError(f"{where}: multipart_size must be at least 5M (an S3 limit)")
    if cfg.max_dirty < cfg.multipart_size:
        raise ConfigError(f"{where}: max_dirty must be at least multipart_size")
    if cfg.upload_delay < 0:
        raise ConfigError(f"{where}: upload_delay must not be negative")
    if cfg.sync_timeout <= 0:
        raise ConfigError(f"{where}: sync_timeout must be positive")
    if cfg.s3_client not in ("crt", "boto3"):
        raise ConfigError(f"{where}: s3_client must be crt or boto3, not {cfg.s3_client!r}")


def _check_history_keys(cfg: MountConfig, where: str) -> None:
    from s3encfs.objectlock import ObjectLockError, parse_object_lock
    from s3encfs.timespec import TimeSpecError, parse_time

    try:
        if cfg.as_of:
            parse_time(cfg.as_of)
        if cfg.object_lock:
            parse_object_lock(cfg.object_lock)
    except (TimeSpecError, ObjectLockError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if cfg.as_of and cfg.object_lock:
        raise ConfigError(f"{where}: as_of mounts are read-only; object_lock does not apply")


def _validate_operator(cfg: MountConfig, where: str) -> None:
    """Mistakes that otherwise surface late as a traceback (debug names, endpoint, -o)."""
    from s3encfs.fuse_options import FuseOptionError, fuse_options
    from s3encfs.logsetup import SUBSYSTEMS

    for name in cfg.debug:
        if name not in (*SUBSYSTEMS, "all"):
            raise ConfigError(f"{where}: unknown debug subsystem {name!r} "
                              f"(one of: all, {', '.join(SUBSYSTEMS)})")
    if cfg.endpoint_url and not re.match(r"^https?://[^/]", cfg.endpoint_url):
        raise ConfigError(f"{where}: endpoint_url {cfg.endpoint_url!r} needs a scheme, e.g. "
                          "https://s3.example.net or http://127.0.0.1:8333")
    try:
        fuse_options(cfg.options)
    except FuseOptionError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if cfg.log_file and not os.path.isabs(cfg.log_file):
        raise ConfigError(f"{where}: log_file must be an absolute path: {cfg.log_file!r}")
