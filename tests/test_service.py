"""Service behaviour with a real mount: the sd_notify protocol against a real NOTIFY_SOCKET
(READY only once the mount answers, periodic STATUS, STOPPING on SIGTERM with every pending
upload flushed, exit 0, unmounted) and `s3encfs backup NAME` run by hand from a config file."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from mounting import S3ENCFS


def _fields(datagram: bytes) -> dict[str, str]:
    out = {}
    for line in datagram.decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def wait_for(self, pred, timeout: float, proc: subprocess.Popen | None = None,  # type: ignore[no-untyped-def]
                 log: Path | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [m for _, m in self.messages]
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise AssertionError(f"notify message not seen in {timeout}s; got {got}\n{tail}")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    # exited: whatever it sent is already queued; drain it, then give up
                    deadline = min(deadline, time.monotonic() + 0.5)
                continue
            fields = _fields(data)
            self.messages.append((time.monotonic(), fields))
            if pred(fields):
                return fields

    def close(self) -> None:
        self.sock.close()


def _cleanup(proc: subprocess.Popen[bytes] | None, mnt: Path) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def test_notify_ready_status_stopping_and_flush_on_sigterm(  # type: ignore[no-untyped-def]
        bucket: str, s3, s3env: dict[str, str], tmp_path: Path) -> None:
    mnt, cache, log_path = tmp_path / "mnt", tmp_path / "cache", tmp_path / "mount.log"
    mnt.mkdir()
    listener = NotifyListener(tmp_path / "notify.sock")
    env = dict(s3env, NOTIFY_SOCKET=str(listener.path))
    argv = [*S3ENCFS, "mount", f"s3://{bucket}", str(mnt), "--foreground",
            "--encryption", "none", "--cache-dir", str(cache), "--upload-delay", "30"]
    proc = None
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        ready = listener.wait_for(lambda f: f.get("READY") == "1", 60, proc, log_path)
        # READY must only come once the mount answers: check at once, no polling
        assert os.path.ismount(mnt), "READY=1 sent before the FUSE mount was in place"
        assert os.listdir(mnt) == []
        assert proc.poll() is None
        assert "STATUS" in ready  # "mounted"
        # nothing before READY claimed readiness or stopping
        assert all("STOPPING" not in m for _, m in listener.messages)

        files = {f"f{i}.txt": os.urandom(1000 * (i + 1)) for i in range(3)}
        files["sub/deep.bin"] = os.urandom(300_000)
        (mnt / "sub").mkdir()
        for name, data in files.items():
            (mnt / name).write_bytes(data)

        # periodic STATUS (every 5 s) reports the pending uploads (upload delay 30 s holds them)
        status = listener.wait_for(
            lambda f: "pending uploads" in f.get("STATUS", "")
            and int(re.search(r"pending uploads (\d+)", f["STATUS"]).group(1)) > 0,  # type: ignore[union-attr]
            12, proc, log_path)
        pending = int(re.search(r"pending uploads (\d+)", status["STATUS"]).group(1))  # type: ignore[union-attr]
        assert pending >= len(files), status
        assert time.monotonic() - t0 < 30  # i.e. well before the upload delay runs out
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert not [o["Key"] for o in listed if not o["Key"].startswith(".s3encfs/")
                    and not o["Key"].endswith("/")], "files uploaded before the stop"

        # SIGTERM: STOPPING=1, every pending file uploaded, unmounted, exit 0
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stopping = listener.wait_for(lambda f: f.get("STOPPING") == "1", 30, proc, log_path)
        assert "STATUS" in stopping
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - t_stop
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
        assert not os.path.ismount(mnt)
        for name, data in files.items():
            body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
            assert body == data, name
        print(f"stop (SIGTERM -> exit) took {stop_s:.2f}s with {pending} pending uploads")
    finally:
        _cleanup(proc, mnt)
        listener.close()


def test_backup_command_by_hand(bucket: str, s3, s3env: dict[str, str], s3server,  # type: ignore[no-untyped-def]
                                tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    tree = {
        "top.txt": b"top level\n",
        "a/one.bin": os.urandom(70_000),
        "a/b/two.txt": b"nested " * 100,
        "a/b/empty": b"",
        "big.bin": os.urandom(3 * 1024 * 1024),
    }
    for rel, data in tree.items():
        (src / rel).write_bytes(data)
    (src / "skip.tmp").write_bytes(b"excluded")

    confdir, mnt, cache = tmp_path / "conf", tmp_path / "mnt", tmp_path / "cache"
    confdir.mkdir()
    mnt.mkdir()
    (confdir / "nightly.toml").write_text(
        f'source = "s3://{bucket}"\n'
        f'mountpoint = "{mnt}"\n'
        f'endpoint_url = "{s3server.endpoint}"\n'
        'encryption = "none"\n'
        f'cache_dir = "{cache}"\n'
        'upload_delay = 0.3\n'
        '\n[backup]\n'
        f'source = "{src}/"\n'
        'subdir = "/"\n'  # into the mount root (the default is a subdirectory per host)
        'excludes = ["*.tmp"]\n')
    env = dict(s3env, S3ENCFS_CONFIG_DIR=str(confdir))
    log_path = tmp_path / "mount.log"
    proc = None
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([*S3ENCFS, "mount", "--config", "nightly", "--foreground"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "mount did not come up"
            time.sleep(0.05)

        t0 = time.monotonic()
        res = subprocess.run([*S3ENCFS, "backup", "nightly"], env=env, capture_output=True,
                             text=True, timeout=120)
        backup_s = time.monotonic() - t0
        assert res.returncode == 0, (res.stdout, res.stderr)
        lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, res.stdout
        assert lines[0].startswith("backup nightly: ok exit=0 "), lines[0]
        m = re.search(r"\bfiles=(\d+)\b", lines[0])
        assert m and int(m.group(1)) == len(tree), lines[0]
        m = re.search(r"\bbytes=(\d+)\b", lines[0])
        assert m and int(m.group(1)) == sum(len(d) for d in tree.values()), lines[0]
        assert re.search(r"\bduration=[\d.]+s\b", lines[0]), lines[0]
        # the restore point: when every byte of this run was in S3 (for mount/restore --as-of)
        m = re.search(r"\brestore_point=(\S+Z)$", lines[0])
        assert m, lines[0]
        from s3encfs.timespec import parse_time
        assert time.time() - backup_s - 1 <= parse_time(m.group(1)) <= time.time(), lines[0]
        # backup waited for the flush: everything is in S3 before the umount
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert set(tree) <= keys, sorted(keys)

        subprocess.run([*S3ENCFS, "umount", str(mnt)], env=env, check=True, timeout=120,
                       capture_output=True)
        assert proc.wait(timeout=60) == 0
        assert not os.path.ismount(mnt)

        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        files = {k for k in keys if not k.startswith(".s3encfs/") and not k.endswith("/")}
        assert files == set(tree), sorted(keys)
        for rel, data in tree.items():
            assert s3.get_object(Bucket=bucket, Key=rel)["Body"].read() == data, rel
        print(f"backup of {len(tree)} files took {backup_s:.2f}s")
    finally:
        _cleanup(proc, mnt)


def test_backup_refuses_when_not_mounted(s3env: dict[str, str], tmp_path: Path) -> None:
    src, mnt, confdir = tmp_path / "src", tmp_path / "mnt", tmp_path / "conf"
    for d in (src, mnt, confdir):
        d.mkdir()
    (src / "x").write_bytes(b"x")
    (confdir / "off.toml").write_text(
        f'source = "s3://nobucket"\nmountpoint = "{mnt}"\nencryption = "none"\n'
        f'\n[backup]\nsource = "{src}/"\n')
    env = dict(s3env, S3ENCFS_CONFIG_DIR=str(confdir))
    res = subprocess.run([*S3ENCFS, "backup", "off"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    assert "backup off: FAILED" in res.stdout + res.stderr
    assert list(mnt.iterdir()) == []  # nothing copied onto the local disk

