"""What one mount is configured with: `MountConfig` and its ``[backup]`` table `BackupConfig`.

Plain data with derived views (bucket, prefix, cache dir, encryption mode); reading a file is
`config.load_config`, checking values against each other is `config_validate.validate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from s3encfs import defaults
from s3encfs.config_values import parse_encryption, parse_source


@dataclass(frozen=True)
class BackupConfig:
    """The ``[backup]`` table: what ``s3encfs backup NAME`` rsyncs into the mount."""

    source: str = ""
    excludes: list[str] = field(default_factory=list)
    exclude_from: str | None = None
    rsync_args: list[str] = field(default_factory=list)
    delete: bool = False  # rsync --delete only when the config says so
    subdir: str = ""  # inside the mountpoint; "" = this host's short name, "/" = the mount root
    flush_timeout: float = 3600.0


@dataclass
class MountConfig:
    name: str = ""
    source: str = ""  # s3://bucket[/prefix]
    mountpoint: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    encryption: str = "client"
    bucket_key: bool = False
    plain_names: bool = False  # client mode: keep file names readable
    allow_unverified_sse: bool = False  # mount even if the SSE canary fails
    log_plain_names: bool = False  # client mode: log file names, not keyed hashes
    init: bool = False  # client mode: (re)create the keycheck on a non-empty prefix
    read_unencrypted: bool = False  # sse-c: serve objects stored without SSE-C (migrations)
    allow_insecure_http: bool = False  # sse-c: allow http:// to a non-loopback endpoint
    key: str | None = None
    keyring: str | None = None  # key store path; None = the keyring module's default
    cache_dir: str = ""  # "" = default_cache_dir(name)
    cache_size: int = defaults.CACHE_SIZE
    max_dirty: int = defaults.MAX_DIRTY
    options: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_file: str = ""  # "" = stderr (the journal) in the foreground, CACHE/mount.log as daemon
    debug: list[str] = field(default_factory=list)
    upload_concurrency: int = defaults.UPLOAD_CONCURRENCY
    bwlimit: int = 0  # upload bytes per second, 0 = unlimited ("10M" = 10 MiB/s)
    download_concurrency: int = defaults.DOWNLOAD_CONCURRENCY  # read-ahead GETs in flight
    upload_delay: float = defaults.UPLOAD_DELAY  # seconds a closed file waits (coalescing)
    multipart_size: int = defaults.MULTIPART_SIZE
    attr_timeout: float = defaults.ATTR_TIMEOUT
    connect_timeout: float = 10.0  # seconds; each S3 request is retried by botocore
    read_timeout: float = 60.0  # seconds without a byte from S3 before a request is retried
    sync_timeout: float = defaults.SYNC_TIMEOUT  # fsync/fsyncdir: EIO after this long
    s3_client: str = "crt"  # data-plane library: crt (awscrt, ~4x less CPU/request) or boto3
    dir_ttl: float = defaults.DIR_TTL  # seconds a listing is trusted
    fast_list: bool = defaults.FAST_LIST  # cold walks list whole subtrees
    as_of: str | None = None  # read-only view of a versioned bucket at this time (timespec.py)
    object_lock: str | None = None  # "governance:30d" | "compliance:30d" (objectlock.py)
    # encryption = "s3ec": Amazon S3 Encryption Client objects (docs/ENCRYPTION.md)
    s3ec_kms_key: str | None = None  # KMS key id/ARN: kms+context keyring (writes if first)
    s3ec_kms_context: str | None = None  # "k=v,k2=v2", the KMS encryption context
    s3ec_rsa_key: str | None = None  # PEM file(s), comma separated: RSA-OAEP-SHA1 keyrings
    s3ec_version: int = 3  # 3: key-committing (default); 2 for pre-v3.6 SDK readers
    s3ec_unauthenticated_ranges: bool = False  # serve CTR ranges before the tag is checked
    foreground: bool = False
    backup: BackupConfig = field(default_factory=BackupConfig)
    path: str | None = None  # the file this came from, for messages

    @property
    def bucket(self) -> str:
        return parse_source(self.source)[0]

    @property
    def prefix(self) -> str:
        return parse_source(self.source)[1]

    @property
    def effective_cache_dir(self) -> str:
        return self.cache_dir or default_cache_dir(self.name or _mount_slug(self.mountpoint))

    @property
    def encryption_mode(self) -> tuple[bool, str | None, str | None]:
        """(client-side?, SSE mode or None, SSE key name/id or None)."""
        return parse_encryption(self.encryption)


def default_cache_dir(name: str) -> str:
    if os.geteuid() == 0:
        return f"/var/cache/s3encfs/{name}"
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("s3encfs"), name)


def _mount_slug(mountpoint: str) -> str:
    return mountpoint.strip("/").replace("/", "-") or "root"


def needed_keys(cfg: MountConfig) -> list[str]:
    client, sse, sse_key = cfg.encryption_mode
    keys = []
    if client:
        keys.append(cfg.key or "default")
    if sse == "sse-c" and sse_key:
        keys.append(sse_key)
    return keys
