"""systemd units pass `systemd-analyze verify`; the backup service's command does what it says."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3encfs import backup as backupmod

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
INSTALLED_EXE = "/usr/local/bin/s3encfs"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def _instantiate(tmp_path: Path) -> list[Path]:
    """Copies named for instance 'demo'; ExecStart points at this checkout's s3encfs when the
    installed /usr/local/bin/s3encfs (made by `make install`) is not there yet."""
    exe = INSTALLED_EXE
    if not os.access(exe, os.X_OK):
        exe = str(Path(sys.executable).parent / "s3encfs")
    out = []
    for src in sorted(UNITS.glob("*@.*")):
        dst = tmp_path / src.name.replace("@.", "@demo.")
        dst.write_text(src.read_text().replace(INSTALLED_EXE, exe))
        out.append(dst)
    return out


def test_units_exist_and_parse() -> None:
    mount = _unit("s3encfs@.service")
    svc = mount["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == f"{INSTALLED_EXE} mount --config %i --foreground"
    assert svc["KillMode"] == "mixed" and svc["Restart"] == "on-failure"
    assert svc["DeviceAllow"] == "/dev/fuse rw"
    # keys and plaintext never reach the disk through a core dump or swap (issue 10, item 6)
    assert svc["LimitCORE"] == "0" and svc["MemorySwapMax"] == "0"
    assert svc["UMask"] == "0077" and svc["CacheDirectoryMode"] == "0700"
    # a private mount namespace would hide the FUSE mount from the host
    for option in (
        "PrivateTmp",
        "ProtectSystem",
        "ProtectHome",
        "ReadWritePaths",
        "PrivateDevices",
    ):
        assert option not in svc, option
    assert "network-online.target" in mount["Unit"]["After"]
    backup = _unit("s3encfs-backup@.service")
    assert backup["Service"]["ExecStart"] == f"{INSTALLED_EXE} backup %i"
    assert backup["Unit"]["Requires"] == "s3encfs@%i.service"
    timer = _unit("s3encfs-backup@.timer")["Timer"]
    assert timer["OnCalendar"] == "daily" and timer["Persistent"] == "true"
    assert "RandomizedDelaySec" in timer


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze missing (apt-get install systemd)")
    units = _instantiate(tmp_path)
    assert len(units) == 3
    proc = subprocess.run(
        [tool, "verify", "--man=no", *(u.name for u in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    if "Failed to initialize" in proc.stderr or "Operation not permitted" in proc.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()[:200]}")
    # verify exits 0 on unknown keys and bad values, only warning: any line about our units fails
    ours = [line for line in proc.stderr.splitlines() if "s3encfs" in line]
    assert proc.returncode == 0, proc.stderr
    assert ours == [], "\n".join(ours)


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above can fail: a typo'd key in our unit is reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze missing")
    unit = next(u for u in _instantiate(tmp_path) if u.name == "s3encfs@demo.service")
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KilMode=mixed"))
    proc = subprocess.run(
        [tool, "verify", "--man=no", unit.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert "KilMode" in proc.stderr


# ----------------------------------------------------------------------------- backup command


def _config(tmp_path: Path, extra: str = "") -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(5000))
    (src / "skip.tmp").write_text("no\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "stale").write_text("old\n")
    path = tmp_path / "conf" / "demo.toml"
    path.parent.mkdir()
    path.write_text(
        f'source = "s3://bucket1/demo"\nmountpoint = "{mnt}"\ncache_dir = "{tmp_path}/cache"\n'
        f'[backup]\nsource = "{src}/"\nexcludes = ["*.tmp"]\n{extra}'
    )
    return path


def test_build_rsync_argv(tmp_path: Path) -> None:
    from s3encfs.config import load_config

    cfg = load_config(str(_config(tmp_path, 'rsync_args = ["--hard-links"]\nsubdir = "h1"\n'
                                            "delete = true\n")))
    assert backupmod.build_rsync_argv(cfg) == [
        "rsync",
        "-a",
        "--stats",
        "--delete",  # only because the config says delete = true
        "--exclude=*.tmp",
        "--hard-links",
        f"{tmp_path}/src/",
        f"{tmp_path}/mnt/h1/",
    ]


def test_parse_stats() -> None:
    text = (
        "Number of files: 1,204 (reg: 1,100, dir: 104)\n"
        "Number of regular files transferred: 1,003\n"
        "Number of deleted files: 2\n"
        "Total transferred file size: 12,345,678 bytes\n"
    )
    assert backupmod.parse_stats(text) == {
        "files": 1003,
        "bytes": 12345678,
        "deleted": 2,
        "total_files": 1204,
    }


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync missing")
def test_backup_runs_rsync_then_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, 'subdir = "/"\ndelete = true\n')  # the mount root, --delete
    flushed: list[str] = []
    monkeypatch.setattr(backupmod, "_not_our_mount", lambda p: "")

    def fake_flush(mountpoint: str, timeout: float) -> str:
        flushed.append(mountpoint)
        return ""

    monkeypatch.setattr(backupmod, "flush_mount", fake_flush)
    result = CliRunner().invoke(backupmod.backup, [str(path)])
    assert result.exit_code == 0, result.output
    mnt = tmp_path / "mnt"
    assert (mnt / "a.txt").read_text() == "alpha\n"
    assert (mnt / "sub" / "b.bin").stat().st_size == 5000
    assert not (mnt / "skip.tmp").exists() and not (mnt / "stale").exists()
    assert flushed == [str(mnt)]
    line = result.output.strip()
    assert "\n" not in line
    assert line.startswith("backup demo: ok exit=0 files=2 bytes=5006 deleted=1 duration=")


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync missing")
def test_backup_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path)
    # not mounted: refuse to rsync into the bare directory
    result = CliRunner().invoke(backupmod.backup, [str(path)])
    assert result.exit_code == 1 and "is not mounted" in result.output
    assert not (tmp_path / "mnt" / "a.txt").exists()

    monkeypatch.setattr(backupmod, "_not_our_mount", lambda p: "")
    monkeypatch.setattr(backupmod, "flush_mount", lambda mp, t: "flush failed: no answer")
    result = CliRunner().invoke(backupmod.backup, [str(path)])
    assert result.exit_code == 1
    assert "FAILED exit=1" in result.output and "flush failed: no answer" in result.output

    shutil.rmtree(tmp_path / "src")  # rsync: source missing → exit 23, reported as partial
    result = CliRunner().invoke(backupmod.backup, [str(path)])
    assert result.exit_code == 23
    assert "backup demo: partial exit=23" in result.output


def test_backup_without_backup_section(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(f'source = "s3://bucket1"\nmountpoint = "{tmp_path}"\n')
    result = CliRunner().invoke(backupmod.backup, [str(path)])
    assert result.exit_code == 1 and "no [backup] source" in result.output
