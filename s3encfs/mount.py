"""Assembling a mount: keys → codec, SSE policy → store, checks, FUSE loop, clean shutdown.

Order matters for "bad input loses nothing": every check that can refuse the mount (bucket,
credentials, SSE enforcement, master key) runs before FUSE is mounted or anything is written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn

import trio

from s3encfs import hardening
from s3encfs.codec import Codec
from s3encfs.config import MountConfig, parse_source
from s3encfs.exitcodes import MountError

# the codec and key side of a mount lives in mount_codec.py; these names stay importable here
from s3encfs.mount_codec import (  # noqa: F401
    build_codec_and_policy,
    check_master_key,
    load_keys,
    s3ec_store,
)
from s3encfs.profiling import run_profiled

log = logging.getLogger("s3encfs.mount")


@dataclass
class Prepared:
    store: Any
    codec: Codec
    prefix: str
    cache_dir: str
    lock_fd: int


def prepare(cfg: MountConfig, built: tuple[Codec, Any] | None = None) -> Prepared:
    """`built`: the (codec, SSE policy) pair already made before daemonizing (keys unsealed
    while the terminal could still answer a passphrase prompt)."""
    bucket, prefix, as_of = _check_local(cfg)
    codec, policy = built or build_codec_and_policy(cfg)
    store = _make_store(cfg, codec, policy, bucket, as_of)
    codec = _check_remote(cfg, store, codec, policy, prefix)
    cache_dir, lock_fd = _lock_cache_dir(cfg.effective_cache_dir)
    from s3encfs.store.longnames import with_long_names

    return Prepared(with_long_names(store, codec, prefix), codec, prefix, cache_dir, lock_fd)


def _check_local(cfg: MountConfig) -> tuple[str, str, Any]:
    """The source, a past view's setup, the FUSE options and the mountpoint: (bucket, prefix,
    as_of)."""
    from s3encfs import pitr
    from s3encfs.fuse_options import FuseOptionError, fuse_options
    from s3encfs.mountpoint import MountpointError, prepare_mountpoint

    try:
        bucket, prefix = parse_source(cfg.source)
    except ValueError as exc:
        raise MountError(str(exc)) from None
    try:
        as_of = pitr.setup(cfg)  # (adds "ro" to the options of a past view)
        fuse_options(cfg.options)
        prepare_mountpoint(cfg.mountpoint, nonempty="nonempty" in cfg.options)
    except (MountpointError, FuseOptionError, pitr.HistoryError) as exc:
        raise MountError(str(exc)) from None
    return bucket, prefix, as_of


def _make_store(cfg: MountConfig, codec: Codec, policy: Any, bucket: str, as_of: Any) -> Any:
    from s3encfs import pitr

    store_args: dict[str, Any] = dict(
        endpoint_url=cfg.endpoint_url, region=cfg.region, profile=cfg.profile, sse=policy,
        max_pool=max(64, cfg.upload_concurrency * 4), connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout, s3_client=cfg.s3_client)
    if codec.name == "s3ec":
        store = s3ec_store(cfg, bucket, store_args, as_of)
    else:
        store = pitr.store_class(as_of)(bucket, **store_args)
    # every key is loaded now (s3ec's keyring keys above too): no passphrase in environ or children
    hardening.scrub_passphrase_env()
    store.strict_sse = not cfg.allow_unverified_sse
    if cfg.bwlimit:
        from s3encfs.bwlimit import BandwidthLimit

        store.bwlimit = BandwidthLimit(cfg.bwlimit)
    return store


def _check_remote(cfg: MountConfig, store: Any, codec: Codec, policy: Any,
                  prefix: str) -> Codec:
    """Bucket, point-in-time view, KMS alias, SSE enforcement canary and master key, before
    anything is mounted; returns the codec the recorded key check settled on."""
    from s3encfs import pitr
    from s3encfs.store import errors as se
    from s3encfs.store.probe import canary

    try:
        store.check_bucket()
        pitr.check_bucket(store, cfg)
        from s3encfs.store.kms import resolve_alias

        resolve_alias(policy, endpoint_url=cfg.endpoint_url, region=cfg.region,
                      profile=cfg.profile)
        if policy.mode != "none" and not cfg.allow_unverified_sse:
            if "ro" in cfg.options:  # writes nothing; every read response is still verified
                log.info("read-only mount: SSE enforcement canary skipped")
            else:
                canary(store, prefix)
        return check_master_key(store, codec, prefix, may_write="ro" not in cfg.options,
                                init=cfg.init)
    except se.StoreError as exc:
        from s3encfs.exitcodes import for_store_error

        raise MountError(str(exc), for_store_error(exc)) from None
    except pitr.HistoryError as exc:
        raise MountError(str(exc)) from None


def _lock_cache_dir(cache_dir: str) -> tuple[str, int]:
    """Make the private cache directory and hold its lock (one mount per cache directory)."""
    try:
        hardening.private_cache_dir(cache_dir)
    except OSError as exc:  # cannot be made: EX_CANTCREAT; not ours (no errno): EX_CONFIG
        from s3encfs import exitcodes

        code = exitcodes.CANTCREAT if exc.errno is not None else exitcodes.CONFIG
        raise MountError(str(exc), code) from None
    lock_fd = os.open(os.path.join(cache_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise MountError(f"cache directory {cache_dir} is in use by another mount") from None
        raise
    return cache_dir, lock_fd


def _fixed_mmap_threshold() -> None:
    """Big buffers (multi-MiB GET bodies, upload parts) come and go all the time.  A fixed
    mmap threshold turns off glibc's adaptive one (and its adaptive trim threshold), so freed
    heap is given back: measured on a 1 GiB cold read, peak RSS 448 → 270 MiB at the same
    speed (a 1 MiB threshold: 170 MiB but ~15% slower, every buffer then being fresh pages)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        arenas = os.environ.get("S3ENCFS_MALLOC_ARENAS", "2")
        if arenas.isdigit() and int(arenas) > 0 and "MALLOC_ARENA_MAX" not in os.environ:
            # 2 malloc arenas, not 8 per core: S3 worker and CRT threads each took one, and
            # what listings and uploads built in them left each arena's pages part-used
            # (client, loaded machine, node table at its cap: 171 MiB RSS at 31,000 files,
            # 219-221 MiB at 32,000-45,000 without; docs/INTERNALS.md "Memory")
            libc.mallopt(-8, int(arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_mount(cfg: MountConfig, ready_fd: int | None = None,
              built: tuple[Codec, Any] | None = None) -> int:
    """Mount and serve until unmounted or signalled; returns the exit code."""
    from s3encfs.fsconfig import fs_config

    hardening.protect_process()
    prep = prepare(cfg, built)
    if not cfg.log_plain_names:
        from s3encfs import lognames

        lognames.install_for_mount(prep.codec, prep.prefix)
    fscfg = fs_config(cfg, prep.cache_dir, prep.codec.geometry)
    opts = _fuse_mount_options(cfg, prep)
    log.debug("settings: cache %s (%d bytes), upload delay %.1fs, dir ttl %.1fs, FUSE -o %s",
              prep.cache_dir, cfg.cache_size, cfg.upload_delay, cfg.dir_ttl,
              ",".join(sorted(opts)))
    # The FUSE thread answers a chain of small requests (rsync: lookup, create, write, release,
    # utimens, rename per file) while S3 worker threads run botocore; with the default 5 ms GIL
    # switch interval each hand-back to the FUSE thread can wait that long.
    sys.setswitchinterval(float(os.environ.get("S3ENCFS_SWITCH_INTERVAL", "0.0005")))
    _fixed_mmap_threshold()
    main = partial(_replay_mount_serve, prep, fscfg, cfg, opts, ready_fd)
    try:
        return run_profiled(partial(trio.run, main))  # S3ENCFS_PROFILE: cProfile it
    finally:
        os.close(prep.lock_fd)


def _fuse_mount_options(cfg: MountConfig, prep: Prepared) -> set[str]:
    """The user's -o options (less the unsafe ones a client mount forces off) plus ours."""
    import pyfuse3

    from s3encfs.fuse_options import fuse_options

    forced = hardening.forced_mount_options(prep.codec.name == "client", cfg.options)
    opts = fuse_options([o for o in cfg.options
                         if not (forced and o in hardening.UNSAFE_OPTIONS)],
                        set(pyfuse3.default_options))
    opts |= forced
    opts.add(f"fsname={cfg.source}")
    opts.add("subtype=s3encfs")
    return opts


async def _replay_mount_serve(prep: Prepared, fscfg: Any, cfg: MountConfig, opts: set[str],
                              ready_fd: int | None) -> int:
    """Inside trio: replay the journal, load the root, mount FUSE, serve."""
    import pyfuse3

    from s3encfs.fs.core import FsCore
    from s3encfs.fs.operations import Operations
    from s3encfs.mount_serve import serve

    core = FsCore(prep.store, prep.codec, prep.prefix, fscfg)
    replayed = await core.replay()
    if replayed:
        log.info("finished %d uploads journaled by an earlier mount", replayed)
    await core.load_root()
    ops = Operations(core)
    pyfuse3.init(ops, cfg.mountpoint, opts)
    core.pages.store_fn = pyfuse3.notify_store  # type: ignore[assignment]  # any buffer (fs/pagepush)
    return await serve(core, cfg, ready_fd)


def daemonize_and_mount(cfg: MountConfig) -> int:
    """Fork; the child mounts, the parent returns once the mount answers (or failed).

    Keys are unsealed first, in the parent: after the fork stdin is /dev/null, so a passphrase
    prompt on the user's terminal is only possible before it."""
    built = build_codec_and_policy(cfg)
    log_path, logfd = _open_log(cfg)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(logfd)
        os.close(w)
        return _wait_for_child(pid, r)
    os.close(r)
    _child_mount(cfg, built, log_path, logfd, w)


def _open_log(cfg: MountConfig) -> tuple[str, int]:
    """Before the fork, so a log that cannot be written is reported on the terminal."""
    log_path = cfg.log_file or os.path.join(cfg.effective_cache_dir, "mount.log")
    try:
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
        logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise MountError(f"cannot open the log file {log_path}: {exc.strerror}", 73) from None
    return log_path, logfd


def _wait_for_child(pid: int, r: int) -> int:
    """The parent: 0 once the child writes "ok"; else its message and its exit code."""
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    if data.startswith(b"ok"):
        return 0
    msg = data.decode(errors="replace").strip() or "mount process exited"
    print(f"s3encfs: {msg}", file=sys.stderr)
    _pid, status = os.waitpid(pid, 0)  # the child exits after a failure: pass its code on
    return os.waitstatus_to_exitcode(status) or 1


def _child_mount(cfg: MountConfig, built: tuple[Codec, Any], log_path: str, logfd: int,
                 w: int) -> NoReturn:
    """The child: detach, log to the file, mount; a failure is written to the parent's pipe."""
    from s3encfs.logsetup import setup_logging

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    os.close(logfd)
    setup_logging(cfg.debug, False, cfg.log_level, log_path)
    try:
        code = run_mount(cfg, ready_fd=w, built=built)
    except MountError as exc:
        log.error("%s", exc)
        os.write(w, f"{exc}\n".encode())
        code = exc.code
    except Exception as exc:
        from s3encfs.errors_cli import describe

        message, code = describe(exc)
        log.error("%s", message)
        log.debug("mount failed", exc_info=True)
        try:
            os.write(w, f"{message}\n".encode())
        except OSError:
            pass
    os._exit(code)
