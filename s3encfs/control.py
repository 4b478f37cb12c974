"""Control socket of a running mount: one JSON request line in, one JSON response line out.

Requests: ``{"cmd": "status"}`` → the mount's status dict; ``{"cmd": "flush", "timeout": S}`` →
answers once every pending upload is in S3, or after S seconds (omitted: no limit) with
``"ok": false`` and ``"pending": N`` — also when the uploads finished but journal rows are left
(work S3 does not have, e.g. a replay that failed); ``{"cmd": "ping"}``.  Responses always carry
``"ok"``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click
import trio

log = logging.getLogger("s3encfs.control")

MAX_REQUEST = 64 * 1024
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the NUL


class ControlError(Exception):
    """The mount could not be reached or answered with an error."""


class FlushIncomplete(ControlError):
    """The mount answered a flush: S3 does not have everything yet (`pending` items left)."""

    def __init__(self, message: str, pending: int, timed_out: bool) -> None:
        super().__init__(message)
        self.pending = pending
        self.timed_out = timed_out  # else: uploads done, but journal rows are left


def escape_path(path: str) -> str:
    """Like ``systemd-escape --path``: /srv/my backup → srv-my\\x20backup."""
    trimmed = os.path.normpath(path).strip("/")
    if not trimmed:
        return "-"
    out = []
    for i, ch in enumerate(trimmed):
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and (ch.isalnum() or ch in ":_.")) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def socket_dir() -> str:
    if os.geteuid() == 0:
        return "/run/s3encfs"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "s3encfs")
    return f"/tmp/s3encfs-{os.getuid()}"


def control_socket_path(mountpoint: str) -> str:
    """/run/s3encfs/<escaped mountpoint>.sock (root) or $XDG_RUNTIME_DIR/s3encfs/…; hashed if long.

    Uses abspath, not realpath: resolving a hung FUSE mountpoint would hang the caller.
    """
    directory = socket_dir()
    name = escape_path(os.path.abspath(mountpoint))
    path = os.path.join(directory, name + ".sock")
    if len(path.encode()) > _SUN_PATH_MAX:
        digest = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
        path = os.path.join(directory, f"h-{digest}.sock")
    return path


def _prepare_socket_path(path: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket")
    try:
        query(path, "ping", timeout=1.0)
    except ControlError:
        os.unlink(path)  # stale: left by a mount that died
        return
    raise ControlError(f"another mount is already answering on {path}")


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class ControlServer:
    """Serves a mount's control socket from trio until cancelled; removes it on exit."""

    def __init__(
        self,
        path: str,
        status: Callable[[], dict[str, Any]],
        flush: Callable[[], Awaitable[object]] | None = None,
        pending: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self.status = status
        self.flush = flush
        self.pending = pending  # after a flush: {"pending": N, ...}; N > 0 means not flushed

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(_prepare_socket_path, self.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            await sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        try:
            sock.listen(16)
            listener = trio.SocketListener(sock)
            async with trio.open_nursery() as nursery:
                task_status.started(self.path)
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                request = await self._read_line(stream)
                response = await self.dispatch(request)
            except ValueError as exc:
                response = {"ok": False, "error": str(exc)}
            data = json.dumps(response, default=_json_default).encode() + b"\n"
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(data)

    @staticmethod
    async def _read_line(stream: trio.SocketStream) -> dict[str, Any]:
        buf = bytearray()
        while b"\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REQUEST:
                raise ValueError("request too long")
        try:
            request = json.loads(bytes(buf).split(b"\n", 1)[0] or b"null")
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad JSON: {exc.msg}") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ValueError('request must be a JSON object with "cmd"')
        return request

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            try:
                return {"ok": True, **self.status()}
            except Exception as exc:  # the caller gets the error, the mount lives on
                log.exception("status callback failed")
                return {"ok": False, "error": f"status failed: {exc}"}
        if cmd == "flush":
            if self.flush is None:
                return {"ok": False, "error": "flush not supported by this mount"}
            return await self._flush(request.get("timeout"))
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    async def _flush(self, timeout: object) -> dict[str, Any]:
        assert self.flush is not None
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or timeout < 0):
            return {"ok": False, "error": "timeout must be a non-negative number of seconds"}
        start = time.monotonic()
        with trio.move_on_after(math.inf if not timeout else float(timeout)) as scope:
            try:
                await self.flush()
            except Exception as exc:
                log.exception("flush failed")
                return {"ok": False, "error": f"flush failed: {exc}"}
        seconds = round(time.monotonic() - start, 3)
        left = self.pending() if self.pending is not None else {"pending": 0}
        n = int(left.get("pending", 0))
        if scope.cancelled_caught or n:
            why = f"after {seconds:.1f}s" if scope.cancelled_caught else \
                "left in the journal (see the mount log)"
            msg = f"{n} upload{'s' if n != 1 else ''} not in S3 yet: {why}"
            if left.get("s3_unreachable_since"):
                msg += "; S3 unreachable since " + time.strftime(
                    "%H:%M:%S", time.localtime(float(left["s3_unreachable_since"])))
            if left.get("last_error"):
                msg += f"; last error: {left['last_error']}"
            return {"ok": False, "error": msg, "flushed": False, "seconds": seconds,
                    **left, "pending": n, "timed_out": scope.cancelled_caught}
        return {"ok": True, "flushed": True, "seconds": seconds}


def query(path: str, cmd: str = "status", timeout: float | None = 10.0,
          args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request to a mount's control socket; ``timeout=None`` waits forever (flush).
    A flush the mount could not finish raises `FlushIncomplete` (with the pending count)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(json.dumps({**(args or {}), "cmd": cmd}).encode() + b"\n")
            buf = bytearray()
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is it mounted?") from None
        except ConnectionRefusedError:
            raise ControlError(f"nothing answers on {path}: the mount is not running") from None
        except TimeoutError:
            raise ControlError(f"no answer from {path} within {timeout}s") from None
        except OSError as exc:
            raise ControlError(f"{path}: {os.strerror(exc.errno or errno.EIO)}") from None
    if not buf:
        raise ControlError(f"{path}: the mount closed the connection without answering")
    response = json.loads(bytes(buf).split(b"\n", 1)[0])
    if not isinstance(response, dict):
        raise ControlError(f"{path}: malformed answer")
    if not response.get("ok", False):
        if "pending" in response:
            raise FlushIncomplete(str(response.get("error")), int(response["pending"]),
                                  bool(response.get("timed_out")))
        raise ControlError(str(response.get("error", "request failed")))
    return response


# ----------------------------------------------------------------------------- rendering


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _human_age(ts: float, now: float) -> str:
    age = max(0.0, now - ts)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    if age < 120:
        return f"{stamp} ({age:.0f}s ago)"
    if age < 7200:
        return f"{stamp} ({age / 60:.0f} min ago)"
    return f"{stamp} ({age / 3600:.1f} h ago)"


def render_value(key: str, value: object, now: float | None = None) -> str:
    """Format one status entry by its name: *_bytes, *_rate, last_* / *_at, *_seconds."""
    now = time.time() if now is None else now
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if key == "pid":
            return str(value)
        if key == "uptime_seconds":
            from s3encfs.statusinfo import human_duration

            return human_duration(float(value))
        if (key.endswith("_bytes") or key.startswith("bytes_")
                or key in ("dirty", "cache_used", "cache_size", "cache_limit")):
            return _human_bytes(value)
        if key.endswith(("_rate", "_ratio")) and 0 <= value <= 1:
            return f"{100 * value:.1f}%"
        if (key.startswith("last_") or key.endswith(("_at", "_since"))) and value > 1e9:
            return _human_age(float(value), now)
        if key.endswith(("_seconds", "_s")):
            return f"{value:.1f}s"
        return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={render_value(k, v, now)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def render_status(status: dict[str, Any], tty: bool) -> str:
    items = [(k, render_value(k, v)) for k, v in status.items() if k != "ok"]
    if not tty:
        return "\n".join(f"{k}: {v}" for k, v in items)
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in items:
        style = "red" if key.startswith("error") and value not in ("0", "-") else None
        table.add_row(key.replace("_", " "), value, style=style)
    console = Console(force_terminal=True)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip("\n")


def flush_request(mountpoint: str, timeout: float) -> dict[str, Any]:
    """Ask the mount to flush; `timeout` 0 waits as long as it takes.  The socket waits a
    little longer than the mount, which answers at its deadline with the pending count."""
    if timeout < 0:
        raise click.BadParameter("must not be negative", param_hint="--timeout")
    return query(control_socket_path(mountpoint), "flush",
                 timeout=None if not timeout else timeout + 30.0,
                 args={"timeout": timeout} if timeout else None)
