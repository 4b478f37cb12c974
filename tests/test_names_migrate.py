"""`s3encfs rekey --names 2` on SeaweedFS (issue 10): a bucket of name scheme 1 written by a real
mount is migrated to scheme 2 — a fresh mount then reads every byte, mode and mtime, directory
attributes and symlinks, and takes 200-byte names; a migration interrupted at any point refuses
mounts until the rerun finishes it, and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_client_mount import plant_scheme1_keycheck

LONG1 = "m" * 116 + ".txt"  # 120 bytes: inline in scheme 1, a hashed long name in scheme 2
LONGDIR = "é" * 60  # 120 bytes of UTF-8, a directory
BIG = os.urandom(300_000)  # 5 segments
FILES = {
    "a.txt": b"hello\n",
    "empty": b"",
    "sub/deep/big.bin": BIG,
    LONG1: b"long in scheme 2\n",
    f"{LONGDIR}/inner.txt": b"under a long directory name\n",
    "private/secret": b"0600 in 0700\n",
}
MODES = {"private/secret": 0o600, "a.txt": 0o640}
DIR_MODES = {"private": 0o700, "sub/deep": 0o750, LONGDIR: 0o711}
MTIME = 1_000_000_000


def write_tree(mp: Path) -> None:
    for rel, data in FILES.items():
        (mp / rel).parent.mkdir(parents=True, exist_ok=True)
        (mp / rel).write_bytes(data)
    (mp / "emptydir").mkdir()
    os.symlink("sub/deep/big.bin", mp / "link")
    for rel, mode in MODES.items():
        os.chmod(mp / rel, mode)
    for rel, mode in DIR_MODES.items():
        os.chmod(mp / rel, mode)
    os.utime(mp / "a.txt", (MTIME, MTIME))


def assert_tree(mp: Path, extra: tuple[str, ...] = ()) -> None:
    for rel, data in FILES.items():
        assert (mp / rel).read_bytes() == data, rel
    for rel, mode in {**MODES, **DIR_MODES}.items():
        assert (mp / rel).stat().st_mode & 0o7777 == mode, rel
    assert int((mp / "a.txt").stat().st_mtime) == MTIME
    assert os.readlink(mp / "link") == "sub/deep/big.bin"
    assert (mp / "link").read_bytes() == BIG
    assert os.listdir(mp / "emptydir") == []
    assert sorted(os.listdir(mp)) == sorted(["a.txt", "empty", "sub", LONG1, LONGDIR, "private",
                                             "emptydir", "link", *extra])


def scheme1_bucket(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                   mount_factory: Any) -> None:  # noqa: F811
    plant_scheme1_keycheck(s3, bucket, keyenv)
    m = mount_factory(bucket, "client", name="old")
    assert os.statvfs(m.mountpoint).f_namemax == 143  # really scheme 1
    write_tree(m.mountpoint)
    m.umount()


def keycheck_record(s3: Any, bucket: str, env: dict[str, str]) -> dict[str, Any]:
    from s3encfs.crypto import ClientCodec
    from s3encfs.keys.keyring import Keyring

    key = Keyring(environ=env).get("default")
    codec = ClientCodec({key.info.key_id: key.secret}, key.info.key_id)
    body = s3.get_object(Bucket=bucket, Key=".s3encfs/keycheck")["Body"].read()
    out: dict[str, Any] = json.loads(codec.open_blob("keycheck", body))
    return out


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*S3ENCFS, *args], env=env, capture_output=True, text=True,
                          timeout=600)


def rekey_names(env: dict[str, str], bucket: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "rekey", f"s3://{bucket}", "--encryption", "client", "--names", "2")


def verify_migrated(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                    mount_factory: Any) -> None:  # noqa: F811
    assert keycheck_record(s3, bucket, keyenv)["names"] == 2
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])]
    assert all(len(c) <= 180 for k in keys for c in k.split("/")), keys
    assert sum(k.endswith(".name") for k in keys) == 2  # LONG1 and LONGDIR
    m = mount_factory(bucket, "client", name="new")
    mp = m.mountpoint
    assert os.statvfs(mp).f_namemax == 255
    assert_tree(mp)
    (mp / ("n" * 200)).write_bytes(b"a 200-byte name")
    m.umount()
    m2 = mount_factory(bucket, "client", name="new2")
    assert_tree(m2.mountpoint, extra=("n" * 200,))
    assert (m2.mountpoint / ("n" * 200)).read_bytes() == b"a 200-byte name"
    m2.umount()
    proc = cli(keyenv, "check", f"s3://{bucket}", "--encryption", "client", "--data")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rekey_names_migrates_a_scheme1_bucket(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                               mount_factory: Any) -> None:  # noqa: F811
    from s3encfs.crypto import ClientCodec
    from s3encfs.keys.keyring import Keyring
    from s3encfs.store.layout import Layout

    scheme1_bucket(bucket, s3, keyenv, mount_factory)
    key = Keyring(environ=keyenv).get("default")
    old_sub = Layout("", ClientCodec({key.info.key_id: key.secret}, key.info.key_id)) \
        .dir_prefix(("sub",))
    foreign = old_sub + "not-ours.txt"  # another tool's object: left alone, byte for byte
    s3.put_object(Bucket=bucket, Key=foreign, Body=b"planted")
    dry = cli(keyenv, "rekey", f"s3://{bucket}", "--encryption", "client", "--names", "2",
              "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "names" not in keycheck_record(s3, bucket, keyenv)  # a dry run writes nothing
    proc = rekey_names(keyenv, bucket)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "done, the keycheck records scheme 2" in proc.stdout
    assert "decodes under neither scheme" in proc.stderr
    assert s3.get_object(Bucket=bucket, Key=foreign)["Body"].read() == b"planted"
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=old_sub)["Contents"]]
    assert sorted(left) == sorted([old_sub, foreign])  # its directory's marker stays too
    for k in (foreign, old_sub):  # (check would report both: names of neither scheme)
        s3.delete_object(Bucket=bucket, Key=k)
    verify_migrated(bucket, s3, keyenv, mount_factory)
    again = rekey_names(keyenv, bucket)
    assert again.returncode == 0 and "already in scheme 2" in again.stdout, again


class Crash(BaseException):
    """A kill of the migration at one point (not an Exception: nothing catches it)."""


def crash_at(store: Any, method: str, after: int) -> None:
    real = getattr(store, method)
    calls = [0]

    def hooked(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise Crash(method)
        return real(*args, **kw)

    setattr(store, method, hooked)


@pytest.mark.parametrize("point", [
    ("copy", 3),  # some objects moved, the next copy never happened
    ("delete", 2),  # a copy landed, the delete of its old key did not
    ("delete_many", 0),  # every object moved, old markers and indexes still there
    ("put", 1),  # the keycheck said "migrating", the new indexes were being written
])
def test_rekey_names_killed_then_rerun(point: tuple[str, int], bucket: str, s3: Any,
                                       s3server: Any, keyenv: dict[str, str],  # noqa: F811
                                       mount_factory: Any,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from s3encfs import keycheck
    from s3encfs import rekey_names as rn
    from s3encfs.crypto import ClientCodec
    from s3encfs.keys.keyring import Keyring
    from s3encfs.store.s3 import ObjectStore

    scheme1_bucket(bucket, s3, keyenv, mount_factory)
    key = Keyring(environ=keyenv).get("default")
    codec = ClientCodec({key.info.key_id: key.secret}, key.info.key_id)
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    store = ObjectStore(bucket, endpoint_url=s3server.endpoint)
    info = keycheck.verify(store, codec, "")
    assert info is not None
    crash_at(store, *point)
    with pytest.raises(Crash):
        rn.migrate(rn.NameMigration(store, codec, "", jobs=1), info)
    assert keycheck_record(s3, bucket, keyenv)["names"] == "migrating"
    m = mount_factory(bucket, "client", name="half", start=False)
    with pytest.raises(RuntimeError, match="half-way through a migration"):
        m.start()
    plain = cli(keyenv, "rekey", f"s3://{bucket}", "--encryption", "client")
    assert plain.returncode != 0 and "half-way" in plain.stderr, plain
    proc = rekey_names(keyenv, bucket)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verify_migrated(bucket, s3, keyenv, mount_factory)


def test_rekey_names_sigkill_then_rerun(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                        mount_factory: Any) -> None:  # noqa: F811
    """A real `kill -9` of the command part way (many small objects, one at a time)."""
    import signal
    import time

    plant_scheme1_keycheck(s3, bucket, keyenv)
    m = mount_factory(bucket, "client", name="old")
    write_tree(m.mountpoint)
    (m.mountpoint / "many").mkdir()
    for i in range(150):
        (m.mountpoint / "many" / f"f{i:03}").write_bytes(b"%d\n" % i)
    m.umount()
    before = {o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])}
    proc = subprocess.Popen([*S3ENCFS, "rekey", f"s3://{bucket}", "--encryption", "client",
                             "--names", "2", "--jobs", "1"], env=keyenv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        now = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, MaxKeys=1000)["Contents"]}
        if len(before - now) >= 20:  # 20 old keys gone: well into the objects
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the migration finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert keycheck_record(s3, bucket, keyenv)["names"] == "migrating"
    done = rekey_names(keyenv, bucket)
    assert done.returncode == 0, done.stdout + done.stderr
    m2 = mount_factory(bucket, "client", name="new")
    assert_tree(m2.mountpoint, extra=("many",))
    assert sorted(os.listdir(m2.mountpoint / "many")) == [f"f{i:03}" for i in range(150)]
    for i in range(150):
        assert (m2.mountpoint / "many" / f"f{i:03}").read_bytes() == b"%d\n" % i
    m2.umount()


def test_name_scheme_refuses_a_migrating_record() -> None:
    """The keycheck's migrating state refuses with a message saying what to run; the value
    itself is no scheme number, so versions without this code refuse it too."""
    from s3encfs import keycheck

    assert keycheck.name_scheme({"names": 2}) == 2
    assert keycheck.name_scheme({}) == 1
    with pytest.raises(keycheck.NamesMigrating, match="rekey --names 2"):
        keycheck.name_scheme({"names": "migrating", "names_from": 1, "names_to": 2})
    assert keycheck.MIGRATING not in (1, 2)
