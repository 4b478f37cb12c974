# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Issue 11 item 4: every filesystem setting a config can give reaches the mount, and the
filesystem layer's defaults are the config's (one source: s3encfs/defaults.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mounting import Mount, keyenv  # noqa: F401

from s3encfs.config import MountConfig
from s3encfs.fs.core import FsConfig

MiB = 1024 * 1024


def test_filesystem_defaults_are_the_configs() -> None:
    """Before: FsConfig said upload_delay 1 s, upload_concurrency 16, entry ttl 10 s, 8 MiB
    parts, while a mount without a config ran with 2 s, 8, 5 s and the config said 16 MiB."""
    fs, mc = FsConfig(cache_dir="unused"), MountConfig()
    seg = 64 * 1024  # both codecs' segment size
    pairs = {
        "cache_size": ("cache_size", fs.cache_size),
        "max_dirty": ("dirty_limit", fs.dirty_limit),
        "attr_timeout": ("entry_ttl", fs.entry_ttl),
        "dir_ttl": ("dir_ttl", fs.dir_ttl),
        "fast_list": ("fast_list", fs.fast_list),
        "upload_delay": ("upload_delay", fs.upload_delay),
        "upload_concurrency": ("upload_concurrency", fs.upload_concurrency),
        "download_concurrency": ("download_concurrency",
                                 getattr(fs, "download_concurrency", None)),
        "multipart_size": ("part_segments", fs.part_segments * seg),
        "sync_timeout": ("sync_timeout", fs.sync_timeout),
    }
    wrong = {k: (getattr(mc, k), fsname, v) for k, (fsname, v) in pairs.items()
             if getattr(mc, k) != v}
    assert wrong == {}


def test_fs_config_carries_every_setting() -> None:
    """A non-default value of each setting comes out in the filesystem's config."""
    from s3encfs.codec import IdentityCodec
    from s3encfs.fsconfig import fs_config

    mc = dataclasses.replace(MountConfig(), cache_size=3 * 1024**3, max_dirty=700 * MiB,
                             attr_timeout=1.5, dir_ttl=7.0, fast_list=False, upload_delay=0.25,
                             upload_concurrency=12, download_concurrency=3,
                             multipart_size=5 * MiB, sync_timeout=9.0, options=["ro"])
    fs = fs_config(mc, "cache", IdentityCodec().geometry)
    assert (fs.cache_size, fs.dirty_limit, fs.entry_ttl, fs.dir_ttl, fs.fast_list,
            fs.upload_delay, fs.upload_concurrency, fs.download_concurrency,
            fs.part_segments * 64 * 1024, fs.sync_timeout, fs.read_only) == (
        3 * 1024**3, 700 * MiB, 1.5, 7.0, False, 0.25, 12, 3, 5 * MiB, 9.0, True)


def test_download_concurrency_bounds_the_prefetch_gets(bucket, s3server, monkeypatch,
                                                       tmp_path) -> None:
    from s3encfs.codec import IdentityCodec
    from s3encfs.fs.core import FsCore
    from s3encfs.store.s3 import ObjectStore

    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=s3server.endpoint)
    cfg = FsConfig(cache_dir=str(tmp_path / "cache"))
    cfg.download_concurrency = 3
    core = FsCore(store, IdentityCodec(), "", cfg)
    try:
        assert core.prefetch_limiter.total_tokens == 3
    finally:
        core.journal.close()


def test_multipart_size_from_the_config_reaches_the_uploads(bucket, s3, keyenv, tmp_path):
    """12 MiB with multipart_size = "5M": a 3-part upload (ETag "…-3").  Before: the setting
    was ignored, and 12 MiB (under two 8 MiB parts) went up as one PUT."""
    conf = tmp_path / "m.toml"
    conf.write_text('multipart_size = "5M"\ndownload_concurrency = 3\n')
    m = Mount(f"s3://{bucket}", tmp_path / "mnt", tmp_path / "cache", keyenv,
              extra=["--config", str(conf)])
    with m:
        data = bytes(range(256)) * (12 * MiB // 256)
        (m.mountpoint / "twelve").write_bytes(data)
    head = s3.head_object(Bucket=bucket, Key="twelve")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    assert s3.get_object(Bucket=bucket, Key="twelve")["Body"].read() == data
    assert Path(m.log_path).exists()
