"""Per-mount TOML configuration (``/etc/s3encfs/NAME.toml``): finding, reading, CLI merging.

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
from pathlib import Path
from typing import Any

# The parts of a configuration, re-exported: callers import them all from here.
from s3encfs.config_model import BackupConfig, MountConfig, default_cache_dir, needed_keys
from s3encfs.config_validate import LOG_LEVELS, validate
from s3encfs.config_values import (
    SSE_MODES,
    ConfigError,
    format_size,
    is_s3ec,
    parse_encryption,
    parse_size,
    parse_source,
)

__all__ = [
    "LOG_LEVELS", "SSE_MODES", "SYSTEM_CONFIG_DIR", "BackupConfig", "ConfigError", "MountConfig",
    "config_search_path", "default_cache_dir", "format_size", "is_s3ec", "load_config", "merge",
    "needed_keys", "parse_encryption", "parse_size", "parse_source", "resolve_config_path",
    "validate",
]

SYSTEM_CONFIG_DIR = Path("/etc/s3encfs")


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
