"""`make run` (python -m s3encfs.demo): self-check, clean stop on SIGTERM / Ctrl-C, persistence."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mounting import keyenv, mount_factory  # noqa: F401

from s3encfs.demo import is_mounted
from s3encfs.server import ServerError, find_weed

DEMO = [sys.executable, "-m", "s3encfs.demo"]


@pytest.fixture(autouse=True)
def _need_weed() -> None:
    try:
        find_weed()
    except ServerError as e:
        pytest.skip(str(e))


def _clean_env() -> dict[str, str]:
    """No AWS_* / keyring settings from the outside: the demo must bring its own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "S3ENCFS_"))}


def _port_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _assert_all_stopped(state: Path, mnt: Path) -> None:
    assert not is_mounted(mnt), "demo left the mount behind"
    ports = json.loads((state / "s3" / "ports.json").read_text())
    assert not _port_listening(ports["s3"]), "demo left the S3 server running"


class Running:
    """The demo in the background, stdin not a tty, in its own process group (like a shell job)."""

    def __init__(self, state: Path, mnt: Path) -> None:
        self.out = state.parent / f"{state.name}-demo-{time.monotonic_ns()}.out"
        self.fh = open(self.out, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen([*DEMO, "--state-dir", str(state), "--mountpoint", str(mnt)],
                                     stdin=subprocess.DEVNULL, stdout=self.fh,
                                     stderr=subprocess.STDOUT, env=_clean_env(),
                                     start_new_session=True)
        self.mnt = mnt

    def wait_mounted(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"demo exited early:\n{self.text()}"
            if os.path.ismount(self.mnt) and "Ctrl-C" in self.text():
                return
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"demo did not mount in {timeout} s:\n{self.text()}")

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self, sig: int, timeout: float = 120) -> int:
        if sig == signal.SIGINT:  # a terminal's Ctrl-C goes to the whole foreground group
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.fh.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        self.fh.close()


