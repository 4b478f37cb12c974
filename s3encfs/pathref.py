"""Turning a user's PATH into (bucket settings, store, codec, path inside the mount), for
``versions`` and ``restore``.

PATH is either a path inside a running s3encfs mount (its settings come from the mount's
control socket) or ``s3://BUCKET[/PREFIX]`` — the *mount root* — with ``--path SUB`` for a
file or directory inside it (names are encoded by the codec, so in client mode the bucket keys
cannot be given directly) and the bucket options (--config, --encryption, --key, …).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import click

from s3encfs.config import ConfigError, MountConfig, load_config, merge


@dataclass
class Target:
    cfg: MountConfig
    store: Any  # ObjectStore
    codec: Any
    layout: Any  # Layout
    parts: tuple[str, ...]  # path inside the mount; () = the mount root
    mountpoint: str | None  # set when PATH was inside a running mount

    @property
    def display(self) -> str:
        return "/" + "/".join(self.parts)


def _find_mount(path: str) -> tuple[str, dict[str, Any]] | None:
    from s3encfs.control import ControlError, control_socket_path, query

    p = os.path.abspath(path)
    while True:
        if os.path.ismount(p):
            try:
                return p, query(control_socket_path(p), "status", timeout=10)
            except (ControlError, OSError):
                return None
        if p == "/":
            return None
        p = os.path.dirname(p)


def resolve(path: str, sub: str | None, config_name: str | None, flags: dict[str, Any]) -> Target:
    from s3encfs.mount import MountError, build_codec_and_policy, check_master_key
    from s3encfs.store import errors as se
    from s3encfs.store.layout import Layout
    from s3encfs.store.s3 import ObjectStore

    cfg, rel, mountpoint = _config_for(path, sub, config_name, flags)
    parts = tuple(p for p in rel.split("/") if p)
    try:
        codec, policy = build_codec_and_policy(cfg)
        store = ObjectStore(cfg.bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                            profile=cfg.profile, sse=policy)
        store.check_bucket()
        if getattr(codec, "name", "") == "client":
            codec = check_master_key(store, codec, cfg.prefix)
    except (MountError, se.StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    from s3encfs.store.longnames import with_long_names

    return Target(cfg, with_long_names(store, codec, cfg.prefix), codec, Layout(cfg.prefix, codec),
                  parts, mountpoint)


def _config_for(path: str, sub: str | None, config_name: str | None,
                flags: dict[str, Any]) -> tuple[MountConfig, str, str | None]:
    """(config, path relative to the source, mountpoint or None): from s3://… and the config
    file, or from the running mount that `path` is in (its settings, as status reports them)."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        if path.startswith("s3://"):
            cfg = load_config(config_name) if config_name else MountConfig()
            cfg = merge(cfg, {"source": path, **given, "mountpoint": cfg.mountpoint or "/"})
            return cfg, (sub or "").strip("/"), None
        found = _find_mount(path)
        if found is None:
            raise click.ClickException(f"{path} is not inside a running s3encfs mount "
                                       "(give s3://BUCKET[/PREFIX] and --path instead)")
        mountpoint, st = found
        settings = {k: v for k, v in (st.get("settings") or {}).items()
                    if v is not None and k != "as_of"}
        cfg = merge(MountConfig(), {"source": st["source"], **settings, **given,
                                    "mountpoint": mountpoint})
        rel = os.path.relpath(os.path.abspath(path), mountpoint)
        return cfg, "" if rel == "." else rel, mountpoint
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def path_options(f: Any) -> Any:
    """PATH, --path and the bucket options (as for check/info)."""
    from s3encfs.cli_options import bucket_options

    f = click.option("--path", "sub", help="With s3://…: the file or directory inside the "
                     "mount (default: the whole mount).")(f)
    f = bucket_options(encryption_help="The mount's mode (with s3://…; default: client).",
                       key_help="Client mode: master key name(s).")(f)
    return f
