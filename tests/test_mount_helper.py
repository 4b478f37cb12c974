"""mount.s3encfs: option translation (pure) and, once the mount works, a real mount -t s3encfs."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3encfs import mount_helper
from s3encfs.control import control_socket_path, query
from s3encfs.mount_helper import UsageError, build_mount_argv, parse_args


def test_plain_source_and_fuse_options() -> None:
    argv = build_mount_argv("s3://bkt/host1", "/srv/backup", ["allow_other,ro", "noatime"])
    assert argv == ["mount", "s3://bkt/host1", "/srv/backup", "-o", "allow_other,ro,noatime"]


def test_fstab_only_options_are_dropped() -> None:
    opts = [
        "defaults,rw,_netdev,nofail,noauto,auto,user,users,nouser",
        "x-systemd.automount,x-systemd.idle-timeout=10min,x-systemd.requires=network-online.target",
        "comment=systemd.automount,x-gvfs-hide",
    ]
    assert build_mount_argv("s3://bkt", "/mnt", opts) == ["mount", "s3://bkt", "/mnt"]


def test_value_options_become_flags() -> None:
    argv = build_mount_argv(
        "s3://bkt/p",
        "/mnt/x",
        [
            "endpoint_url=http://127.0.0.1:8333,region=eu-west-1,profile=bk",
            "encryption=client+sse-kms:alias/bk,bucket_key,key=host1,keyring=/etc/s3encfs/keys",
            "cache-dir=/var/cache/s3encfs/x,cache_size=20G,upload_delay=0.5,debug=fs:store",
            "plain_names,allow_other",
        ],
    )
    assert argv == [
        "mount",
        "s3://bkt/p",
        "/mnt/x",
        "--endpoint-url",
        "http://127.0.0.1:8333",
        "--region",
        "eu-west-1",
        "--profile",
        "bk",
        "--encryption",
        "client+sse-kms:alias/bk",
        "--bucket-key",
        "--key",
        "host1",
        "--keyring",
        "/etc/s3encfs/keys",
        "--cache-dir",
        "/var/cache/s3encfs/x",
        "--cache-size",
        "20G",
        "--upload-delay",
        "0.5",
        "--debug",
        "fs,store",
        "--plain-names",
        "-o",
        "allow_other",
    ]


@pytest.mark.parametrize(
    ("opt", "flag"),
    [
        ("bucket_key=yes", ["--bucket-key"]),
        ("bucket_key=no", ["--no-bucket-key"]),
        ("nobucket_key", ["--no-bucket-key"]),
        ("plain_names=false", []),
        ("plain_names=1", ["--plain-names"]),
    ],
)
def test_boolean_options(opt: str, flag: list[str]) -> None:
    assert build_mount_argv("s3://bkt", "/mnt", [opt]) == ["mount", "s3://bkt", "/mnt", *flag]


def test_config_option_with_s3_source() -> None:
    argv = build_mount_argv("s3://bkt/p", "/mnt", ["config=host1,_netdev"])
    assert argv == ["mount", "--config", "host1", "s3://bkt/p", "/mnt"]


def test_config_name_as_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "host1.toml").write_text('source = "s3://bkt/from-file"\n')
    monkeypatch.setenv("S3ENCFS_CONFIG_DIR", str(tmp_path))
    expected = ["mount", "--config", "host1", "s3://bkt/from-file", "/mnt"]
    assert build_mount_argv("host1", "/mnt", ["_netdev"]) == expected
    assert build_mount_argv("s3encfs", "/mnt", ["config=host1"]) == expected
    assert build_mount_argv("host1", "/mnt", ["config=host1"]) == expected


def test_relative_mountpoint_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert build_mount_argv("s3://bkt", "m", []) == ["mount", "s3://bkt", str(tmp_path / "m")]


def test_enc_alias() -> None:
    """mount(8) consumes encryption= itself (loop devices), so fstab lines use enc=."""
    argv = build_mount_argv("s3://bkt", "/mnt", ["enc=sse-c:site"])
    assert argv == ["mount", "s3://bkt", "/mnt", "--encryption", "sse-c:site"]


def test_duplicate_fuse_options_collapsed() -> None:
    argv = build_mount_argv("s3://bkt", "/mnt", ["allow_other,allow_other", "ro"])
    assert argv[-2:] == ["-o", "allow_other,ro"]


@pytest.mark.parametrize(
    ("source", "options", "match"),
    [
        ("s3://bkt", ["cache_size"], "needs a value"),
        ("s3://bkt", ["encryption="], "needs a value"),
        ("s3://bkt", ["bucket_key=maybe"], "yes or no"),
        ("other", ["config=host1"], "neither s3://"),
        ("none", [], "config name"),
        ("missing-config-xyz", [], "no config named"),
    ],
)
def test_bad_options(
    source: str, options: list[str], match: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("S3ENCFS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(UsageError, match=match):
        build_mount_argv(source, "/mnt", options)


def test_parse_args_conventions() -> None:
    assert parse_args(
        ["s3://b", "/mnt", "-o", "a,b", "-n", "-sv", "-oc", "-t", "fuse.s3encfs"]
    ) == (
        "s3://b",
        "/mnt",
        ["a,b", "c"],
        {"n", "s", "v"},
    )
    with pytest.raises(UsageError, match="usage"):
        parse_args(["s3://b"])
    with pytest.raises(UsageError, match="unknown switch"):
        parse_args(["s3://b", "/mnt", "-z"])


def test_main_fake_prints_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert mount_helper.main(["s3://b/p", "/mnt", "-f", "-o", "_netdev,allow_other"]) == 0
    err = capsys.readouterr().err
    assert "mount s3://b/p /mnt -o allow_other" in err
    assert mount_helper.main(["s3://b/p"]) == 1


# ----------------------------------------------------------------------------- real mount


@functools.cache  # runs `s3encfs mount --help` (seconds on a loaded machine): once per session
def _mount_works() -> str | None:
    """Why a real mount can't be tested, or None when it can."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        return "needs root and /dev/fuse"
    if not shutil.which("mount"):
        return "mount(8) missing"
    probe = subprocess.run(
        [*mount_helper.s3encfs_program(), "mount", "--help"], capture_output=True, text=True
    )
    if probe.returncode != 0 or "MOUNTPOINT" not in probe.stdout:
        return "s3encfs mount is not functional yet"
    try:
        import s3encfs.mount  # noqa: F401
    except ImportError:
        return "s3encfs.mount not importable yet"
    return None