def test_check_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = subprocess.run([*DEMO, "--check", "--state-dir", str(state)], env=_clean_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check passed" in r.stdout
    assert "none with plaintext" in r.stdout
    # the demo key store: one master key file, private
    key_file = state / "keys" / "demo.key"
    assert key_file.is_file()
    assert key_file.stat().st_mode & 0o077 == 0
    assert json.loads(key_file.read_text())["kind"] == "master"
    _assert_all_stopped(state, state / "mnt")


def test_serve_stop_and_persist(tmp_path: Path) -> None:
    state, mnt = tmp_path / "state", tmp_path / "mnt"
    payload = os.urandom(3 * 1024 * 1024 + 17)

    # first run: SIGTERM (what `systemctl stop` / `kill` send)
    demo = Running(state, mnt)
    try:
        demo.wait_mounted()
        banner = demo.text()
        assert str(mnt) in banner
        assert "EMPTY passphrase" in banner
        assert "s3encfs key export demo" in banner
        assert "http://127.0.0.1:" in banner
        (mnt / "sub").mkdir()
        (mnt / "sub" / "data.bin").write_bytes(payload)  # closed, not fsynced: stop must upload
        code = demo.stop(signal.SIGTERM)
    finally:
        demo.kill()
    assert code == 0, demo.text()
    assert "stopped cleanly" in demo.text()
    _assert_all_stopped(state, mnt)
    db = sqlite3.connect(state / "cache" / "journal.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
    finally:
        db.close()
    shutil.rmtree(state / "cache")  # the second run must get everything from S3

    # second run on the same state: same key (not re-created), data still there; Ctrl-C stops
    demo = Running(state, mnt)
    try:
        demo.wait_mounted()
        assert "created just now" not in demo.text()
        assert (mnt / "sub" / "data.bin").read_bytes() == payload
        code = demo.stop(signal.SIGINT)
    finally:
        demo.kill()
    assert code == 0, demo.text()
    _assert_all_stopped(state, mnt)


def test_make_install_into_destdir(tmp_path: Path) -> None:
    """`make install DESTDIR=…` lays out links, units, every doc, a man page, an example config
    and a private /etc/s3encfs from a runtime-only venv; keeps an edited unit; `make uninstall`
    removes exactly what it installed."""
    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "root"
    # the runtime venv gets the package without dev or server extras
    plan = subprocess.run(["make", "-n", "install", f"RUN_VENV={tmp_path}/fresh-venv"],
                          cwd=repo, capture_output=True, text=True, timeout=60)
    pips = [ln for ln in plan.stdout.splitlines() if "pip install" in ln]
    assert pips and all(ln.rstrip().endswith("-e .") for ln in pips), plan.stdout
    assert "[dev" not in plan.stdout and "server]" not in plan.stdout, plan.stdout

    venv = Path(sys.prefix)  # stands in for the runtime venv (building one needs the network)
    make = ["make", "-o", "sysdeps", "-o", f"{venv}/.s3encfs-run-stamp", f"RUN_VENV={venv}",
            f"DESTDIR={root}"]
    r = subprocess.run([*make, "install"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    venv_bin = venv / "bin"
    assert os.readlink(root / "usr/local/bin/s3encfs") == str(venv_bin / "s3encfs")
    for helper in ("mount.s3encfs", "mount.fuse.s3encfs"):
        link = root / "sbin" / helper
        assert os.readlink(link) == str(venv_bin / helper)
        # mount(8)'s fake mode: prints the s3encfs command, mounts nothing
        fake = subprocess.run([str(link), "s3://b/p", str(tmp_path), "-f", "-o",
                               "enc=none,_netdev"], capture_output=True, text=True)
        assert fake.returncode == 0, fake.stderr
        assert "--encryption none" in fake.stderr
    assert (root / "etc/s3encfs").stat().st_mode & 0o777 == 0o700
    # root's `s3encfs key create` then uses the same store as the systemd service
    assert (root / "etc/s3encfs/keys").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/s3encfs/example.toml.sample").read_text() == \
        (repo / "docs/example.toml").read_text()
    units = sorted(p.name for p in (root / "etc/systemd/system").iterdir())
    assert units == sorted(p.name for p in (repo / "systemd").iterdir()
                           if p.suffix in (".service", ".timer"))
    docdir = root / "usr/local/share/doc/s3encfs"
    assert (docdir / "SERVICE.md").read_text() == (repo / "docs/SERVICE.md").read_text()
    for doc in (repo / "docs").glob("*.md"):  # SERVICE.md links KEYS.md etc.: all are there
        assert (docdir / doc.name).is_file(), doc.name
    man = (root / "usr/local/share/man/man1/s3encfs.1").read_text()
    assert ".SH EXIT STATUS" in man and "s3encfs mount" in man
    assert "_s3encfs_completion" in \
        (root / "usr/local/share/bash-completion/completions/s3encfs").read_text()

    # an edited unit survives a second install (the new one goes next to it) and the uninstall
    unit = root / "etc/systemd/system/s3encfs@.service"
    unit.write_text(unit.read_text() + "\n# local edit\n")
    r = subprocess.run([*make, "install"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "local edit" in unit.read_text()
    assert (unit.parent / "s3encfs@.service.s3encfs-new").read_text() == \
        (repo / "systemd/s3encfs@.service").read_text()
    (root / "etc/s3encfs/host1.toml").write_text("# the admin's config\n")

    r = subprocess.run([*make, "uninstall"], cwd=repo, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert left == ["etc/s3encfs/host1.toml", "etc/systemd/system/s3encfs@.service"], left
    assert (root / "etc/s3encfs/keys").is_dir()  # keys are never removed


# -- regression found while writing docs/SEMANTICS.md -------------------------------------------
def test_client_mode_oversized_xattr_is_refused_not_stuck(bucket, mount_factory):  # noqa: F811
    """Client mode seals attrs into at most 1800 chars of metadata. An xattr that passed the
    plain 1500-char check but not the sealed limit used to be accepted, and then every upload
    of the file failed ("sealed attributes need … bytes"): its data never reached S3 and umount
    waited forever. It must be refused with ENOSPC instead."""
    m = mount_factory(bucket, "client")
    f = m.mountpoint / "f"
    f.write_bytes(b"data")
    with pytest.raises(OSError) as exc:
        os.setxattr(f, "user.big", b"v" * 1000)
    assert exc.value.errno == errno.ENOSPC
    os.setxattr(f, "user.ok", b"v" * 700)
    m.umount(timeout=60)
    m.start()
    assert f.read_bytes() == b"data"
    assert os.getxattr(f, "user.ok") == b"v" * 700
    assert "user.big" not in os.listxattr(f)
