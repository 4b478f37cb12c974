"""A foreground mount that has stopped ends with `os._exit` (cli.exit_at_once): the
interpreter's teardown freed the whole heap object by object while `s3encfs umount` (and
systemd) waited for the process, 0.3-0.5 s of CPU after a 1 GiB write."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest


class _Exited(BaseException):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def test_a_foreground_mount_exits_without_the_interpreter_teardown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3encfs.mount
    from s3encfs import cli

    flushed: list[str] = []
    monkeypatch.setattr(s3encfs.mount, "run_mount", lambda cfg: 3)
    monkeypatch.setattr(logging, "shutdown", lambda: flushed.append("logging"))

    def fake_exit(code: int) -> Any:
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with pytest.raises(_Exited) as exc:  # not SystemExit: sys.exit ran the whole teardown
        cli.main.main(["mount", "s3://bucket", str(mnt), "-f", "--encryption", "none",
                       "--cache-dir", str(tmp_path / "cache")], standalone_mode=False)
    assert exc.value.code == 3
    assert flushed == ["logging"]  # the log is flushed before the process goes
