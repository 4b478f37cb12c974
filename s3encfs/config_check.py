"""`s3encfs config check|show`: the pre-mount checks and what a mount with a config would do.

Split out of config.py (issue 11: one job per module); config.py parses and validates, this
module probes (FUSE, mountpoint, cache dir, keys, bucket) and prints.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import click

from s3encfs.config import (
    MountConfig,
    format_size,
    is_s3ec,
    load_config,
    needed_keys,
    validate,
)

Check = tuple[str, bool, str]
KeyLookup = Callable[[MountConfig, str], object]
BucketCheck = Callable[[MountConfig], object]


def _default_key_lookup(cfg: MountConfig, name: str) -> object:
    keyring_mod: Any = importlib.import_module("s3encfs.keys.keyring")  # lazy: teammate's module
    ring = keyring_mod.Keyring(cfg.keyring) if cfg.keyring else keyring_mod.Keyring()
    return ring.get(name)


def _default_bucket_check(cfg: MountConfig) -> object:
    s3_mod: Any = importlib.import_module("s3encfs.store.s3")  # lazy: teammate's module
    store = s3_mod.ObjectStore(
        cfg.bucket, endpoint_url=cfg.endpoint_url, region=cfg.region, profile=cfg.profile
    )
    return store.check_bucket()


def _check_cache_dir(path: str) -> Check:
    label = f"cache dir {path}"
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-") as f:
            f.write(b"x")
            f.flush()
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return label, False, f"not writable: {exc.strerror or exc}"
    return label, True, f"writable, {format_size(free)} free"


def _check_mountpoint(path: str) -> Check:
    label = f"mountpoint {path}"
    if not os.path.isdir(path):
        return label, False, "does not exist or is not a directory (create it: mkdir -p)"
    if os.path.ismount(path):
        return label, False, "something is already mounted there"
    return label, True, "directory exists"


def _check_fuse() -> Check:
    if not os.path.exists("/dev/fuse"):
        return "fuse", False, "/dev/fuse missing (modprobe fuse; install fuse3)"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "fuse", False, "fusermount3 not found (install fuse3)"
    return "fuse", True, "/dev/fuse present"


def check_config(
    cfg: MountConfig,
    key_lookup: KeyLookup | None = None,
    bucket_check: BucketCheck | None = None,
) -> list[Check]:
    """Run every pre-mount check; never raises, never prints key material."""
    results: list[Check] = [_check_fuse(), _check_mountpoint(cfg.mountpoint)]
    results.append(_check_cache_dir(cfg.effective_cache_dir))
    lookup = key_lookup or _default_key_lookup
    for name in needed_keys(cfg):
        label = f"key {name!r}"
        try:
            found = lookup(cfg, name)
        except ImportError:
            results.append((label, False, "keyring module not available"))
        except Exception as exc:
            results.append((label, False, f"{type(exc).__name__}: {exc}"))
        else:
            ok = found is not None
            results.append((label, ok, "present in keyring" if ok else "not in keyring"))
    probe = bucket_check or _default_bucket_check
    label = f"bucket {cfg.bucket}"
    try:
        answer = probe(cfg)
    except ImportError:
        results.append((label, False, "store module not available"))
    except Exception as exc:
        results.append((label, False, f"{type(exc).__name__}: {exc}"))
    else:
        ok = answer is not False
        detail = answer if isinstance(answer, str) else ("reachable" if ok else "not reachable")
        results.append((label, ok, detail))
    return results


def describe(cfg: MountConfig) -> list[tuple[str, str]]:
    """What a mount with this config would do, as (label, value) lines."""
    client, sse, sse_key = cfg.encryption_mode
    parts = []
    if client:
        parts.append(f"client-side (key {cfg.key or 'default'!r})")
    if is_s3ec(cfg.encryption):
        keys = [f"key {cfg.key!r}"] * bool(cfg.key) + [f"KMS {cfg.s3ec_kms_key!r}"] * bool(
            cfg.s3ec_kms_key) + [f"RSA {cfg.s3ec_rsa_key!r}"] * bool(cfg.s3ec_rsa_key)
        parts.append(f"S3 Encryption Client V{cfg.s3ec_version} ({', '.join(keys) or 'no key'})")
    if sse:
        extra = f" key {sse_key!r}" if sse_key else ""
        parts.append(f"{sse}{extra}{' with bucket key' if cfg.bucket_key else ''}")
    cache = (
        f"{cfg.effective_cache_dir} ({format_size(cfg.cache_size)}, "
        f"max dirty {format_size(cfg.max_dirty)})"
    )
    return [
        ("config", cfg.path or "(flags only)"),
        ("source", cfg.source),
        ("mountpoint", cfg.mountpoint),
        ("endpoint", cfg.endpoint_url or "(AWS default)"),
        ("encryption", " + ".join(parts) or "none (plaintext objects)"),
        ("cache", cache),
        ("options", ",".join(cfg.options) or "-"),
    ]


@click.group("config")
def config() -> None:
    """Inspect mount configurations (/etc/s3encfs/NAME.toml)."""


@config.command("check")
@click.argument("name")
def check_cmd(name: str) -> None:
    """Show what mounting NAME would do and run the pre-mount checks (exit 1 on failure; 78,
    EX_CONFIG, with one line for an unknown or invalid config, as the mount does)."""
    cfg = validate(load_config(name))  # ConfigError: one line + 78 (errors_cli)
    for label, value in describe(cfg):
        click.echo(f"{label:>10}: {value}")
    click.echo("")
    results = check_config(cfg)
    for label, ok, detail in results:
        mark = click.style(" ok ", fg="green") if ok else click.style("FAIL", fg="red")
        click.echo(f"[{mark}] {label}: {detail}")
    if not all(ok for _, ok, _ in results):
        raise SystemExit(1)


@config.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Print the effective configuration of NAME with defaults filled in."""
    cfg = load_config(name)  # ConfigError: one line + 78 (errors_cli)
    for f in dataclasses.fields(cfg):
        if f.name not in ("backup", "path", "name"):
            click.echo(f"{f.name} = {getattr(cfg, f.name)!r}")
    for f in dataclasses.fields(cfg.backup):
        click.echo(f"backup.{f.name} = {getattr(cfg.backup, f.name)!r}")
