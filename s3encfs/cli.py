"""The `s3encfs` command line."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Any, NoReturn

import click

from s3encfs import __version__
from s3encfs.errors_cli import OneLineGroup

# The subcommands kept in their own modules, imported only when one of them runs (or `--help`
# and the man page list them): importing them all made `s3encfs umount`, which every durable
# unmount waits for, cost 0.7 s of CPU (boto3, the keyring, trio) before it did anything.
# A module that cannot be imported (an optional dependency missing) leaves its command out.
LAZY_COMMANDS = {
    "key": ("s3encfs.keys.cli", "key"), "config": ("s3encfs.config_check", "config"),
    "status": ("s3encfs.control_cli", "status"), "flush": ("s3encfs.control_cli", "flush"),
    "backup": ("s3encfs.backup", "backup"), "rekey": ("s3encfs.rekey", "rekey"),
    "info": ("s3encfs.info", "info"), "check": ("s3encfs.check", "check"),
    "versions": ("s3encfs.versions", "versions"), "restore": ("s3encfs.restore", "restore"),
    "mounts": ("s3encfs.mounts", "mounts_cmd"), "ls": ("s3encfs.browse", "ls_cmd"),
    "cat": ("s3encfs.browse", "cat_cmd"), "get": ("s3encfs.browse", "get_cmd"),
}


class LazyGroup(OneLineGroup):
    """`OneLineGroup` whose `LAZY_COMMANDS` are imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [n for n in LAZY_COMMANDS if self.get_command(ctx, n) is not None]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in LAZY_COMMANDS:
            return cmd
        import importlib

        module, attr = LAZY_COMMANDS[name]
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        if name == "key":
            _add_key_commands(cmd)
        self.add_command(cmd, name)
        return cmd


def _add_key_commands(key: click.Group) -> None:
    try:
        from s3encfs.keys.passchange import change_passphrase_cmd
    except ImportError:
        return
    key.add_command(change_passphrase_cmd)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s3encfs")
def main() -> None:
    """Mount an S3 bucket as an encrypted directory."""


@main.command("mount")
@click.argument("source", required=False)
@click.argument("mountpoint", required=False)
@click.option("--config", "config_name", help="Config name (/etc/s3encfs/NAME.toml) or path.")
@click.option("--endpoint-url", help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL).")
@click.option("--region")
@click.option("--profile", help="AWS shared-config profile.")
@click.option("--encryption", help="client (default) | none | sse-s3 | sse-kms[:KEY] | "
              "dsse-kms[:KEY] | sse-c:KEYNAME | client+<sse mode>")
@click.option("--bucket-key/--no-bucket-key", default=None, help="S3 Bucket Keys for SSE-KMS.")
@click.option("--key", help="Master key name(s) from the keyring, newest first (client mode).")
@click.option("--keyring", "--keyring-dir", "keyring",
              help="Key store directory (--keyring-dir, as `s3encfs key` spells it).")
@click.option("--plain-names", is_flag=True, default=False,
              help="Client mode: encrypt contents but keep file names readable.")
@click.option("--allow-unverified-sse", is_flag=True, default=False,
              help="Mount even when the server does not prove it enforces the SSE mode.")
@click.option("--read-unencrypted", is_flag=True, default=None,
              help="sse-c: also serve objects stored without SSE-C (for migrations; otherwise "
              "they read as EIO).")
@click.option("--allow-insecure-http", is_flag=True, default=None,
              help="sse-c: allow an http:// endpoint that is not on this machine (the key "
              "would cross the network in clear).")
@click.option("--log-plain-names", is_flag=True, default=None,
              help="Client mode: log plaintext file names (default: encoded keys or keyed "
              "hashes only).")
@click.option("--init", is_flag=True, default=None,
              help="Client mode: record this master key in a prefix that has objects but no "
              "keycheck (after checking that none of them disproves the key).")
@click.option("--s3ec-kms-key", help="s3ec mode: KMS key id/ARN (kms+context "
              "wrapping); NEW,OLD,... also reads objects under the older KMS keys.")
