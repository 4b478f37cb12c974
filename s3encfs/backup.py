"""``s3encfs backup NAME``: rsync the ``[backup]`` source of a mount config into its mountpoint,
wait until the mount has every byte in S3, then log one summary line (for the journal)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import click

from s3encfs.config import ConfigError, MountConfig, load_config, validate

# an --itemize-changes line: "YXcstpoguax name" or "*deleting   name"
_ITEM = re.compile(r"^(\*deleting|[<>ch.*][fdLDS][.+?a-zA-Z]{9}) ")
_STATS = {
    "files": re.compile(r"^Number of regular files transferred:\s*([\d,.]+)", re.M),
    "bytes": re.compile(r"^Total transferred file size:\s*([\d,.]+)", re.M),
    "deleted": re.compile(r"^Number of deleted files:\s*([\d,.]+)", re.M),
    "total_files": re.compile(r"^Number of files:\s*([\d,.]+)", re.M),
}


def host_subdir() -> str:
    """The default [backup] subdir: this machine's short host name, so two hosts backing up
    into one prefix (or a backup into a prefix holding other files) never touch each other."""
    return socket.gethostname().split(".")[0] or "host"


def destination(cfg: MountConfig) -> str:
    """Where rsync writes: MOUNTPOINT/SUBDIR (default: the host name; "/" = the mount root)."""
    sub = cfg.backup.subdir if cfg.backup.subdir else host_subdir()
    sub = sub.strip("/")
    return (os.path.join(cfg.mountpoint, sub) if sub else cfg.mountpoint).rstrip("/") + "/"


def build_rsync_argv(cfg: MountConfig, dry_run: bool = False) -> list[str]:
    b = cfg.backup
    if not b.source:
        raise ConfigError(f"{cfg.path or cfg.name}: no [backup] source configured")
    argv = ["rsync", "-a", "--stats"]
    if dry_run:  # list every change, one line each (rsync's --itemize-changes)
        argv += ["--dry-run", "--itemize-changes", "--out-format=%i %n%L"]
    if b.delete:  # only when configured (delete = true): never by default
        argv.append("--delete")
    for pattern in b.excludes:
        argv.append(f"--exclude={pattern}")
    if b.exclude_from:
        argv.append(f"--exclude-from={b.exclude_from}")
    argv += b.rsync_args
    return [*argv, b.source, destination(cfg)]


def parse_stats(output: str) -> dict[str, int]:
    """The numbers of ``rsync --stats`` we report (missing ones are left out)."""
    out = {}
    for name, rx in _STATS.items():
        m = rx.search(output)
        if m:
            out[name] = int(m.group(1).replace(",", "").replace(".", ""))
    return out


def summary_line(name: str, code: int, stats: dict[str, int], seconds: float, note: str,
                 dry_run: bool = False) -> str:
    state = "ok" if code == 0 else ("partial" if code in (23, 24) else "FAILED")
    parts = [f"backup {name}: {state} exit={code}"]
    prefix = "would_" if dry_run else ""  # a dry run changed nothing: no past tense
    names = {"files": "transfer", "deleted": "delete"} if dry_run else {}
    parts += [f"{prefix}{names.get(k, k)}={stats[k]}" for k in ("files", "bytes", "deleted")
              if k in stats]
    parts.append(f"duration={seconds:.1f}s")
    if note:
        parts.append(note)
    return " ".join(parts)


def flush_mount(mountpoint: str, timeout: float) -> str:
    """Ask the mount to upload everything; '' on success, else why not."""
    from s3encfs.control import ControlError, control_socket_path, query

    try:
        from s3encfs.waitprogress import watching

        with watching(mountpoint, "backup"):  # progress/ETA only; the wait is here
            query(control_socket_path(mountpoint), "flush", timeout=timeout or None)
    except ControlError as exc:
        return f"flush failed: {exc}"
    return ""


def _not_our_mount(mountpoint: str) -> str:
    """'' when an s3encfs filesystem is mounted at `mountpoint`, else why not (a dry run too:
    listing against the empty local directory underneath would show a full copy)."""
    from s3encfs.mountpoint import MountpointError, check_ours

    try:
        entry = check_ours(mountpoint)
    except MountpointError as exc:
        return str(exc)
    return "" if entry is not None else f"{mountpoint} is not mounted"


def run_backup(cfg: MountConfig, dry_run: bool = False) -> int:
    argv = build_rsync_argv(cfg, dry_run)
    why = _not_our_mount(cfg.mountpoint)
    if why:
        click.echo(f"backup {cfg.name}: FAILED exit=1 {why}")
        return 1
    start = time.monotonic()
    if not dry_run:
        os.makedirs(destination(cfg), exist_ok=True)
    from s3encfs.keys.passphrase import child_env

    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, errors="replace",
                          env=child_env(os.environ))  # rsync needs no passphrase
    stats = parse_stats(proc.stdout)
    code = proc.returncode
    if dry_run:  # the itemized changes, then the summary
        for line in proc.stdout.splitlines():
            if _ITEM.match(line):
                click.echo(("would delete " + line[10:]) if line.startswith("*deleting")
                           else f"would change {line}")
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
    click.echo(summary_line(cfg.name, code, stats, time.monotonic() - start, note, dry_run))
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
