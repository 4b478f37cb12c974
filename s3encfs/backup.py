"""``s3encfs backup NAME``: rsync the ``[backup]`` source of a mount config into its mountpoint,
wait until the mount has every byte in S3, then log one summary line (for the journal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import click

from s3encfs.config import ConfigError, MountConfig, load_config, validate

_STATS = {
    "files": re.compile(r"^Number of regular files transferred:\s*([\d,.]+)", re.M),
    "bytes": re.compile(r"^Total transferred file size:\s*([\d,.]+)", re.M),
    "deleted": re.compile(r"^Number of deleted files:\s*([\d,.]+)", re.M),
    "total_files": re.compile(r"^Number of files:\s*([\d,.]+)", re.M),
}


def build_rsync_argv(cfg: MountConfig) -> list[str]:
    b = cfg.backup
    if not b.source:
        raise ConfigError(f"{cfg.path or cfg.name}: no [backup] source configured")
    dest = os.path.join(cfg.mountpoint, b.subdir.strip("/")) if b.subdir else cfg.mountpoint
    argv = ["rsync", "-a", "--stats"]
    if b.delete:
        argv.append("--delete")
    for pattern in b.excludes:
        argv.append(f"--exclude={pattern}")
    if b.exclude_from:
        argv.append(f"--exclude-from={b.exclude_from}")
    argv += b.rsync_args
    return [*argv, b.source, dest.rstrip("/") + "/"]


def parse_stats(output: str) -> dict[str, int]:
    """The numbers of ``rsync --stats`` we report (missing ones are left out)."""
    out = {}
    for name, rx in _STATS.items():
        m = rx.search(output)
        if m:
            out[name] = int(m.group(1).replace(",", "").replace(".", ""))
    return out


def summary_line(name: str, code: int, stats: dict[str, int], seconds: float, note: str) -> str:
    state = "ok" if code == 0 else ("partial" if code in (23, 24) else "FAILED")
    parts = [f"backup {name}: {state} exit={code}"]
    parts += [f"{k}={stats[k]}" for k in ("files", "bytes", "deleted") if k in stats]
    parts.append(f"duration={seconds:.1f}s")
    if note:
        parts.append(note)
    return " ".join(parts)


def flush_mount(mountpoint: str, timeout: float) -> str:
    """Ask the mount to upload everything; '' on success, else why not."""
    from s3encfs.control import ControlError, control_socket_path, query

    try:
        query(control_socket_path(mountpoint), "flush", timeout=timeout or None)
    except ControlError as exc:
        return f"flush failed: {exc}"
    return ""


def run_backup(cfg: MountConfig, dry_run: bool = False) -> int:
    argv = build_rsync_argv(cfg)
    if dry_run:
        argv.insert(1, "--dry-run")
    if not dry_run and not os.path.ismount(cfg.mountpoint):
        click.echo(f"backup {cfg.name}: FAILED exit=1 {cfg.mountpoint} is not mounted")
        return 1
    start = time.monotonic()
    from s3encfs.keys.passphrase import child_env

    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, errors="replace",
                          env=child_env(os.environ))  # rsync needs no passphrase
    stats = parse_stats(proc.stdout)
    code = proc.returncode
    note = ""
    if code in (0, 23, 24) and not dry_run:  # partial transfers still need to reach S3
        note = flush_mount(cfg.mountpoint, cfg.backup.flush_timeout)
        if note and code == 0:
            code = 1
    if dry_run:
        note = "dry-run"
    elif code in (0, 23, 24) and not note:
        # everything is in S3 now: the time to give `mount --as-of` / `restore --as-of` to get
        # this run's tree back (on a versioned bucket; LastModified has whole seconds)
        from s3encfs.timespec import format_time

        note = f"restore_point={format_time(time.time())}"
    click.echo(summary_line(cfg.name, code, stats, time.monotonic() - start, note))
    sys.stdout.flush()
    return code


@click.command("backup")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Show what rsync would do; touch nothing.")
def backup(name: str, dry_run: bool) -> None:
    """rsync the [backup] source of config NAME into its mount; exit with rsync's code."""
    try:
        cfg = validate(load_config(name))
        build_rsync_argv(cfg)
    except ConfigError as exc:
        click.echo(f"backup {name}: FAILED exit=1 {exc}", err=True)
        raise SystemExit(1) from None
    raise SystemExit(run_backup(cfg, dry_run))