@click.option("--s3ec-kms-context", help="s3ec mode: KMS encryption context, k=v,k2=v2.")
@click.option("--s3ec-rsa-key", help="s3ec mode: RSA PEM file(s); a public key only writes.")
@click.option("--s3ec-version", type=click.Choice(["2", "3"]),
              help="s3ec mode: write V3 (key-committing, default) or V2 objects.")
@click.option("--s3ec-unauthenticated-ranges", is_flag=True, default=None,
              help="s3ec mode: serve ranges before the whole-object tag is verified (CTR).")
@click.option("--cache-dir")
@click.option("--cache-size", help="Read cache limit, e.g. 10G.")
@click.option("--upload-delay", type=float, help="Seconds a closed file waits before upload.")
@click.option("--dir-ttl", type=float,
              help="Seconds a directory listing is trusted (other writers show up after it).")
@click.option("--attr-timeout", type=float, help="Kernel attribute/entry cache seconds.")
@click.option("--fast-list/--no-fast-list", default=None,
              help="A cold tree walk lists whole subtrees, 1,000 keys per request (default on).")
@click.option("--bwlimit", help="Upload bandwidth limit per second, e.g. 10M (default: none).")
@click.option("--read-timeout", type=float,
              help="Seconds without data from S3 before a request is retried (default 60).")
@click.option("--connect-timeout", type=float, help="S3 connect timeout seconds (default 10).")
@click.option("--sync-timeout", type=float,
              help="Seconds fsync waits for S3 before it fails with EIO (default 120).")
@click.option("--s3-client", type=click.Choice(["crt", "boto3"]),
              help="Library for object reads and writes: crt (awscrt, default) or boto3.")
@click.option("--as-of", help="Read-only view of a versioned bucket as it was at TIME "
              "(2026-11-24T02:00, 'yesterday 02:00', '3 days ago', a backup's restore point).")
@click.option("--object-lock", help="Retention on every object written: governance:30d | "
              "compliance:30d (needs a bucket with Object Lock).")
@click.option("-o", "options", multiple=True, help="FUSE options: allow_other, ro, ...")
@click.option("-f", "--foreground", is_flag=True, default=None)
@click.option("--debug", multiple=True, help="Debug logging for subsystems: fs,store,cache,all")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level (default: info, or log_level in the config).")
@click.option("-v", "--verbose", "log_level", flag_value="debug", help="Same as --log-level debug.")
@click.option("-q", "--quiet", "log_level", flag_value="warning",
              help="Same as --log-level warning.")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Log to this file (rotated at 10 MiB) instead of stderr / CACHE/mount.log.")
def mount_cmd(source: str | None, mountpoint: str | None, config_name: str | None,
              **flags: Any) -> None:
    """Mount s3://BUCKET[/PREFIX] at MOUNTPOINT."""
    from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_size
    from s3encfs.logsetup import setup_logging
    from s3encfs.mount import MountError, daemonize_and_mount, run_mount

    flags["plain_names"] = flags["plain_names"] or None
    flags["allow_unverified_sse"] = flags["allow_unverified_sse"] or None
    if flags.get("s3ec_version"):
        flags["s3ec_version"] = int(flags["s3ec_version"])
    if mountpoint:
        mountpoint = os.path.abspath(mountpoint)
    for path_flag in ("cache_dir", "log_file"):
        if flags.get(path_flag):
            flags[path_flag] = os.path.abspath(flags[path_flag])
    try:
        cfg = load_config(config_name) if config_name else MountConfig()
        for size_flag in ("cache_size", "bwlimit"):
            if flags.get(size_flag) is not None:
                flags[size_flag] = parse_size(flags[size_flag])
        cfg = merge(cfg, {"source": source, "mountpoint": mountpoint, **flags})
    except ConfigError as exc:
        raise exc from None  # one line, exit 78 (errors_cli)
    if not cfg.source or not cfg.mountpoint:
        raise click.UsageError("need SOURCE and MOUNTPOINT (or --config NAME)")
    setup_logging(cfg.debug, bool(cfg.foreground), cfg.log_level,
                  cfg.log_file if cfg.foreground else None)
    try:
        if cfg.foreground:
            exit_at_once(run_mount(cfg))
        else:
            code = daemonize_and_mount(cfg)
    except MountError as exc:
        # 78 = EX_CONFIG: systemd's RestartPreventExitStatus stops retrying a bad setup
        from s3encfs.errors_cli import echo_error

        echo_error(str(exc))
        sys.exit(exc.code)
    sys.exit(code)


