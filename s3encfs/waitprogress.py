"""Progress and an ETA while `flush`, `umount` or `backup` wait for a mount's uploads.

Only watches: the waiting itself (and its timeout) stays with the caller. A thread polls the
mount's status over the control socket and prints pending uploads, dirty bytes, the upload rate
and an ETA — on a terminal as one updating line every second, otherwise (journal, cron) one line
every 30 s, so a long wait is visible and a stalled S3 says so instead of hanging silently.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

STALL_SECONDS = 30.0


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def describe(label: str, st: dict[str, Any], rate: float | None, idle: float) -> str:
    pending = int(st.get("pending_uploads") or 0)
    dirty = float(st.get("dirty_bytes") or 0)
    text = f"{label}: {pending} uploads pending, {_mib(dirty)} not yet in S3"
    if rate:
        text += f", {_mib(rate)}/s"
        if dirty:
            text += f", ETA {max(1, round(dirty / rate))}s"
    if idle >= STALL_SECONDS and pending:
        text += f"; no upload progress for {idle:.0f}s: S3 stalled or unreachable?"
    return text


class _Rate:
    """Upload rate (smoothed) and when S3 last made progress, from successive status answers."""

    def __init__(self) -> None:
        self.last_up: float | None = None
        self.last_t = time.monotonic()
        self.progress_t = self.last_t
        self.rate: float | None = None

    def line(self, label: str, st: dict[str, Any]) -> str:
        now = time.monotonic()
        up = float((st.get("s3") or {}).get("bytes_up") or 0)
        if self.last_up is not None and now > self.last_t:
            step = (up - self.last_up) / (now - self.last_t)
            self.rate = step if self.rate is None else 0.5 * self.rate + 0.5 * step
            if up > self.last_up:
                self.progress_t = now
        self.last_up, self.last_t = up, now
        return describe(label, st, self.rate, now - self.progress_t)


def _show(mountpoint: str, label: str, out: TextIO, interval: float,
          stop: threading.Event) -> None:
    """The progress thread: one status query per interval, one line (rewritten on a tty)."""
    from s3encfs.control import ControlError, control_socket_path, query

    sock = control_socket_path(mountpoint)
    tty = out.isatty()
    rate = _Rate()
    shown = False
    while not stop.wait(interval):
        try:
            st = query(sock, "status", timeout=5)
        except (ControlError, OSError):
            continue
        line = rate.line(label, st)
        out.write("\r\033[K" + line if tty else line + "\n")
        out.flush()
        shown = True
    if shown and tty:
        out.write("\r\033[K")
        out.flush()


@contextlib.contextmanager
def watching(mountpoint: str, label: str, stream: TextIO | None = None) -> Iterator[None]:
    out = stream or sys.stderr
    interval = float(os.environ.get("S3ENCFS_PROGRESS_INTERVAL")
                     or (1.0 if out.isatty() else 30.0))
    stop = threading.Event()
    thread = threading.Thread(target=_show, args=(mountpoint, label, out, interval, stop),
                              name="s3encfs-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
