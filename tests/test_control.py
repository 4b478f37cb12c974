"""Control socket: a real trio server and the blocking client / click commands."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from s3encfs import control, control_cli
from s3encfs.control import ControlError, ControlServer, query

STATUS = {
    "pending_uploads": 3,
    "dirty_bytes": 5 * 1024**2,
    "cache_used_bytes": 1024**3,
    "cache_hit_rate": 0.875,
    "errors": 0,
    "retries": 2,
    "last_upload_at": None,
}


def run_with_server(
    path: str,
    client: Callable[[], Any],
    flush: Callable[[], Any] | None = None,
    status: Callable[[], dict[str, Any]] = lambda: dict(STATUS),
) -> Any:
    """Start a ControlServer, run the blocking ``client`` in a thread, stop the server."""
    result: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, status, flush).serve)
            try:
                result["value"] = await trio.to_thread.run_sync(client)
            except Exception as exc:
                result["error"] = exc
            nursery.cancel_scope.cancel()

    trio.run(main)
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "ctl" / "m.sock")


def test_status_roundtrip_and_permissions(sock_path: str) -> None:
    def client() -> tuple[dict[str, Any], int, int]:
        answer = query(sock_path)
        return (
            answer,
            stat.S_IMODE(os.stat(sock_path).st_mode),
            stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode),
        )

    answer, sock_mode, dir_mode = run_with_server(sock_path, client)
    assert answer == {"ok": True, **STATUS}
    assert sock_mode == 0o600
    assert dir_mode == 0o700
    assert not os.path.exists(sock_path), "socket must be removed when the server stops"


def test_flush_waits_for_callback(sock_path: str) -> None:
    done: list[bool] = []

    async def flush() -> None:
        await trio.sleep(0.2)
        done.append(True)

    def client() -> dict[str, Any]:
        answer = query(sock_path, "flush", timeout=None)
        assert done == [True], "answer must come after the flush finished"
        return answer

    answer = run_with_server(sock_path, client, flush=flush)
    assert answer["flushed"] is True and answer["seconds"] >= 0.2


def test_flush_failure_and_unsupported(sock_path: str) -> None:
    async def bad_flush() -> None:
        raise OSError("S3 said 503")

    with pytest.raises(ControlError, match="flush failed: S3 said 503"):
        run_with_server(sock_path, lambda: query(sock_path, "flush"), flush=bad_flush)
    with pytest.raises(ControlError, match="flush not supported"):
        run_with_server(sock_path, lambda: query(sock_path, "flush"))


def test_unknown_command_and_bad_json(sock_path: str) -> None:
    with pytest.raises(ControlError, match="unknown command 'explode'"):
        run_with_server(sock_path, lambda: query(sock_path, "explode"))

    def raw() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            s.sendall(b"{not json\n")
            return json.loads(s.makefile().readline())

    answer = run_with_server(sock_path, raw)
    assert answer["ok"] is False and "bad JSON" in answer["error"]


def test_status_callback_error_is_reported(sock_path: str) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("inode table locked")

    with pytest.raises(ControlError, match="inode table locked"):
        run_with_server(sock_path, lambda: query(sock_path), status=broken)


def test_stale_socket_replaced_live_socket_refused(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path), mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # file stays, nobody listens
    assert run_with_server(sock_path, lambda: query(sock_path, "ping")) == {"ok": True}

    async def two_servers() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(sock_path, dict).serve)
            with pytest.raises(ControlError, match="already answering"):
                await ControlServer(sock_path, dict).serve()
            nursery.cancel_scope.cancel()

    trio.run(two_servers)


def test_query_without_mount(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="is it mounted"):
        query(str(tmp_path / "none.sock"))


def test_socket_path_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control.os, "geteuid", lambda: 0)
    assert control.control_socket_path("/srv/backup/") == "/run/s3encfs/srv-backup.sock"
    assert control.control_socket_path("/mnt/my backup") == "/run/s3encfs/mnt-my\\x20backup.sock"
    assert control.control_socket_path("/srv/a-b") == "/run/s3encfs/srv-a\\x2db.sock"
    long = control.control_socket_path("/" + "x" * 200)
    assert long.startswith("/run/s3encfs/h-") and len(long) < 108
    monkeypatch.setattr(control.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert control.control_socket_path("/home/u/s3") == "/run/user/1000/s3encfs/home-u-s3.sock"


def test_render_values() -> None:
    now = 1_800_000_000.0
    assert control.render_value("dirty_bytes", 5 * 1024**2, now) == "5.0 MiB"
    assert control.render_value("cache_hit_rate", 0.875, now) == "87.5%"
    assert control.render_value("pending_uploads", 12345, now) == "12,345"
    assert control.render_value("last_upload_at", now - 30, now).endswith("(30s ago)")
    assert control.render_value("last_upload_at", None, now) == "-"
    assert control.render_value("errors_by_kind", {"timeout": 2}, now) == "timeout=2"
    plain = control.render_status({"ok": True, "dirty_bytes": 0, "mode": "client"}, tty=False)
    assert plain == "dirty_bytes: 0 B\nmode: client"
    fancy = control.render_status({"dirty_bytes": 2048}, tty=True)
    assert "dirty bytes" in fancy and "2.0 KiB" in fancy


@pytest.fixture
def served(sock_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server in a background thread for click commands (CliRunner is synchronous)."""
    monkeypatch.setattr(control, "control_socket_path", lambda mp: sock_path)
    ready = threading.Event()
    stop: dict[str, trio.CancelScope] = {}
    token: dict[str, trio.lowlevel.TrioToken] = {}

    async def flush() -> None:
        await trio.sleep(0.05)

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop["scope"] = scope
            token["t"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(ControlServer(sock_path, lambda: dict(STATUS), flush).serve)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,))
    thread.start()
    assert ready.wait(5)
    yield sock_path
    trio.from_thread.run_sync(stop["scope"].cancel, trio_token=token["t"])
    thread.join(5)


def test_status_command(served: str) -> None:
    result = CliRunner().invoke(control_cli.status, ["/srv/backup"])
    assert result.exit_code == 0, result.output
    assert "pending_uploads: 3" in result.output
    assert "cache_hit_rate: 87.5%" in result.output
    result = CliRunner().invoke(control_cli.status, ["/srv/backup", "--json"])
    assert json.loads(result.output) == STATUS
    result = CliRunner().invoke(control_cli.flush, ["/srv/backup"])
    assert result.exit_code == 0 and result.output.startswith("flushed in")


def test_status_command_not_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "control_socket_path", lambda mp: str(tmp_path / "x.sock"))
    result = CliRunner().invoke(control_cli.status, ["/srv/backup"])
    assert result.exit_code == 1 and "is it mounted" in result.output
