"""`s3encfs ls|cat|get`: read a bucket the way a mount would, without mounting.

For restores on a machine without FUSE, or to look at one file: names are decoded and contents
decrypted and authenticated in every mode (client, SSE, plain). PATH is the plaintext path
inside the filesystem (as seen under the mountpoint). A segment that fails authentication stops
the command with exit 65: no byte of it is written.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import click

from s3encfs.cli_options import bucket_options

CHUNK_SEGMENTS = 128  # segments fetched per ranged GET (8 MiB with 64 KiB segments)


class BrowseError(click.ClickException):
    """Exit 1 with one line (errors_cli)."""


@dataclass
class Entry:
    name: str
    is_dir: bool
    key: str
    size: int  # object size as listed (ciphertext in client mode)
    mtime: float


@dataclass
class Source:
    store: Any
    codec: Any
    layout: Any

    def parts(self, path: str) -> tuple[str, ...]:
        return tuple(p for p in path.split("/") if p and p != ".")

    def listdir(self, parts: tuple[str, ...]) -> Iterator[Entry]:
        from s3encfs.codec import UndecodableName

        prefix = self.layout.dir_prefix(parts)
        control = self.layout.control_prefix()
        for page in self.store.list_pages(prefix):
            for p in page.prefixes:
                if p == control:
                    continue
                enc = p[len(prefix):].rstrip("/")
                try:
                    name = self.layout.decode_child(parts, enc)
                except UndecodableName:
                    continue  # not written by s3encfs with these keys
                yield Entry(name, True, p, 0, 0.0)
            for o in page.objects:
                enc = o.key[len(prefix):]
                if not enc or enc.endswith("/"):
                    continue  # the directory's own marker
                try:
                    name = self.layout.decode_child(parts, enc)
                except UndecodableName:
                    continue
                yield Entry(name, False, o.key, o.size, o.last_modified)

    def head(self, parts: tuple[str, ...]) -> Any:
        from s3encfs.store.errors import NotFound

        try:
            return self.store.head(self.layout.file_key(parts))
        except NotFound:
            return None

    def attrs(self, info: Any) -> Any:
        from s3encfs.store.layout import meta_to_attrs

        # client format v2 binds sealed attrs to the object's key: open them at that key
        meta = self.codec.open_attrs(info.metadata or {}, self.layout.rel_key(info.key))
        size = self.codec.geometry.plain_size(info.size)
        return meta_to_attrs(meta, default_mode=stat.S_IFREG | 0o644, size=size,
                             last_modified=info.last_modified)

    def read_into(self, info: Any, out: BinaryIO) -> int:
        """Decrypt and authenticate the whole object into `out`; plaintext bytes written."""
        lay = self.codec.geometry
        cipher = self.codec.open_object(info.metadata or {})
        plain = lay.plain_size(info.size)
        n = lay.segment_count(plain)
        written = 0
        for first in range(0, n, CHUNK_SEGMENTS):
            last = min(n, first + CHUNK_SEGMENTS) - 1
            start = lay.segment_object_range(first, plain)[0]
            end = lay.segment_object_range(last, plain)[1]
            chunk = self.store.get_range(info.key, start, end, if_match=info.etag or None)
            if len(chunk) != end - start:
                from s3encfs.codec import IntegrityError

                raise IntegrityError(f"{info.key}: short read at {start}")
            for i in range(first, last + 1):
                s, e = lay.segment_object_range(i, plain)
                data = cipher.decrypt_segment(i, chunk[s - start:e - start], i == n - 1)
                out.write(data)
                written += len(data)
        return written


def open_source(source: str | None, config_name: str | None, flags: dict[str, Any]) -> Source:
    from s3encfs.config import MountConfig, load_config, merge, parse_source
    from s3encfs.mount import build_codec_and_policy, check_master_key
    from s3encfs.store.layout import Layout
    from s3encfs.store.s3 import ObjectStore

    cfg = load_config(config_name) if config_name else MountConfig()
    given = {k: v for k, v in flags.items() if v is not None}
    cfg = merge(cfg, {"source": source, **given, "mountpoint": cfg.mountpoint or "/"})
    if not cfg.source:
        raise click.UsageError("need s3://BUCKET[/PREFIX] (or --config NAME)")
    bucket, prefix = parse_source(cfg.source)
    codec, policy = build_codec_and_policy(cfg)
    store = ObjectStore(bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                        profile=cfg.profile, sse=policy)
    store.check_bucket()
    if getattr(codec, "name", "") == "client":
        from s3encfs.store.errors import NotFound

        try:  # read-only: only check the key when the bucket has a keycheck (never write one)
            store.head(f"{prefix}.s3encfs/keycheck")
        except NotFound:
            pass
        else:
            codec = check_master_key(store, codec, prefix)
    from s3encfs.store.longnames import with_long_names

    return Source(with_long_names(store, codec, prefix), codec, Layout(prefix, codec))


def _options(f: Any) -> Any:
    return bucket_options("As for mount: client (default) | none | sse-… | client+<sse mode>.",
                          key_help="Client mode: master key name(s), newest first.")(f)


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="s3encfs: %(message)s")


@click.command("ls")
@_options
@click.argument("path", default="")
@click.option("-l", "long", is_flag=True, help="Mode, size, modification time.")
@click.option("-R", "recursive", is_flag=True, help="Every directory below PATH.")
def ls_cmd(source: str | None, config_name: str | None, path: str, long: bool,
           recursive: bool, **flags: Any) -> None:
    """List PATH (a directory inside s3://BUCKET[/PREFIX]) with decoded names."""
    _quiet()
    src = open_source(source, config_name, flags)

    def show(parts: tuple[str, ...], label: str) -> None:
        entries = sorted(src.listdir(parts), key=lambda e: e.name)
        if recursive:
            click.echo(f"{label or '.'}:")
        for e in entries:
            if not long:
                click.echo(e.name + ("/" if e.is_dir else ""))
                continue
            if e.is_dir:
                click.echo(f"drwxr-xr-x {'-':>12} {'-':19} {e.name}/")
                continue
            info = src.head((*parts, e.name))
            if info is None:
                continue
            a = src.attrs(info)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.mtime_ns / 1e9))
            click.echo(f"{stat.filemode(a.mode)} {a.size:>12} {when} {e.name}")
        if recursive:
            for e in entries:
                if e.is_dir:
                    click.echo("")
                    show((*parts, e.name), "/".join((*parts, e.name)))

    parts = src.parts(path)
    if parts and src.head(parts) is not None:
        click.echo(parts[-1])  # a file
        return
    show(parts, "/".join(parts))


