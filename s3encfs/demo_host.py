"""The demo's footing on this machine: its lock, the mount table, messages, the CLI's name."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from s3encfs.mountpoint import entry_at, is_dead


class DemoError(RuntimeError):
    """Something the user should read; printed without a traceback."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


def is_mounted(path: Path) -> bool:
    """True when `path` is in the mount table (also for a dead FUSE mount that stat() fails on)."""
    return entry_at(str(path)) is not None


def clear_stale_mount(path: Path) -> None:
    """A demo killed with SIGKILL leaves a dead FUSE mount ("Transport endpoint is not
    connected"); detach it so the new mount can use the directory. A live mount (another
    demo, or anything else) is never touched."""
    if is_mounted(path):
        if not is_dead(str(path)):
            raise DemoError(f"{path} is already mounted (another demo, or another filesystem); "
                            "stop it first or pass --mountpoint DIR")
        say(f"note: {path} is a dead mount left by an earlier demo; detaching it")
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)
        if is_mounted(path):
            raise DemoError(f"{path} is mounted and could not be detached (fusermount3 -uz)")


def lock_state_dir(state: Path) -> int:
    """Hold STATE/demo.lock for the demo's lifetime: a second `make run` in the same checkout
    stops here instead of stopping the first one's server and mount."""
    import fcntl

    fd = os.open(state / "demo.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DemoError(f"another demo (pid {other}) is running with the state dir {state}; "
                        "use that one, or stop it (Ctrl-C in its terminal) first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def cli_hint() -> str:
    """How to run `s3encfs` from this venv (before `make install` it is not on PATH)."""
    script = Path(sys.executable).parent / "s3encfs"
    if script.exists():
        rel = os.path.relpath(script)
        return rel if not rel.startswith("..") else str(script)
    return f"{shlex.quote(sys.executable)} -m s3encfs.cli"
