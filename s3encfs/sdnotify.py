"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET, plus a trio watchdog loop."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import trio

log = logging.getLogger("s3encfs.sdnotify")

_FIELD_NAMES = {
    "ready": "READY",
    "status": "STATUS",
    "stopping": "STOPPING",
    "reloading": "RELOADING",
    "watchdog": "WATCHDOG",
    "extend_timeout_usec": "EXTEND_TIMEOUT_USEC",
    "mainpid": "MAINPID",
    "errno": "ERRNO",
}


def _format(fields: dict[str, object]) -> bytes:
    lines = []
    for key, value in fields.items():
        name = _FIELD_NAMES.get(key.lower(), key.upper())
        if value is True:
            value = 1
        text = str(value)
        if "\n" in text:
            raise ValueError(f"newline in sd_notify field {name}")
        lines.append(f"{name}={text}")
    return ("\n".join(lines) + "\n").encode()


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()  # abstract namespace socket
    return path


def notify(**fields: object) -> bool:
    """Send e.g. ``notify(READY=1, STATUS="mounted")``; keys are case-insensitive.

    Returns False (and does nothing) when not started by systemd with NotifyAccess.
    """
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(_format(fields), _address(path))
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", path, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds, if systemd asked *this* process to ping it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


async def watchdog_loop(health: Callable[[], bool], interval: float | None = None) -> None:
    """Ping WATCHDOG=1 every half interval while ``health()`` is true.

    When health fails, pings stop, so systemd kills and (Restart=on-failure) restarts us.
    Returns immediately when no watchdog is configured.
    """
    timeout = interval if interval is not None else watchdog_interval()
    if timeout is None:
        return
    period = timeout / 2
    was_healthy = True
    while True:
        try:
            healthy = health()
        except Exception:  # a crashing probe means an unhealthy mount
            log.exception("health check raised")
            healthy = False
        if healthy:
            notify(WATCHDOG=1)
        elif was_healthy:
            log.error("health check failed; not pinging the systemd watchdog")
            notify(STATUS="unhealthy: watchdog pings stopped")
        was_healthy = healthy
        await trio.sleep(period)