def exit_at_once(code: int) -> NoReturn:
    """End a foreground mount that has stopped: S3 has everything, the journal and cache are
    closed.  `os._exit` skips the interpreter's teardown, which freed the mount's heap object by
    object (0.3-0.5 s of CPU after a 1 GiB write, up to 1.4 s of wall under load) while
    `s3encfs umount` and systemd wait for the process to end.  Logs and stdio are flushed first;
    nothing else in a mount runs at exit (no atexit handler)."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@main.command("umount")
@click.argument("mountpoint")
@click.option("--timeout", type=float, default=0,
              help="Give up after this many seconds: exit 1 with the pending count, still "
                   "mounted (0: wait).")
def umount_cmd(mountpoint: str, timeout: float) -> None:
    """Upload everything pending, then unmount; returns when S3 has every byte."""
    from s3encfs.mountpoint import MountpointError, check_ours

    mountpoint = os.path.abspath(mountpoint)
    try:
        check_ours(mountpoint)  # never unmount a filesystem that is not s3encfs
    except MountpointError as exc:
        raise click.ClickException(str(exc)) from None
    deadline = time.monotonic() + (timeout or 1e9)
    pid, left = _flush_before_umount(mountpoint, timeout)
    proc = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f"unmount failed: {proc.stderr.strip()}")
    if pid:  # the mount process finishes any last uploads, then exits
        _wait_mount_exit(int(pid), deadline)
    if left is not None:
        click.echo(f"s3encfs: unmounted, but {left}; the next mount replays them", err=True)
        sys.exit(1)


def _flush_before_umount(mountpoint: str, timeout: float) -> tuple[Any, Any]:
    """Ask the mount to upload everything: (its pid or None, the FlushIncomplete of journal
    rows S3 does not have, or None).  A timeout exits 1, still mounted."""
    from s3encfs.control import (
        ControlError,
        FlushIncomplete,
        control_socket_path,
        flush_request,
        query,
    )

    pid = None
    left: FlushIncomplete | None = None
    try:
        st = query(control_socket_path(mountpoint), "status", timeout=10)
        pid = st.get("pid")
        from s3encfs.waitprogress import watching

        with watching(mountpoint, "umount"):  # progress/ETA only; the wait is in the mount
            flush_request(mountpoint, timeout)
    except FlushIncomplete as exc:
        if exc.timed_out:  # S3 does not have it all: stay mounted, the uploads go on
            click.echo(f"s3encfs: not unmounted: {exc}; still mounted and retrying "
                       "(umount without --timeout waits for them)", err=True)
            sys.exit(1)
        left = exc  # journal rows S3 does not have: they replay at the next mount
    except (ControlError, OSError) as exc:
        if not os.path.ismount(mountpoint):
            raise click.ClickException(f"{mountpoint} is not mounted") from None
        click.echo(f"s3encfs: control socket not answering ({exc}); unmounting anyway", err=True)
    return pid, left


def _wait_mount_exit(pid: int, deadline: float) -> None:
    while _process_alive(pid):
        if time.monotonic() >= deadline:
            click.echo(f"s3encfs: unmounted, but the mount process {pid} is still "
                       "uploading after the timeout", err=True)
            sys.exit(1)
        time.sleep(0.05)


def _process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


if __name__ == "__main__":
    main()
