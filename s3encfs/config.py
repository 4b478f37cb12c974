"""Per-mount TOML configuration (``/etc/s3encfs/NAME.toml``), CLI merging and ``config check``.

Every ``s3encfs mount`` flag has a key.  Example::

    source = "s3://backups/host1"
    mountpoint = "/srv/backup"
    endpoint_url = "https://s3.example.net"
    encryption = "client"   # none|sse-s3|sse-kms[:KEY]|dsse-kms[:KEY]|sse-c:KEYNAME|client+sse-…
    key = "host1"
    cache_size = "20G"
    options = ["allow_other"]

    [backup]
    source = "/home/"
    excludes = ["*.tmp", ".cache/"]
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3encfs import defaults

SYSTEM_CONFIG_DIR = Path("/etc/s3encfs")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SSE_MODES = ("sse-s3", "sse-kms", "dsse-kms", "sse-c")


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the file."""


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


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"10G"`` → bytes.  K/M/G/T/P and KiB… are powers of 1024; kB/MB/GB/TB are powers of 1000."""
    if isinstance(text, bool):
        raise ConfigError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must not be negative: {text}")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"not a size: {text!r} (examples: 512M, 10G, 1.5T, 4096)")
    number, unit, binary, byte = m.groups()
    exp = " kmgtp".index(unit.lower()) if unit else 0
    base = 1000 if (byte and not binary and unit) else 1024
    return int(float(number) * base**exp)


def format_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_source(source: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix/"); a prefix ends with '/' or is ''."""
    if not source.startswith("s3://"):
        raise ConfigError(f"source must look like s3://BUCKET[/PREFIX], got {source!r}")
    bucket, _, prefix = source[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket):
        raise ConfigError(f"invalid bucket name {bucket!r} in {source!r}")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def is_s3ec(spec: str) -> bool:
    """``--encryption s3ec``: objects in the Amazon S3 Encryption Client format."""
    return spec.strip().lower() == "s3ec"


def parse_encryption(spec: str) -> tuple[bool, str | None, str | None]:
    """``client``, ``none``, ``sse-kms:alias/x``, ``client+sse-c:k`` → (client, sse, sse_key)."""
    text = spec.strip().lower() if ":" not in spec else spec.strip()
    client = False
    rest = text
    if text.lower().startswith("client"):
        client = True
        rest = text[len("client") :]
        if rest and not rest.startswith("+"):
            raise ConfigError(f"bad encryption {spec!r}")
        rest = rest[1:]
        if not rest:
            return True, None, None
    elif text.lower() in ("none", "s3ec"):  # s3ec: is_s3ec(); no client format, no SSE
        return False, None, None
    mode, _, key = rest.partition(":")
    mode = mode.lower()
    if mode not in SSE_MODES:
        raise ConfigError(
            f"bad encryption {spec!r}: use client, none, s3ec, sse-s3, sse-kms[:KEY], "
            "dsse-kms[:KEY], sse-c:KEYNAME or client+<sse mode>"
        )
    if mode == "sse-s3" and key:
        raise ConfigError(f"sse-s3 takes no key: {spec!r}")
    if mode == "sse-c" and not key:
        raise ConfigError(f"sse-c needs a key name from the keyring: sse-c:KEYNAME ({spec!r})")
    return client, mode, key or None


def default_cache_dir(name: str) -> str:
    if os.geteuid() == 0:
        return f"/var/cache/s3encfs/{name}"
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("s3encfs"), name)


def _mount_slug(mountpoint: str) -> str:
    return mountpoint.strip("/").replace("/", "-") or "root"


_SIZE_FIELDS = {"cache_size", "max_dirty", "multipart_size", "bwlimit"}
_LIST_FIELDS = {"options", "debug"}


def _check_type(where: str, key: str, value: Any, expected: Any) -> Any:
    def bad(kind: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {kind}, got {value!r}")

    if key in _SIZE_FIELDS:
        try:
            return parse_size(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    if key in _LIST_FIELDS or expected == "list[str]":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, tuple):  # click's multiple=True
            value = list(value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if expected in ("bool",):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if expected in ("int",):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if expected in ("float",):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _coerce(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm not in types or norm in ("path", "backup", "name"):
            known = ", ".join(sorted(k for k in types if k not in ("path", "backup", "name")))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        if value is None:
            continue
        expected = types[norm].replace(" | None", "")
        out[norm] = _check_type(where, key, value, expected)
    return out


def validate(cfg: MountConfig, complete: bool = True) -> MountConfig:
    """Check values that depend on each other; ``complete`` requires source and mountpoint."""
    where = cfg.path or "configuration"
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
    _validate_operator(cfg, where)
    _check_history_keys(cfg, where)
    return cfg


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


def config_search_path(name: str) -> list[Path]:
    dirs = []
    if env := os.environ.get("S3ENCFS_CONFIG_DIR"):
        dirs.append(Path(env))
    dirs.append(SYSTEM_CONFIG_DIR)
    if os.geteuid() != 0:
        import platformdirs

        dirs.append(Path(platformdirs.user_config_dir("s3encfs")))
    return [d / f"{name}.toml" for d in dirs]


def resolve_config_path(name_or_path: str) -> Path:
    """A path (contains '/' or ends in .toml) as is; a NAME is looked up in the config dirs."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    if not re.fullmatch(r"[A-Za-z0-9_.@\-]+", name_or_path):
        raise ConfigError(f"invalid config name {name_or_path!r}")
    candidates = config_search_path(name_or_path)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"no config named {name_or_path!r}; looked in " + ", ".join(str(p) for p in candidates)
    )


def load_config(name_or_path: str) -> MountConfig:
    """Read and validate one mount's TOML file (source and mountpoint may come from flags later)."""
    path = resolve_config_path(name_or_path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    backup_raw = data.pop("backup", {})
    if not isinstance(backup_raw, dict):
        raise ConfigError(f"{path}: backup must be a table ([backup])")
    values = _coerce(MountConfig, data, str(path))
    backup = BackupConfig(**_coerce(BackupConfig, backup_raw, f"{path} [backup]"))
    cfg = MountConfig(name=path.stem, path=str(path), backup=backup, **values)
    return validate(cfg, complete=False)


def merge(config: MountConfig, cli_overrides: Mapping[str, Any]) -> MountConfig:
    """Flags win over the file; a value of None means "flag not given".  Validates the result.

    ``options`` given on the command line are appended to the file's options.
    """
    where = "command line"
    given = {k: v for k, v in cli_overrides.items() if v is not None and v != () and v != []}
    values = _coerce(MountConfig, given, where)
    if "options" in values:
        opts = [o for item in values["options"] for o in item.split(",") if o]
        values["options"] = list(config.options) + [o for o in opts if o not in config.options]
    if "debug" in values:
        values["debug"] = [d for item in values["debug"] for d in item.split(",") if d]
    return validate(dataclasses.replace(config, **values))


# ----------------------------------------------------------------------------- checks

def needed_keys(cfg: MountConfig) -> list[str]:
    client, sse, sse_key = cfg.encryption_mode
    keys = []
    if client:
        keys.append(cfg.key or "default")
    if sse == "sse-c" and sse_key:
        keys.append(sse_key)
    return keys