@click.command("cat")
@_options
@click.argument("path")
def cat_cmd(source: str | None, config_name: str | None, path: str, **flags: Any) -> None:
    """Write the decrypted contents of the file PATH to stdout."""
    _quiet()
    src = open_source(source, config_name, flags)
    info = src.head(src.parts(path))
    if info is None:
        raise BrowseError(f"{path}: no such file in {source or config_name}")
    out = sys.stdout.buffer
    src.read_into(info, out)
    out.flush()


@click.command("get")
@_options
@click.argument("path")
@click.argument("dest", type=click.Path())
def get_cmd(source: str | None, config_name: str | None, path: str, dest: str,
            **flags: Any) -> None:
    """Download PATH (a file, or a directory and everything below it) to DEST, decrypted,
    with modes and modification times. Existing files in DEST are replaced."""
    _quiet()
    src = open_source(source, config_name, flags)
    parts = src.parts(path)
    t0 = time.monotonic()
    if parts and src.head(parts) is not None:
        target = os.path.join(dest, parts[-1]) if os.path.isdir(dest) else dest
        files, total = _get_file(src, parts, target)
    else:
        files, total = _get_tree(src, parts, dest)
    click.echo(f"got {files} files, {total} bytes in {time.monotonic() - t0:.1f}s", err=True)


def _get_tree(src: Any, dparts: tuple[str, ...], target: str) -> tuple[int, int]:
    """Every file below `dparts` into `target`: (files, bytes)."""
    files = total = 0
    os.makedirs(target, exist_ok=True)
    for e in src.listdir(dparts):
        get = _get_tree if e.is_dir else _get_file
        n, size = get(src, (*dparts, e.name), os.path.join(target, e.name))
        files += n
        total += size
    return files, total


def _get_file(src: Any, fparts: tuple[str, ...], target: str) -> tuple[int, int]:
    """One file (or symlink) to `target`, written under a temporary name first: (files, bytes)
    — (0, 0) when it is gone."""
    info = src.head(fparts)
    if info is None:
        return 0, 0
    a = src.attrs(info)
    tmp = f"{target}.s3encfs-part"
    try:
        with open(tmp, "wb") as out:
            total = src.read_into(info, out)
    except BaseException:
        os.unlink(tmp)  # never leave a partly restored (unauthenticated) file
        raise
    if stat.S_ISLNK(a.mode):
        with open(tmp, "rb") as f:
            link = os.fsdecode(f.read())
        os.unlink(tmp)
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(link, target)
    else:
        os.chmod(tmp, stat.S_IMODE(a.mode))
        os.utime(tmp, ns=(a.atime_ns, a.mtime_ns))
        os.replace(tmp, target)
    return 1, total
