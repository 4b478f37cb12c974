"""Serving a mount once FUSE is up: the core's tasks, the control socket, readiness, signals,
and the clean stop (flush everything, then unmount)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from typing import Any

import trio

from s3encfs import fuse_loop, sdnotify
from s3encfs.config import MountConfig
from s3encfs.control import ControlServer, control_socket_path
from s3encfs.fs import memstats
from s3encfs.fs.nodecap import NodeTrimmer, node_cap
from s3encfs.statusinfo import enrich

log = logging.getLogger("s3encfs.mount")
# the cyclic collector's thresholds while serving: a young collection every 10,000 container
# allocations instead of 700, older ones 20x rarer each (docs/INTERNALS.md, "Garbage collection")
GC_THRESHOLDS = (10_000, 20, 20)


async def serve(core: Any, cfg: MountConfig, ready_fd: int | None) -> int:
    import pyfuse3

    async with trio.open_nursery() as nursery:
        fuse_done = await _start_services(nursery, core, cfg, ready_fd)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            nursery.start_soon(_on_signals, sigs, nursery, core, cfg.mountpoint)
            await fuse_done.wait()
            sdnotify.notify(STOPPING=1, STATUS="unmounted; finishing uploads")
            await core.flush_all()
            await core.abort_leftover_uploads()
            nursery.cancel_scope.cancel()
    try:
        pyfuse3.close(unmount=False)
    except Exception:
        pass
    core.close()
    return 0


async def _start_services(nursery: trio.Nursery, core: Any, cfg: MountConfig,
                          ready_fd: int | None) -> trio.Event:
    """Everything a mount runs beside the FUSE loop; returns the event set when the loop ends."""
    tune_gc()
    core.start(nursery)
    memstats.start_tracing()
    trimmer = NodeTrimmer(core, node_cap())  # fs/nodecap.py: memory bounded by a cap
    nursery.start_soon(trimmer.run)
    await nursery.start(_control_server(core, cfg, trimmer).serve)
    fuse_done = trio.Event()
    nursery.start_soon(_fuse_main, fuse_done)
    nursery.start_soon(_announce, core, cfg, ready_fd)
    if sdnotify.watchdog_interval():
        nursery.start_soon(sdnotify.watchdog_loop, lambda: not fuse_done.is_set())
    return fuse_done


def tune_gc() -> None:
    """What the mount holds once it is up (botocore's models, the CRT, modules: ~80,000
    objects) goes out of the collector's reach (`gc.freeze`), and collections get rarer: an
    rsync of 8,000 small files ran ~740 young and 6 full collections, 1.1 s of CPU (~5 % of
    the process), 0.09 s after.  Cycles are still collected; young garbage is mostly freed by
    reference counts before any collection sees it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _control_server(core: Any, cfg: MountConfig, trimmer: NodeTrimmer) -> ControlServer:
    started = time.time()
    return ControlServer(control_socket_path(cfg.mountpoint),
                         lambda: enrich({**core.status(), "pid": os.getpid(),
                                         "memory": memstats.report(core, trimmer),
                                         "fuse_loop": fuse_loop.stats(),
                                         "mountpoint": cfg.mountpoint, "source": cfg.source,
                                         "settings": mount_settings(cfg)},
                                        encryption=cfg.encryption, started=started),
                         core.flush_all, core.unflushed)


async def _fuse_main(fuse_done: trio.Event) -> None:
    import pyfuse3

    fuse_loop.install()  # fewer scheduler passes per request (s3encfs/fuse_loop.py)
    try:
        await pyfuse3.main(min_tasks=4, max_tasks=64)
    finally:
        fuse_done.set()


async def _announce(core: Any, cfg: MountConfig, ready_fd: int | None) -> None:
    """Tell the log, systemd and the waiting parent that the mount answers; then keep
    systemd's status line current."""
    st_dev = (await trio.to_thread.run_sync(os.stat, cfg.mountpoint)).st_dev
    tune_readahead(st_dev)
    from s3encfs import __version__

    log.info("s3encfs %s: mounted %s at %s (%s)", __version__, cfg.source,
             cfg.mountpoint, cfg.encryption)
    sdnotify.notify(READY=1, STATUS="mounted")
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    while True:
        await trio.sleep(5)
        st = core.status()
        sdnotify.notify(STATUS=f"pending uploads {st['pending_uploads']}, "
                               f"dirty {st['dirty_bytes'] // 1048576} MiB")


async def _on_signals(sigs: Any, nursery: trio.Nursery, core: Any, mountpoint: str) -> None:
    """First signal: upload what is pending, then unmount; a second one exits at once (the
    journal replays on the next mount)."""
    count = 0
    async for sig in sigs:
        count += 1
        if count == 1:
            log.info("signal %d: uploading pending data, then unmounting", sig)
            sdnotify.notify(STOPPING=1, STATUS="flushing uploads")
            nursery.start_soon(_graceful, core, mountpoint)
        else:
            log.warning("second signal: exiting now; the journal replays on the next mount")
            os._exit(1)


async def _graceful(core: Any, mountpoint: str) -> None:
    await core.flush_all()
    await unmount(mountpoint)


def mount_settings(cfg: MountConfig) -> dict[str, Any]:
    """What `versions`/`restore` need to open this mount's bucket given a path in it (no
    secrets: key *names* only)."""
    return {k: getattr(cfg, k) for k in ("encryption", "key", "keyring", "plain_names",
                                         "endpoint_url", "region", "profile", "as_of")}


def tune_readahead(st_dev: int, kib: int = 4096) -> None:
    """Let the kernel send big read-ahead requests (FUSE defaults to 128 KiB): fewer, larger
    reads are what a Python filesystem needs for sequential throughput.  Root only."""
    path = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kib))
    except OSError as exc:
        log.debug("could not raise read-ahead (%s): %s", path, exc)


async def unmount(mountpoint: str) -> None:
    proc = await trio.run_process(["fusermount3", "-u", mountpoint], check=False,
                                  capture_stderr=True)
    if proc.returncode != 0:
        await trio.run_process(["fusermount3", "-uz", mountpoint], check=False)
