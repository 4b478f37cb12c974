"""`-o` options: checked before anything is mounted, translated for pyfuse3.

libfuse answers an option it does not know with only "fuse_session_new() failed", after the
bucket and keys were checked; naming the bad option up front is kinder.
"""

from __future__ import annotations

# Passed to libfuse 3 as they are (its own and the kernel's generic mount options).
FUSE_FLAGS = {
    "allow_other", "allow_root", "auto_unmount", "default_permissions", "blkdev",
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync",
    "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "lazytime", "nolazytime",
}
FUSE_VALUES = {"max_read", "blksize", "context", "fscontext", "defcontext", "rootcontext"}
# Ours: handled by s3encfs, never given to libfuse.
OWN_FLAGS = {"nonempty", "no_default_permissions"}


class FuseOptionError(ValueError):
    pass


def fuse_options(options: list[str], base: set[str] | None = None) -> set[str]:
    """The pyfuse3 option set for `options` (each one `-o` value, comma lists allowed) on top
    of `base`; FuseOptionError names the first unknown option."""
    opts = set(base or ())
    for item in options:
        for o in (x.strip() for x in item.split(",")):
            name = o.partition("=")[0]
            if not o or o in OWN_FLAGS:
                if o == "no_default_permissions":
                    opts.discard("default_permissions")
                continue
            if (o in FUSE_FLAGS) or (name in FUSE_VALUES and "=" in o):
                opts.add(o)
                continue
            known = sorted(FUSE_FLAGS | OWN_FLAGS | {f"{v}=…" for v in FUSE_VALUES})
            raise FuseOptionError(f"unknown mount option -o {o} (known: {', '.join(known)})")
    return opts
