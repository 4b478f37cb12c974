"""What is mounted at a path, and whether s3encfs may mount (or unmount) there.

Used before mounting (a dead s3encfs mount left by a crash or a watchdog kill is detached so
the service comes back; a live mount or a non-empty directory is refused) and by `s3encfs
umount` (which only ever unmounts an s3encfs filesystem). Reads /proc/self/mountinfo, so it
works on a dead FUSE mount, where stat() fails with ENOTCONN.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
from dataclasses import dataclass

log = logging.getLogger("s3encfs.mount")

FSTYPE = "fuse.s3encfs"  # pyfuse3 mounts with subtype=s3encfs


class MountpointError(Exception):
    """A one-line reason why this mountpoint cannot be used."""


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    out: list[MountEntry] = []
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        parts, tail = left.split(), right.split()
        if not sep or len(parts) < 5 or len(tail) < 2:
            continue
        out.append(MountEntry(_unescape(parts[4]), tail[0], _unescape(tail[1])))
    return out


def entry_at(path: str) -> MountEntry | None:
    """The topmost mount exactly at `path` (None if nothing is mounted there)."""
    path = os.path.normpath(os.path.abspath(path))
    found = None
    for entry in mounts():
        if entry.mountpoint == path:
            found = entry  # later lines are mounted on top
    return found


def is_dead(path: str) -> bool:
    """True for a FUSE mount whose daemon is gone ("Transport endpoint is not connected").
    statvfs, not stat: the kernel answers a stat from its attribute cache for up to the attr
    timeout without asking the (dead) daemon, while every statfs is a request."""
    try:
        os.statvfs(path)
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def detach(path: str) -> None:
    proc = subprocess.run(["fusermount3", "-uz", path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountpointError(f"cannot detach the dead mount at {path}: "
                              f"{proc.stderr.strip() or 'fusermount3 failed'}")


def prepare_mountpoint(path: str, *, nonempty: bool = False) -> None:
    """Make `path` ready to mount on, or raise MountpointError.

    A dead s3encfs mount (its process killed) is detached: its pending uploads are in the cache
    journal, which the new mount replays. Anything else mounted there is refused, and so is a
    non-empty directory (its files would be hidden) unless `nonempty`."""
    entry = entry_at(path)
    if entry is not None:
        if entry.fstype == FSTYPE and is_dead(path):
            log.warning("detaching the dead s3encfs mount at %s (%s) left by a crashed or "
                        "killed mount; its journal replays now", path, entry.source)
            detach(path)
        elif entry.fstype == FSTYPE:
            raise MountpointError(f"mountpoint {path} is busy: {entry.source} is already "
                                  "mounted there (see `s3encfs mounts`)")
        else:
            raise MountpointError(f"mountpoint {path} is busy: a {entry.fstype} filesystem "
                                  f"({entry.source}) is mounted there")
    if not os.path.isdir(path):
        raise MountpointError(f"mountpoint {path} does not exist or is not a directory")
    if not nonempty:
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise MountpointError(f"mountpoint {path}: {exc.strerror}") from None
        if names:
            raise MountpointError(
                f"mountpoint {path} is not empty ({len(names)} entries would be hidden under "
                "the mount); empty it, or pass -o nonempty to mount over them")


def check_ours(path: str) -> MountEntry | None:
    """For `s3encfs umount`: the s3encfs mount at `path`, None if nothing is mounted; raises
    MountpointError for any other filesystem (never unmount what is not ours)."""
    entry = entry_at(path)
    if entry is None:
        return None
    if entry.fstype != FSTYPE:
        raise MountpointError(f"{path} is a {entry.fstype} filesystem ({entry.source}), not "
                              "s3encfs: not unmounting it")
    return entry
