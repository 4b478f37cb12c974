"""The operator's path (issue 14) on real mounts: a daemonizing mount that prompts for the
passphrase on a terminal, a service that comes back after SIGKILL, umount that only unmounts
s3encfs, refusing a non-empty mountpoint, and one-line errors with documented exit codes."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401 (fixtures)
from test_service import NotifyListener


def _ctty() -> None:  # in the child: make the pty (stdin) the controlling terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _umount(mnt: Path, env: dict[str, str]) -> None:
    subprocess.run([*S3ENCFS, "umount", str(mnt)], env=env, capture_output=True, timeout=120)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def test_daemon_mount_prompts_for_the_passphrase_on_a_terminal(
        bucket: str, s3env: dict[str, str], tmp_path: Path) -> None:
    keydir, mnt, cache = tmp_path / "keys", tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    env = dict(s3env, S3ENCFS_KEYRING_DIR=str(keydir))
    subprocess.run([*S3ENCFS, "key", "create", "backup"], check=True, capture_output=True,
                   env=dict(env, S3ENCFS_PASSPHRASE="correct horse"))
    for var in ("S3ENCFS_PASSPHRASE", "S3ENCFS_PASSPHRASE_FD", "S3ENCFS_PASSCOMMAND"):
        env.pop(var, None)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*S3ENCFS, "mount", f"s3://{bucket}", str(mnt), "--key", "backup",
         "--cache-dir", str(cache)],
        env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=_ctty)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"passphrase" not in seen.lower():
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            assert proc.poll() is None, seen
        os.write(master, b"correct horse\n")
        code = proc.wait(timeout=90)
        try:
            while select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        except OSError:
            pass
        assert code == 0, seen
        assert b"not a terminal" not in seen and b"Traceback" not in seen, seen
        assert os.path.ismount(mnt)
        (mnt / "hello.txt").write_bytes(b"hello from a terminal")
        assert (mnt / "hello.txt").read_bytes() == b"hello from a terminal"
    finally:
        os.close(master)
        _umount(mnt, env)
    assert not os.path.ismount(mnt)


def _config(tmp_path: Path, bucket: str, **extra: str) -> tuple[Path, Path, Path]:
    confdir, mnt, cache = tmp_path / "etc", tmp_path / "mnt", tmp_path / "cache"
    confdir.mkdir(exist_ok=True)
    mnt.mkdir(exist_ok=True)
    lines = [f'source = "s3://{bucket}"', f'mountpoint = "{mnt}"', f'cache_dir = "{cache}"',
             'encryption = "client"', "upload_delay = 30.0"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    (confdir / "host1.toml").write_text("\n".join(lines) + "\n")
    return confdir, mnt, cache


def _unit_argv() -> list[str]:
    """The unit's ExecStart (with %i = host1), run from this checkout."""
    unit = (Path(__file__).parent.parent / "systemd" / "s3encfs@.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = line.split("=", 1)[1].replace("%i", "host1").split()
    assert argv[0].endswith("/s3encfs")
    return [*S3ENCFS, *argv[1:]]


def _prevented_exit_codes() -> set[int]:
    unit = (Path(__file__).parent.parent / "systemd" / "s3encfs@.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("RestartPreventExitStatus="))
    return {int(c) for c in line.split("=", 1)[1].split()}


def test_sigkilled_service_comes_back_and_replays(  # type: ignore[no-untyped-def]
        bucket: str, s3, keyenv: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    confdir, mnt, _cache = _config(tmp_path, bucket)
    listener = NotifyListener(tmp_path / "notify.sock")
    env = dict(keyenv, NOTIFY_SOCKET=str(listener.path), S3ENCFS_CONFIG_DIR=str(confdir))
    log_path = tmp_path / "journal.log"
    argv = _unit_argv()
    proc = None
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        listener.wait_for(lambda f: f.get("READY") == "1", 60, proc, log_path)
        data = os.urandom(123_456)
        (mnt / "pending.bin").write_bytes(data)  # upload_delay 30 s: still pending at the kill
        proc.send_signal(signal.SIGKILL)  # as the watchdog (or a crash) would
        proc.wait(timeout=30)
        with pytest.raises(OSError) as dead:
            os.stat(mnt)
        assert dead.value.errno == errno.ENOTCONN  # a dead FUSE mount is left behind

        # systemd's restart: the same command again
        listener.messages.clear()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        listener.wait_for(lambda f: f.get("READY") == "1", 60, proc, log_path)
        text = log_path.read_text(errors="replace")
        assert "detaching the dead s3encfs mount" in text, text
        assert "finished 1 uploads journaled by an earlier mount" in text, text
        assert (mnt / "pending.bin").read_bytes() == data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log_path.read_text(errors="replace")[-3000:]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                if not o["Key"].startswith(".s3encfs/")]
        assert len(keys) == 1, keys  # the file, once: no conflict copy
        assert "Traceback" not in log_path.read_text(errors="replace")
    finally:
        listener.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.ismount(mnt) or not os.path.isdir(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def test_restart_prevented_only_for_what_a_restart_cannot_fix() -> None:
    from s3encfs import exitcodes as ex

    prevented = _prevented_exit_codes()
    assert prevented == set(ex.NO_RESTART)
    assert ex.UNAVAILABLE not in prevented and ex.TEMPFAIL not in prevented
    assert 1 not in prevented  # a crash is retried


def test_umount_refuses_a_filesystem_that_is_not_s3encfs(tmp_path: Path,
                                                        s3env: dict[str, str]) -> None:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "precious").write_text("keep me")
        proc = subprocess.run([*S3ENCFS, "umount", str(mnt)], env=s3env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0
        assert "not s3encfs" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert os.path.ismount(mnt)
        assert (mnt / "precious").read_text() == "keep me"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_non_empty_mountpoint_refused_unless_nonempty(  # type: ignore[no-untyped-def]
        bucket: str, keyenv: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    (mnt / "local-file").write_text("hidden by a mount")
    argv = [*S3ENCFS, "mount", f"s3://{bucket}", str(mnt), "--encryption", "none",
            "--cache-dir", str(cache)]
    try:
        proc = subprocess.run(argv, env=keyenv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 78, proc.stderr
        assert "not empty" in proc.stderr and "-o nonempty" in proc.stderr, proc.stderr
        assert not os.path.ismount(mnt)
        proc = subprocess.run([*argv, "-o", "nonempty"], env=keyenv, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert os.path.ismount(mnt)
    finally:
        _umount(mnt, keyenv)
    assert (mnt / "local-file").read_text() == "hidden by a mount"


def _backup_setup(tmp_path: Path, bucket: str, s3, extra: str = "") -> tuple[Path, Path, Path]:  # type: ignore[no-untyped-def]
    src = tmp_path / "home"
    (src / "alice").mkdir(parents=True)
    (src / "alice" / "notes.txt").write_bytes(b"notes\n")
    (src / "alice" / "junk.tmp").write_bytes(b"excluded\n")
    (src / "top.bin").write_bytes(os.urandom(50_000))
    # the prefix already holds other files (another host's backup, hand-made archives)
    s3.put_object(Bucket=bucket, Key="data/otherhost/keep.txt", Body=b"not ours")
    s3.put_object(Bucket=bucket, Key="data/archive-2025.tar", Body=b"not ours either")
    confdir, mnt, cache = tmp_path / "etc", tmp_path / "mnt", tmp_path / "cache"
    for d in (confdir, mnt):
        d.mkdir(exist_ok=True)
    # SERVICE.md's sample [backup] table
    (confdir / "host1.toml").write_text(
        f'source = "s3://{bucket}/data"\nmountpoint = "{mnt}"\ncache_dir = "{cache}"\n'
        'encryption = "none"\nupload_delay = 0.3\n\n[backup]\n'
        f'source = "{src}/"\nexcludes = ["*.tmp", ".cache/"]\n{extra}')
    return confdir, mnt, src


@pytest.mark.parametrize("delete", [False, True])
def test_backup_deletes_nothing_it_did_not_write(  # type: ignore[no-untyped-def]
        bucket: str, s3, s3env: dict[str, str], tmp_path: Path, delete: bool) -> None:
    import socket

    confdir, mnt, src = _backup_setup(tmp_path, bucket, s3,
                                      "delete = true\n" if delete else "")
    env = dict(s3env, S3ENCFS_CONFIG_DIR=str(confdir))
    host = socket.gethostname().split(".")[0]

    # not mounted: fails, the dry run as well, and nothing lands on the local disk
    for extra in ([], ["--dry-run"]):
        res = subprocess.run([*S3ENCFS, "backup", "host1", *extra], env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode != 0 and "not mounted" in res.stdout + res.stderr, res
        assert list(mnt.iterdir()) == []

    mount = subprocess.run([*S3ENCFS, "mount", "--config", "host1"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert mount.returncode == 0, mount.stderr
    try:
        dry = subprocess.run([*S3ENCFS, "backup", "host1", "--dry-run"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry
        assert "would change" in dry.stdout and "alice/notes.txt" in dry.stdout, dry.stdout
        assert "top.bin" in dry.stdout and "junk.tmp" not in dry.stdout, dry.stdout
        assert "would_transfer=2" in dry.stdout and "deleted=" not in dry.stdout, dry.stdout
        assert "dry-run" in dry.stdout.splitlines()[-1]
        assert sorted(os.listdir(mnt)) == ["archive-2025.tar", "otherhost"]  # changed nothing

        res = subprocess.run([*S3ENCFS, "backup", "host1"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res
        assert res.stdout.startswith("backup host1: ok exit=0"), res.stdout
        assert (mnt / host / "alice" / "notes.txt").read_bytes() == b"notes\n"

        # the source loses a file: with delete = true the next run deletes only that copy
        (src / "top.bin").unlink()
        res = subprocess.run([*S3ENCFS, "backup", "host1"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res
        assert (mnt / host / "top.bin").exists() is (not delete)
    finally:
        _umount(mnt, env)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert {"data/otherhost/keep.txt", "data/archive-2025.tar"} <= keys, keys
    assert s3.get_object(Bucket=bucket, Key="data/otherhost/keep.txt")["Body"].read() == \
        b"not ours"
    assert f"data/{host}/alice/notes.txt" in keys


def test_second_demo_in_the_same_checkout_leaves_the_first_alone(tmp_path: Path) -> None:
    from test_demo import DEMO, Running, _clean_env

    state, mnt = tmp_path / "state", tmp_path / "mnt"
    first = Running(state, mnt)
    try:
        first.wait_mounted()
        (mnt / "still-here.txt").write_bytes(b"first demo")
        second = subprocess.run([*DEMO, "--state-dir", str(state), "--mountpoint", str(mnt)],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env=_clean_env(), timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "another demo" in second.stderr, second.stderr
        assert "Traceback" not in second.stdout + second.stderr
        # the first demo still serves, its server still answers
        assert first.proc.poll() is None
        assert os.path.ismount(mnt)
        assert (mnt / "still-here.txt").read_bytes() == b"first demo"
        (mnt / "after.txt").write_bytes(b"x")
        assert first.stop(signal.SIGTERM) == 0, first.text()
    finally:
        first.kill()
    assert "s3encfs key export demo" in first.text()
    assert "\n                s3encfs key export" not in first.text()  # a command on PATH


def _mistakes(tmp_path: Path, bucket: str) -> list[tuple[str, list[str], dict[str, str], int, str]]:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text(f'source = "s3://{bucket}"\nmountpoint = "{tmp_path}/m"\ncache_siz = 1\n')
    nokey = {"S3ENCFS_PASSPHRASE": None}
    return [
        # (name, extra argv, env changes, exit code, words in the one line)
        ("no passphrase source", ["--encryption", "client"], nokey, 78, "no passphrase"),
        ("missing AWS profile", ["--profile", "nosuch"], {}, 78, "nosuch"),
        ("endpoint without a scheme", ["--endpoint-url", "127.0.0.1:8333"], {}, 78, "scheme"),
        ("unknown -o option", ["-o", "bogus"], {}, 78, "-o bogus"),
        ("cache dir cannot be created", ["--cache-dir", str(afile / "cache")], {}, 73,
         str(afile)),
        ("config error", ["--config", str(bad_toml)], {}, 78, "cache_siz"),
        ("unknown debug subsystem", ["--debug", "nosuch"], {}, 78, "nosuch"),
        ("missing default key", ["--encryption", "client"], {"S3ENCFS_KEYRING_DIR": str(
            tmp_path / "empty-keys")}, 78, "--key"),
        ("missing bucket", ["--source-bucket", "no-such-bucket-x"], {}, 78, "does not exist"),
        ("no credentials", [], {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                                "AWS_CONFIG_FILE": "/nonexistent"}, 77, "credentials"),
        ("unreachable endpoint", ["--endpoint-url", "http://127.0.0.1:9"], {}, 69,
         "unreachable"),
    ]


@pytest.mark.parametrize("foreground", [True, False])
def test_every_mistake_is_one_line_and_a_documented_exit_code(  # type: ignore[no-untyped-def]
        bucket: str, keyenv: dict[str, str], tmp_path: Path, foreground: bool) -> None:  # noqa: F811
    from s3encfs import exitcodes as ex

    documented = {code for code, _ in ex.TABLE}
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    keydir = Path(keyenv["S3ENCFS_KEYRING_DIR"])
    subprocess.run([*S3ENCFS, "key", "create", "pp"], check=True, capture_output=True,
                   env=dict(keyenv, S3ENCFS_KEYRING_DIR=str(keydir / "pp"),
                            S3ENCFS_PASSPHRASE="secret"))
    failures = []
    for name, extra, changes, code, words in _mistakes(tmp_path, bucket):
        env = dict(keyenv)
        if name == "no passphrase source":
            env["S3ENCFS_KEYRING_DIR"] = str(keydir / "pp")
            extra = [*extra, "--key", "pp"]
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        source = f"s3://{bucket}"
        if extra[:1] == ["--source-bucket"]:
            source, extra = f"s3://{extra[1]}", extra[2:]
        argv = [*S3ENCFS, "mount"]
        if extra[:1] != ["--config"]:
            argv += [source, str(mnt), "--cache-dir", str(tmp_path / "cache")]
            if "--encryption" not in extra:
                argv += ["--encryption", "none"]
        argv += extra + (["--foreground"] if foreground else [])
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        ok = (proc.returncode == code and len(lines) == 1 and words in lines[0]
              and lines[0].startswith("s3encfs: ") and "Traceback" not in proc.stderr
              and code in documented and f"| {code} |" in readme)
        if not ok:
            failures.append(f"{name}: exit {proc.returncode} (want {code}): {lines}")
        if os.path.ismount(mnt):
            _umount(mnt, keyenv)
    assert not failures, "\n".join(failures)
    log = tmp_path / "cache" / "mount.log"
    if log.exists():
        assert "Traceback" not in log.read_text()


def test_rekey_none_from_sse_and_refusals(  # type: ignore[no-untyped-def]
        bucket: str, s3, keyenv: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*S3ENCFS, *args], env=keyenv, capture_output=True, text=True,
                              timeout=300)

    s3.put_object(Bucket=bucket, Key="plain/a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="plain/dir/", Body=b"")
    s3.put_object(Bucket=bucket, Key="plain/dir/b.txt", Body=b"b")
    src = f"s3://{bucket}/plain"
    # none -> sse-s3, then check accepts the (SSE-less) directory marker, as ENCRYPTION.md says
    up = run("rekey", src, "--encryption", "sse-s3")
    assert up.returncode == 0, up.stdout + up.stderr
    assert s3.head_object(Bucket=bucket, Key="plain/a.txt").get("ServerSideEncryption") == "AES256"
    chk = run("check", src, "--encryption", "sse-s3")
    assert chk.returncode == 0, chk.stdout + chk.stderr
    # sse-s3 -> none really removes the SSE
    down = run("rekey", src, "--encryption", "none")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "re-encrypted 2" in down.stdout, down.stdout
    for key in ("plain/a.txt", "plain/dir/b.txt"):
        assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key=key), key
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() in (b"a", b"b")
    # none -> client is refused up front, and writes nothing (no keycheck)
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    bad = run("rekey", src, "--encryption", "client")
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "cannot encrypt contents" in bad.stderr and "Traceback" not in bad.stderr
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == before


TIMESTAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


def test_log_level_log_file_timestamps_and_journal_priorities(  # type: ignore[no-untyped-def]
        bucket: str, keyenv: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    import re

    from s3encfs import __version__

    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    base = [*S3ENCFS, "mount", f"s3://{bucket}", str(mnt), "--encryption", "none",
            "--cache-dir", str(cache)]

    # daemonized without a terminal: CACHE/mount.log, every line timestamped, version named
    proc = subprocess.run(base, env=keyenv, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _umount(mnt, keyenv)
    lines = (cache / "mount.log").read_text().splitlines()
    assert lines and all(re.match(TIMESTAMP, ln) for ln in lines), lines
    assert any(f"s3encfs {__version__}: mounted" in ln for ln in lines), lines

    # log_level from the config file is honoured; --log-file in the foreground
    confdir = tmp_path / "etc"
    confdir.mkdir()
    for level, want_debug in (("debug", True), ("warning", False)):
        (confdir / "lv.toml").write_text(
            f'source = "s3://{bucket}"\nmountpoint = "{mnt}"\ncache_dir = "{cache}"\n'
            f'encryption = "none"\nlog_level = "{level}"\n')
        logf = tmp_path / f"{level}.log"
        p = subprocess.Popen([*S3ENCFS, "mount", "--config", str(confdir / "lv.toml"),
                              "--foreground", "--log-file", str(logf)], env=keyenv,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        (mnt / f"{level}.txt").write_bytes(b"x")
        _umount(mnt, keyenv)
        p.wait(timeout=60)
        text = logf.read_text()
        assert all(re.match(TIMESTAMP, ln) for ln in text.splitlines()), text
        assert (" DEBUG " in text) is want_debug, text
        assert ("INFO" in text) is want_debug, text  # warning: not even the "mounted" line
        assert p.stderr.read() == b""  # type: ignore[union-attr]

    # under journald (JOURNAL_STREAM names stderr): a refusal carries priority 3 (err)
    (mnt / "occupied").write_text("x")
    errfile = tmp_path / "stderr"
    with open(errfile, "wb") as fh:
        st = os.fstat(fh.fileno())
        env = dict(keyenv, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        code = subprocess.run([*base, "--foreground"], env=env, stdout=fh, stderr=fh,
                              timeout=60).returncode
    assert code == 78
    err = errfile.read_text().splitlines()
    assert len(err) == 1 and err[0].startswith("<3>s3encfs: ") and "not empty" in err[0], err


def test_mounts_and_status_say_what_an_operator_asks(  # type: ignore[no-untyped-def]
        bucket: str, keyenv: dict[str, str], tmp_path: Path, mount_factory) -> None:  # noqa: F811
    import json

    from s3encfs import __version__

    m = mount_factory(bucket, "none", extra=["--upload-delay", "30"])
    (m.mountpoint / "f.txt").write_bytes(b"pending")
    (m.mountpoint / "f.txt").read_bytes()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*S3ENCFS, *args], env=keyenv, capture_output=True, text=True,
                              timeout=60)

    listed = cli("mounts", "--json")  # exit 1 if any mount on this machine is dead
    assert listed.returncode in (0, 1) and listed.stdout, listed.stderr
    rows = {r["mountpoint"]: r for r in json.loads(listed.stdout)}
    row = rows[str(m.mountpoint)]
    assert row["source"] == f"s3://{bucket}" and row["state"] == "mounted"
    assert row["mode"] == "none" and row["pending_uploads"] >= 1
    assert row["version"] == __version__
    text = cli("mounts").stdout
    assert f"{m.mountpoint}  s3://{bucket}  mounted  mode=none pending=" in text, text

    st = cli("status", str(m.mountpoint)).stdout
    fields = dict(ln.split(": ", 1) for ln in st.splitlines() if ": " in ln)
    assert fields["version"] == __version__ and fields["mode"] == "none"
    assert fields["pid"] == str(m.proc.pid)  # no thousands separators
    assert re.fullmatch(r"\d+s|\d+m \d\ds", fields["uptime_seconds"]), fields
    assert fields["cache_hit_rate"].endswith("%") or fields["cache_hit_rate"] == "-"
    assert fields["cache_limit"].endswith("GiB"), fields  # not raw bytes

    # a lookup of a missing name is a 404 probe, not an S3 error
    for i in range(3):
        assert not (m.mountpoint / f"missing-{i}").exists()
    js = json.loads(cli("status", str(m.mountpoint), "--json").stdout)
    assert js["s3"]["errors"] == 0, js["s3"]
    # one "s3encfs:" line on a directory that is not mounted; --keyring works for `key` too
    for cmd in ("status", "flush"):
        bad = cli(cmd, str(tmp_path))
        assert bad.returncode == 1 and bad.stderr.startswith("s3encfs: "), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    listed_keys = cli("key", "--keyring", keyenv["S3ENCFS_KEYRING_DIR"], "list")
    assert listed_keys.returncode == 0 and "default" in listed_keys.stdout, listed_keys.stderr

    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=30)
    dead = cli("mounts")
    ours = [ln for ln in dead.stdout.splitlines() if ln.startswith(f"{m.mountpoint}  ")]
    assert dead.returncode == 1 and ours and "  dead" in ours[0], dead.stdout
    m.proc = None
    subprocess.run(["fusermount3", "-uz", str(m.mountpoint)], capture_output=True)


@pytest.mark.parametrize("mode", ["client", "none", "sse-s3"])
def test_ls_cat_get_without_mounting(  # type: ignore[no-untyped-def]
        bucket: str, s3, keyenv: dict[str, str], tmp_path: Path, mount_factory,  # noqa: F811
        mode: str) -> None:
    from mounting import tree_hashes

    m = mount_factory(bucket, mode, prefix="pfx")
    big = os.urandom(700_000)
    (m.mountpoint / "docs" / "deep").mkdir(parents=True)
    (m.mountpoint / "docs" / "notes é.txt").write_bytes(b"hello notes\n")
    (m.mountpoint / "docs" / "deep" / "big.bin").write_bytes(big)
    (m.mountpoint / "empty").write_bytes(b"")
    os.chmod(m.mountpoint / "docs" / "notes é.txt", 0o600)
    os.utime(m.mountpoint / "empty", (1_600_000_000, 1_600_000_000))
    os.symlink("docs/notes é.txt", m.mountpoint / "link")
    want = tree_hashes(m.mountpoint)
    m.umount()

    src = f"s3://{bucket}/pfx"

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*S3ENCFS, *args, "--encryption", mode], env=keyenv,
                              capture_output=True, timeout=120)

    top = cli("ls", src)
    assert top.returncode == 0, top.stderr
    assert top.stdout.decode().splitlines() == ["docs/", "empty", "link"]
    longl = cli("ls", src, "docs", "-l").stdout.decode()
    assert "-rw------- " in longl and "notes é.txt" in longl and "deep/" in longl, longl
    rec = cli("ls", src, "-R").stdout.decode()
    assert "docs/deep:" in rec and "big.bin" in rec, rec
    cat = cli("cat", src, "docs/deep/big.bin")
    assert cat.returncode == 0 and cat.stdout == big

    dest = tmp_path / "restore"
    got = cli("get", src, "", str(dest))
    assert got.returncode == 0, got.stderr
    assert tree_hashes(dest) == {k: v for k, v in want.items() if k != "link"} | \
        {"link": want["link"]}
    assert os.readlink(dest / "link") == "docs/notes é.txt"
    assert (dest / "docs" / "notes é.txt").stat().st_mode & 0o777 == 0o600
    assert (dest / "empty").stat().st_mtime == 1_600_000_000
    one = cli("get", src, "docs/notes é.txt", str(tmp_path / "single.txt"))
    assert one.returncode == 0 and (tmp_path / "single.txt").read_bytes() == b"hello notes\n"

    if mode == "client":  # a damaged object: exit 65, one line, nothing half-written
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="pfx/")["Contents"]
                if o["Size"] > 600_000]
        body = bytearray(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
        head = s3.head_object(Bucket=bucket, Key=keys[0])
        body[100_000] ^= 1
        s3.put_object(Bucket=bucket, Key=keys[0], Body=bytes(body), Metadata=head["Metadata"])
        bad = cli("get", src, "docs/deep/big.bin", str(tmp_path / "bad.bin"))
        assert bad.returncode == 65, bad.stderr
        lines = bad.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("s3encfs: authentication failed"), lines
        assert not (tmp_path / "bad.bin").exists()
        assert not (tmp_path / "bad.bin.s3encfs-part").exists()


def test_key_change_passphrase_then_mount(  # type: ignore[no-untyped-def]
        bucket: str, s3env: dict[str, str], tmp_path: Path) -> None:
    keydir, mnt = tmp_path / "keys", tmp_path / "mnt"
    mnt.mkdir()
    env = dict(s3env, S3ENCFS_KEYRING_DIR=str(keydir), S3ENCFS_PASSPHRASE="old one")
    for name in ("k1", "k2"):
        subprocess.run([*S3ENCFS, "key", "create", name], env=env, check=True,
                       capture_output=True)
    before = {p.name: p.read_bytes() for p in keydir.iterdir()}
    wrong = subprocess.run([*S3ENCFS, "key", "change-passphrase"], capture_output=True, text=True,
                           env=dict(env, S3ENCFS_PASSPHRASE="nope", S3ENCFS_NEW_PASSPHRASE="x"))
    assert wrong.returncode == 77, wrong.stderr
    assert {p.name: p.read_bytes() for p in keydir.iterdir()} == before  # nothing changed
    ok = subprocess.run([*S3ENCFS, "key", "change-passphrase"], capture_output=True, text=True,
                        env=dict(env, S3ENCFS_NEW_PASSPHRASE="new one"))
    assert ok.returncode == 0 and "re-sealed 2 key(s)" in ok.stdout, ok.stderr
    base = [*S3ENCFS, "mount", f"s3://{bucket}", str(mnt), "--key", "k1",
            "--cache-dir", str(tmp_path / "cache")]
    old = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert old.returncode == 77 and not os.path.ismount(mnt), old.stderr
    new_env = dict(env, S3ENCFS_PASSPHRASE="new one")
    new = subprocess.run(base, env=new_env, capture_output=True, text=True, timeout=60)
    try:
        assert new.returncode == 0, new.stderr
        (mnt / "f").write_bytes(b"y")
    finally:
        _umount(mnt, new_env)


def test_info_fails_on_a_missing_bucket(s3env: dict[str, str]) -> None:
    proc = subprocess.run([*S3ENCFS, "info", "s3://no-such-bucket-for-info"], env=s3env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert proc.stderr.startswith("s3encfs: ") and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bwlimit_slows_uploads_to_the_rate(  # type: ignore[no-untyped-def]
        bucket: str, s3, keyenv: dict[str, str], mount_factory) -> None:  # noqa: F811
    m = mount_factory(bucket, "none", extra=["--bwlimit", "1M"])
    data = os.urandom(4 * 1024 * 1024)
    t0 = time.monotonic()
    with open(m.mountpoint / "big.bin", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # returns once the object is in S3
    took = time.monotonic() - t0
    # 4 MiB at 1 MiB/s with one second of burst: at least 3 s
    assert took >= 2.9, took
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    print(f"4 MiB with --bwlimit 1M took {took:.1f}s")


def test_flush_and_umount_show_progress_and_an_eta(  # type: ignore[no-untyped-def]
        bucket: str, s3, keyenv: dict[str, str], mount_factory) -> None:  # noqa: F811
    m = mount_factory(bucket, "none", extra=["--bwlimit", "256K", "--upload-delay", "0.2"])
    env = dict(keyenv, S3ENCFS_PROGRESS_INTERVAL="0.5")
    for cmd in ("flush", "umount"):
        for i in range(3):
            (m.mountpoint / f"{cmd}{i}.bin").write_bytes(os.urandom(1024 * 1024))
        t0 = time.monotonic()
        proc = subprocess.run([*S3ENCFS, cmd, str(m.mountpoint)], env=env, capture_output=True,
                              text=True, timeout=120)
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{cmd}: ")]
        assert lines, (proc.stderr, proc.stdout, took)
        assert re.search(r"\d+ uploads pending, [\d.]+ MiB not yet in S3", lines[0]), lines
        assert any("ETA" in ln for ln in lines), lines
    m.proc.wait(timeout=60)
    m.proc = None
    assert len([o for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
                if o["Key"].endswith(".bin")]) == 6