@pytest.fixture
def helper_installed() -> Iterator[str]:
    """/sbin/mount.s3encfs for the test (left alone if it already exists)."""
    target = Path("/sbin/mount.s3encfs")
    created = False
    if not target.exists():
        target.write_text(
            f"#!{sys.executable}\nfrom s3encfs.mount_helper import main\nraise SystemExit(main())\n"
        )
        target.chmod(0o755)
        created = True
    try:
        yield str(target)
    finally:
        if created:
            target.unlink()


@pytest.mark.skipif(_mount_works() is not None, reason=str(_mount_works()))
def test_real_mount_via_fstab_type(
    helper_installed: str, bucket: str, s3env: dict[str, str], tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**s3env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    opts = (
        f"_netdev,nofail,endpoint_url={env['AWS_ENDPOINT_URL']},enc=none,"
        f"cache_dir={tmp_path / 'cache'},x-systemd.automount"
    )
    proc = subprocess.run(
        ["mount", "-v", "-t", "s3encfs", "-o", opts, f"s3://{bucket}/pre", str(mnt)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        assert os.path.ismount(mnt)
        (mnt / "hello.txt").write_text("hi\n")
    finally:
        subprocess.run(
            [*mount_helper.s3encfs_program(), "umount", str(mnt)],
            env=env,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 10
        while os.path.ismount(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)])
    assert not os.path.ismount(mnt)


@pytest.mark.skipif(_mount_works() is not None, reason=str(_mount_works()))
def test_fstab_line_mount_and_plain_umount(
    helper_installed: str, bucket: str, s3env: dict[str, str], s3: Any, tmp_path: Path
) -> None:
    """A line in a (test) fstab mounts with `mount -T FSTAB MOUNTPOINT`; plain umount(8)
    unmounts, and the mount process still uploads what was written before it exits."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**s3env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"s3://{bucket}/fs {mnt} s3encfs _netdev,nofail,enc=none,upload_delay=30,"
        f"endpoint_url={env['AWS_ENDPOINT_URL']},cache_dir={tmp_path / 'cache'} 0 0\n"
    )
    proc = subprocess.run(["mount", "-v", "-T", str(fstab), str(mnt)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    try:
        assert os.path.ismount(mnt)
        (mnt / "from-fstab.txt").write_text("fstab\n")
        pid = query(control_socket_path(str(mnt)), "status")["pid"]
        assert subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)])
    body = s3.get_object(Bucket=bucket, Key="fs/from-fstab.txt")["Body"].read()
    assert body == b"fstab\n"
