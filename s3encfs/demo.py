"""`make run`: a local S3 server, a demo master key and an encrypted mount, in one command.

    python -m s3encfs.demo [--state-dir DIR] [--mountpoint DIR] [--check]

Everything lives in the state directory (default ``.state/demo`` in the current directory)::

    STATE/s3/        the SeaweedFS server (data survives a restart: a second run finds it)
    STATE/keys/      the demo key store (master key "demo", EMPTY passphrase)
    STATE/cache/     the mount's cache dir (staging files, journal, read cache)
    STATE/mount.log  the mount process's log

The mount runs as a child process (``s3encfs mount ... --foreground``).  Ctrl-C or SIGTERM
stops it the way a service stop does: SIGTERM to the mount, which uploads everything pending
and then unmounts; then the server is stopped.  ``--check`` mounts, writes and reads a file
through the mount, checks that S3 only holds ciphertext, unmounts and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from s3encfs.demo_banner import BUCKET, KEY_NAME, banner
from s3encfs.demo_host import (
    DemoError,
    clear_stale_mount,
    is_mounted,
    lock_state_dir,
    say,
)
from s3encfs.demo_selfcheck import check_through_mount
from s3encfs.server import SeaweedS3, ServerError, parent_death_signal

__all__ = ["BUCKET", "KEY_NAME", "Demo", "DemoError", "is_mounted", "main"]

CLI = [sys.executable, "-m", "s3encfs.cli"]


class Demo:
    def __init__(self, state_dir: Path, mountpoint: Path) -> None:
        self.state = state_dir.resolve()
        self.mountpoint = mountpoint.resolve()
        self.keys_dir = self.state / "keys"
        self.cache_dir = self.state / "cache"
        self.log_path = self.state / "mount.log"
        self.server = SeaweedS3(self.state / "s3")
        self.mount_proc: subprocess.Popen[bytes] | None = None
        self.stop_requested = threading.Event()
        self.signals = 0

    # -- environment -------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment for `s3encfs` subprocesses: the server's AWS_* and the demo keyring.

        The demo key store has an EMPTY passphrase (S3ENCFS_PASSPHRASE="" with the explicit
        S3ENCFS_ALLOW_EMPTY_PASSPHRASE=1): anyone who can read
        STATE/keys has the key.  Fine for a throw-away demo, not for real data.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.server.env())
        env["S3ENCFS_KEYRING_DIR"] = str(self.keys_dir)
        env["S3ENCFS_PASSPHRASE"] = ""
        env["S3ENCFS_ALLOW_EMPTY_PASSPHRASE"] = "1"  # the explicit flag an empty one needs
        for var in ("S3ENCFS_PASSPHRASE_FD", "S3ENCFS_PASSCOMMAND"):
            env.pop(var, None)
        return env

    # -- steps ---------------------------------------------------------------------------------
    def start_server(self) -> None:
        say(f"starting the local S3 server (SeaweedFS, state in {self.server.state_dir}) ...")
        try:
            self.server.start()
        except ServerError as exc:
            raise DemoError(f"S3 server did not start: {exc}") from None

    def ensure_bucket(self) -> None:
        s3 = self.server.client()
        names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if BUCKET not in names:
            s3.create_bucket(Bucket=BUCKET)
            say(f"created bucket {BUCKET!r}")

    def ensure_key(self) -> bool:
        """Create the demo master key on first use; True when it was created now."""
        self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        listed = subprocess.run([*CLI, "key", "list", "--json"], env=self.env(),
                                capture_output=True, text=True)
        if listed.returncode != 0:
            raise DemoError(f"s3encfs key list failed: {listed.stderr.strip()}")
        if any(k.get("name") == KEY_NAME for k in json.loads(listed.stdout or "[]")):
            return False
        made = subprocess.run([*CLI, "key", "create", KEY_NAME], env=self.env(),
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise DemoError(f"s3encfs key create failed: {made.stderr.strip()}")
        return True

    def mount_argv(self) -> list[str]:
        return [*CLI, "mount", f"s3://{BUCKET}", str(self.mountpoint), "--foreground",
                "--encryption", "client", "--key", KEY_NAME,
                "--cache-dir", str(self.cache_dir),
                "--endpoint-url", self.server.endpoint]

    def start_mount(self, timeout: float = 60) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        clear_stale_mount(self.mountpoint)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self.mount_proc = subprocess.Popen(
                self.mount_argv(), env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a terminal Ctrl-C reaches only us, and we send exactly one
                # SIGTERM (a second signal makes the mount exit without uploading).
                start_new_session=True,
                # If this process dies without stopping it, the mount still flushes + unmounts.
                preexec_fn=parent_death_signal())
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mount_proc.poll() is not None:
                self.mount_proc = None
                raise DemoError(f"the mount exited early; its log ({self.log_path}):\n"
                                + self.log_tail())
            if os.path.ismount(self.mountpoint):
                return
            if self.stop_requested.is_set():
                return
            time.sleep(0.05)
        raise DemoError(f"the mount did not come up in {timeout:.0f} s; log:\n" + self.log_tail())

    def log_tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop_mount(self, timeout: float = 900) -> int:
        """SIGTERM the mount (it uploads what is pending, then unmounts) and wait for it."""
        proc, self.mount_proc = self.mount_proc, None
        code = 0
        if proc is not None:
            if proc.poll() is None:
                say("stopping the mount: uploading pending data, then unmounting ...")
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    say("the mount did not stop in time; killing it (the journal in "
                        f"{self.cache_dir} replays pending uploads on the next run)")
                    proc.kill()
                    code = proc.wait()
            else:
                code = proc.returncode
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        return code

    def stop_server(self) -> None:
        if self.server.running:
            say("stopping the S3 server ...")
        self.server.stop()

    # -- output ----------------------------------------------------------------------------------
    def banner(self, key_created: bool) -> None:
        banner(self, key_created)

    # -- signals ---------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.signals += 1
            self.stop_requested.set()
            if self.signals > 1 and self.mount_proc is not None:
                # Second Ctrl-C while stopping: make the mount quit now; nothing closed is lost,
                # its journal replays the pending uploads on the next run.
                with contextlib.suppress(ProcessLookupError):
                    self.mount_proc.send_signal(signal.SIGTERM)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)

    def wait(self) -> int:
        """Until a signal or the mount exits by itself (e.g. `s3encfs umount`)."""
        while not self.stop_requested.is_set():
            proc = self.mount_proc
            if proc is None:
                return 1
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            say(f"the mount process exited ({proc.returncode}); see {self.log_path}")
            return 0 if proc.returncode == 0 else 1
        return 0

    # -- --check ---------------------------------------------------------------------------------
    def check(self) -> None:
        check_through_mount(self.mountpoint, self.server.client(), BUCKET)

    # -- the whole run -----------------------------------------------------------------------
    def run(self, check: bool) -> int:
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            lock_fd = lock_state_dir(self.state)
        except DemoError as exc:  # touch nothing of the running demo
            print(f"demo: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            return self._run(check)
        finally:
            os.close(lock_fd)

    def _run(self, check: bool) -> int:
        self.install_signal_handlers()
        code = 0
        try:
            self.start_server()
            self.ensure_bucket()
            created = self.ensure_key()
            if created:
                say(f"created demo master key {KEY_NAME!r} in {self.keys_dir} "
                    "(EMPTY passphrase)")
            if self.stop_requested.is_set():
                return 0
            self.start_mount()
            if self.stop_requested.is_set():
                return 0
            if check:
                self.check()
            else:
                self.banner(created)
                code = self.wait()
        except DemoError as exc:
            print(f"demo: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            mcode = self.stop_mount()
            if mcode != 0:
                print(f"demo: the mount exited with {mcode}; see {self.log_path}",
                      file=sys.stderr, flush=True)
                code = code or 1
            self.stop_server()
        if code == 0:
            say("stopped cleanly." if not check else "check passed.")
        return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m s3encfs.demo",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--state-dir", type=Path, default=None,
                    help="server data, demo keys, cache, log (default: ./.state/demo)")
    ap.add_argument("--mountpoint", type=Path, default=None,
                    help="default: ./mnt, or STATE/mnt when --state-dir is given")
    ap.add_argument("--check", action="store_true",
                    help="mount, write+read a file, unmount, exit 0 (self-test)")
    args = ap.parse_args(argv)
    state: Path = args.state_dir or Path(".state/demo")
    mnt: Path = args.mountpoint or (state / "mnt" if args.state_dir else Path("mnt"))
    demo = Demo(state, mnt)
    try:
        return demo.run(args.check)
    except Exception as exc:  # a clear line, and never a half-stopped demo
        print(f"demo: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        demo.stop_mount()
        demo.stop_server()
        return 1


if __name__ == "__main__":
    sys.exit(main())
