"""``mount.s3encfs`` / ``mount.fuse.s3encfs``: lets mount(8), fstab and systemd mount s3encfs.

fstab examples::

    s3://backups/host1  /srv/backup  s3encfs  _netdev,config=host1,allow_other  0 0
    host1               /srv/backup  s3encfs  _netdev,noauto,x-systemd.automount  0 0

mount(8) calls ``mount.s3encfs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-f] [-v]``; we translate
the options to ``s3encfs mount`` flags and exec it (it daemonizes once the mount answers).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

# Options meaningful to mount(8), fstab or systemd only; never passed to the filesystem.
FSTAB_ONLY = {
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "defaults",
    "rw",
    "loop",
}
FSTAB_ONLY_PREFIXES = ("x-", "comment=")  # x-systemd.*, x-gvfs-*, x-mount.*, comment=…

# option name → s3encfs mount flag that takes a value
VALUE_FLAGS = {
    "config": "--config",
    "endpoint_url": "--endpoint-url",
    "region": "--region",
    "profile": "--profile",
    "encryption": "--encryption",
    "enc": "--encryption",  # mount(8) swallows "encryption=" (an old loop-device option)
    "key": "--key",
    "keyring": "--keyring",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "upload_delay": "--upload-delay",
    "debug": "--debug",
}
# option name → flag without a value
BOOL_FLAGS = {
    "bucket_key": "--bucket-key",
    "nobucket_key": "--no-bucket-key",
    "plain_names": "--plain-names",
    "allow_unverified_sse": "--allow-unverified-sse",
}


class UsageError(Exception):
    pass


def split_options(options: list[str]) -> list[str]:
    return [o.strip() for item in options for o in item.split(",") if o.strip()]


def is_fstab_only(option: str) -> bool:
    return option in FSTAB_ONLY or option.startswith(FSTAB_ONLY_PREFIXES)


def build_mount_argv(source: str, mountpoint: str, options: list[str]) -> list[str]:
    """``mount`` argv (without the program) for ``s3encfs``; pure, for testing.

    ``options`` are ``-o`` values (comma lists allowed).  A SOURCE that is not ``s3://…`` names
    a config (``config=NAME`` in the options does the same); its source then comes from the file.
    """
    flags, fuse_opts, config_name = _parse_options(options)
    if not source.startswith("s3://"):
        if config_name and source not in ("", "none", "s3encfs", config_name):
            raise UsageError(f"source {source!r} is neither s3://… nor config {config_name!r}")
        config_name = config_name or source
        if not config_name or config_name in ("none", "s3encfs"):
            raise UsageError("SOURCE must be s3://BUCKET[/PREFIX] or a config name (config=NAME)")
        source = ""
    if not mountpoint:
        raise UsageError("no mountpoint given")
    argv = ["mount"]
    if config_name:
        argv += ["--config", config_name]
    if not source:
        source = _source_from_config(config_name or "")
    argv += [source, os.path.abspath(mountpoint), *flags]
    if fuse_opts:
        argv += ["-o", ",".join(fuse_opts)]
    return argv


def _parse_options(options: list[str]) -> tuple[list[str], list[str], str | None]:
    """-o values → (CLI flags, FUSE options, config name); fstab-only options dropped."""
    flags: list[str] = []
    fuse_opts: list[str] = []
    config_name: str | None = None
    for opt in split_options(options):
        if is_fstab_only(opt):
            continue
        name, eq, value = opt.partition("=")
        key = name.replace("-", "_")
        if key in VALUE_FLAGS:
            if not eq or not value:
                raise UsageError(f"option {name} needs a value: {name}=…")
            if key == "config":
                config_name = value
                continue
            if key == "debug":
                value = value.replace(":", ",").replace("+", ",")
            flags += [VALUE_FLAGS[key], value]
        elif key in BOOL_FLAGS:
            flags += _bool_flag(name, key, value if eq else None)
        elif opt not in fuse_opts:
            fuse_opts.append(opt)
    return flags, fuse_opts, config_name


def _bool_flag(name: str, key: str, value: str | None) -> list[str]:
    """A yes/no option: bare = on; `=yes`/`=no` (bucket_key has an explicit off flag)."""
    if value is None:
        return [BOOL_FLAGS[key]]
    if value.lower() not in ("1", "yes", "true", "0", "no", "false"):
        raise UsageError(f"option {name} takes yes or no, got {value!r}")
    on = value.lower() in ("1", "yes", "true")
    if key == "bucket_key":
        return ["--bucket-key" if on else "--no-bucket-key"]
    return [BOOL_FLAGS[key]] if on else []


def _source_from_config(name: str) -> str:
    """The CLI takes SOURCE before MOUNTPOINT: a config-only fstab line needs the file's source."""
    from s3encfs.config import ConfigError, load_config

    try:
        cfg = load_config(name)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not cfg.source:
        raise UsageError(f'config {name!r} has no source = "s3://…"')
    return cfg.source


def s3encfs_program() -> list[str]:
    """The ``s3encfs`` beside this interpreter (venv), else ``python -m s3encfs.cli``."""
    candidate = Path(sys.executable).parent / "s3encfs"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    return [sys.executable, "-m", "s3encfs.cli"]


def parse_args(argv: list[str]) -> tuple[str, str, list[str], set[str]]:
    """mount(8) helper conventions: positional SOURCE MOUNTPOINT, -o OPTS, -n -s -f -v, -t TYPE."""
    positional: list[str] = []
    options: list[str] = []
    switches: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            switches.add("h")
        elif arg == "-o" or arg == "-t":
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs an argument")
            if arg == "-o":
                options.append(argv[i + 1])
            i += 1
        elif arg.startswith("-o"):
            options.append(arg[2:])
        elif arg.startswith("-t"):
            pass
        elif arg.startswith("-") and len(arg) > 1 and arg != "--":
            for ch in arg[1:]:
                if ch not in "nsfvi":
                    raise UsageError(f"unknown switch -{ch}")
                switches.add(ch)
        elif arg != "--":
            positional.append(arg)
        i += 1
    if "h" in switches:
        return "", "", [], switches
    if len(positional) != 2:
        raise UsageError("usage: mount.s3encfs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]")
    return positional[0], positional[1], options, switches


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        source, mountpoint, options, switches = parse_args(args)
        if "h" in switches:
            print(__doc__)
            return 0
        command = s3encfs_program() + build_mount_argv(source, mountpoint, options)
    except UsageError as exc:
        print(f"mount.s3encfs: {exc}", file=sys.stderr)
        return 1  # mount(8): incorrect invocation
    if "v" in switches or "f" in switches:
        print("mount.s3encfs: " + shlex.join(command), file=sys.stderr)
    if "f" in switches:  # "fake": do everything but the mount
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        print(f"mount.s3encfs: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 32  # mount(8): mount failure
    return 32  # unreachable: execv does not return


if __name__ == "__main__":
    sys.exit(main())
