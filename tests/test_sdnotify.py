"""sd_notify against a real datagram listener."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from s3encfs import sdnotify


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_and_status(listener: socket.socket) -> None:
    assert sdnotify.notify(READY=1, STATUS="mounted s3://b at /mnt")
    assert sdnotify.notify(stopping=True)
    assert sdnotify.notify(EXTEND_TIMEOUT_USEC=30_000_000)
    msgs = _recv_all(listener)
    assert msgs == [
        "READY=1\nSTATUS=mounted s3://b at /mnt\n",
        "STOPPING=1\n",
        "EXTEND_TIMEOUT_USEC=30000000\n",
    ]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"s3encfs-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify(READY=1)
        assert _recv_all(sock) == ["READY=1\n"]
    finally:
        sock.close()


def test_no_socket_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(READY=1) is False


def test_dead_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify(READY=1) is False


def test_newline_rejected(listener: socket.socket) -> None:
    with pytest.raises(ValueError):
        sdnotify.notify(STATUS="a\nREADY=1")


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None


def test_watchdog_loop_pings_while_healthy(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s → ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    state = {"healthy": True}

    async def main() -> None:
        with trio.move_on_after(0.28):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sdnotify.watchdog_loop, lambda: state["healthy"])
                await trio.sleep(0.12)
                state["healthy"] = False
                await trio.sleep(1)

    trio.run(main)
    msgs = _recv_all(listener)
    pings = [m for m in msgs if m == "WATCHDOG=1\n"]
    assert 2 <= len(pings) <= 4
    # after turning unhealthy: exactly one status message, no more pings
    assert msgs[len(pings)] == "STATUS=unhealthy: watchdog pings stopped\n"
    assert len(msgs) == len(pings) + 1


def test_watchdog_loop_returns_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    async def main() -> None:
        with trio.fail_after(1):
            await sdnotify.watchdog_loop(lambda: True)

    trio.run(main)
