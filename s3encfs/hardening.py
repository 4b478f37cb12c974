"""Process and cache-directory hardening for a mount (issue 10, items 6, 7 and 9).

One place for the small things that keep secrets and plaintext where they belong:

- `protect_process`: no core dumps (``RLIMIT_CORE`` 0) and not dumpable (``PR_SET_DUMPABLE`` 0:
  no ptrace attach by same-uid processes, /proc/PID/mem and environ readable by root only),
  umask 077 so everything the mount creates locally is private;
- `scrub_passphrase_env`: once the keys are loaded, the passphrase variables leave
  ``os.environ`` (so /proc/PID/environ no longer shows them — see `_clear_initial_environ` —
  and no child, e.g. fusermount3, inherits them);
- `private_cache_dir`: the cache directory is created 0700 or tightened to 0700, and must be
  ours;
- `forced_mount_options`: modes without authenticated attributes (none, sse-*) always mount
  ``nosuid,nodev`` — whoever can write the bucket must not be able to plant a setuid binary or
  a device node.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import resource
import stat
from collections.abc import Iterable, MutableMapping

log = logging.getLogger("s3encfs.hardening")

PR_SET_DUMPABLE = 4
PASS_VARS = ("PASSPHRASE", "PASSPHRASE_FD", "PASSCOMMAND")
UNSAFE_OPTIONS = frozenset({"suid", "dev"})


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def protect_process() -> None:
    """RLIMIT_CORE 0, PR_SET_DUMPABLE 0, umask 077 (best effort; logged when refused)."""
    os.umask(0o077)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        log.warning("could not disable core dumps: %s", exc)
    libc = _libc()
    if libc is None or libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not mark the process non-dumpable (prctl PR_SET_DUMPABLE)")


def is_passphrase_var(name: str) -> bool:
    return name.startswith("S3ENCFS_") and name.endswith(PASS_VARS)


def scrub_passphrase_env(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove every S3ENCFS_*PASSPHRASE / _FD / PASSCOMMAND variable; returns their names.

    ``os.environ`` changes only the copy Python and later children see: the initial block the
    kernel shows in /proc/PID/environ is wiped by `_clear_initial_environ` as well."""
    env = os.environ if environ is None else environ
    names = [k for k in list(env) if is_passphrase_var(k)]
    for k in names:
        if environ is None:
            _clear_initial_environ(k)
            if k.endswith("PASSPHRASE_FD"):  # unread (keys came from elsewhere): close it too
                with contextlib.suppress(ValueError, OSError):
                    fd = int(env[k])
                    if fd > 2:
                        os.close(fd)
        del env[k]
    return names


def _clear_initial_environ(name: str) -> None:
    """Overwrite NAME=VALUE in the process's initial environment block (what the kernel shows
    in /proc/PID/environ, read from the stack between env_start and env_end) with NULs."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # fields[0] is field 3 (state); env_start/env_end are fields 50 and 51
        start, end = int(fields[47]), int(fields[48])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = mem.read(end - start)
            prefix = name.encode() + b"="
            pos = 0
            while pos < len(block):
                nul = block.find(b"\0", pos)
                nul = len(block) if nul < 0 else nul
                if block.startswith(prefix, pos):
                    mem.seek(start + pos)
                    mem.write(b"\0" * (nul - pos))
                pos = nul + 1
    except (OSError, ValueError, IndexError) as exc:
        log.debug("could not clear %s from the initial environment: %s", name, exc)


def private_cache_dir(path: str) -> None:
    """Create `path` 0700 (parents too), or tighten an existing one to 0700; refuse one that
    belongs to another user or is a symlink (plaintext and journals live there)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise OSError(f"cache directory {path} is not a plain directory")
    if st.st_uid != os.geteuid():
        raise OSError(f"cache directory {path} belongs to uid {st.st_uid}, not to us")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
        log.info("cache directory %s tightened from %04o to 0700", path,
                 stat.S_IMODE(st.st_mode))


def forced_mount_options(authenticated_attrs: bool, options: Iterable[str]) -> set[str]:
    """The FUSE options to add: nosuid,nodev when attributes are not authenticated (refusing a
    user's -o suid / -o dev, with a warning)."""
    if authenticated_attrs:
        return set()
    asked = UNSAFE_OPTIONS & set(options)
    if asked:
        log.warning("ignoring -o %s: this encryption mode does not authenticate file "
                    "attributes, so the mount is always nosuid,nodev", ",".join(sorted(asked)))
    return {"nosuid", "nodev"}
