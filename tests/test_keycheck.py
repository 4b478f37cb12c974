"""Keycheck and key roles against real SeaweedFS mounts (issue 10, items 3 and 4).

- the keycheck is no longer trust-on-first-use: deleted keycheck + wrong key → refused, and the
  right key still works afterwards;
- a `-o ro` mount and `s3encfs check` write nothing (counted through tests/faultproxy.py);
- a master key is never an SSE-C key and vice versa; one key in both roles is refused before a
  single request reaches the server.
"""

# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
from __future__ import annotations

import subprocess

import pytest
from faultproxy import FaultProxy
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

WRITE_OPS = ("PutObject", "CopyObject", "DeleteObject", "DeleteObjects", "CreateMultipartUpload",
             "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload")


@pytest.fixture
def proxy(s3server):
    p = FaultProxy(s3server.endpoint, seed=1)
    p.start()
    yield p
    p.stop()


def writes(proxy: FaultProxy) -> dict[str, int]:
    return {op: proxy.count(op) for op in WRITE_OPS if proxy.count(op)}


def create_key(env: dict[str, str], name: str, kind: str = "master",
               keydir: str | None = None) -> dict[str, str]:
    env = dict(env, S3ENCFS_KEYRING_DIR=keydir) if keydir else env
    subprocess.run([*S3ENCFS, "key", "create", name, "--kind", kind], env=env, check=True,
                   capture_output=True)
    return env


def failed_mount(mount_factory, *args, **kwargs) -> str:
    m = mount_factory(*args, start=False, **kwargs)
    with pytest.raises(RuntimeError) as err:
        m.start()
    return str(err.value)


def populate(mount_factory, bucket: str) -> None:
    m = mount_factory(bucket, "client", name="first")
    (m.mountpoint / "sub").mkdir()
    (m.mountpoint / "sub" / "a.txt").write_bytes(b"right key data\n")
    m.umount()


def test_deleted_keycheck_and_wrong_key_is_refused(bucket, s3, mount_factory, keyenv, tmp_path):
    populate(mount_factory, bucket)
    s3.delete_object(Bucket=bucket, Key=".s3encfs/keycheck")
    wrong = create_key(keyenv, "default", keydir=str(tmp_path / "wrongkeys"))
    msg = failed_mount(mount_factory, bucket, "client", name="wrong", env=wrong)
    assert "wrong master key" in msg, msg
    msg = failed_mount(mount_factory, bucket, "client", name="wrong2", env=wrong,
                       extra=["--init"])
    assert "wrong master key" in msg, msg
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert ".s3encfs/keycheck" not in keys  # the wrong key wrote nothing
    # the right key is proven against the objects and still reads everything
    m = mount_factory(bucket, "client", name="right")
    assert (m.mountpoint / "sub" / "a.txt").read_bytes() == b"right key data\n"
    m.umount()
    assert "keycheck is missing" in m.read_log()
    # --init puts the keycheck back; then a wrong key is refused by the keycheck itself
    m = mount_factory(bucket, "client", name="init", extra=["--init"])
    m.umount()
    s3.head_object(Bucket=bucket, Key=".s3encfs/keycheck")
    msg = failed_mount(mount_factory, bucket, "client", name="wrong3", env=wrong)
    assert "wrong master key" in msg, msg


def test_foreign_objects_without_keycheck_need_init(bucket, s3, mount_factory):
    s3.put_object(Bucket=bucket, Key="other-tool.txt", Body=b"x")
    msg = failed_mount(mount_factory, bucket, "client", name="a")
    assert "--init" in msg, msg
    m = mount_factory(bucket, "client", name="b", extra=["--init"])
    m.umount()
    s3.head_object(Bucket=bucket, Key=".s3encfs/keycheck")


@pytest.mark.parametrize("mode", ["client", "sse-c:ck", "client+sse-c:ck"])
def test_read_only_mount_writes_nothing(mode, bucket, s3, proxy, mount_factory, keyenv):
    if "sse-c" in mode:
        create_key(keyenv, "ck", "sse-c")
    ep = ["--endpoint-url", proxy.endpoint]
    m = mount_factory(bucket, mode, name="rw", extra=ep)
    (m.mountpoint / "f.txt").write_bytes(b"data\n")
    m.umount()
    s3.delete_object(Bucket=bucket, Key=".s3encfs/keycheck")
    proxy.reset_stats()
    m = mount_factory(bucket, mode, name="ro", extra=[*ep, "-o", "ro"])
    assert (m.mountpoint / "f.txt").read_bytes() == b"data\n"
    m.umount()
    assert proxy.count() > 0
    assert writes(proxy) == {}, writes(proxy)


def test_empty_prefix_read_only_mount_writes_no_keycheck(bucket, proxy, mount_factory):
    m = mount_factory(bucket, "client", extra=["--endpoint-url", proxy.endpoint, "-o", "ro"])
    assert list(m.mountpoint.iterdir()) == []
    m.umount()
    assert writes(proxy) == {}, writes(proxy)


def test_check_writes_nothing(bucket, s3, proxy, mount_factory, keyenv):
    populate(mount_factory, bucket)
    s3.delete_object(Bucket=bucket, Key=".s3encfs/keycheck")
    proxy.reset_stats()
    proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client",
                           "--endpoint-url", proxy.endpoint], env=keyenv, capture_output=True,
                          text=True, timeout=120)
    assert proxy.count() > 0, proc.stderr
    assert writes(proxy) == {}, writes(proxy)


def test_master_key_as_ssec_key_refused(bucket, proxy, mount_factory, keyenv):
    ep = ["--endpoint-url", proxy.endpoint]
    # the example from the issue: the client master key would go to the server in every request
    msg = failed_mount(mount_factory, bucket, "client+sse-c:default", extra=ep)
    assert "not a SSE-C key" in msg, msg
    msg = failed_mount(mount_factory, bucket, "sse-c:default", name="b", extra=ep)
    assert "not a SSE-C key" in msg, msg
    assert proxy.count() == 0  # refused before any request


def test_ssec_key_as_master_key_refused(bucket, proxy, mount_factory, keyenv):
    create_key(keyenv, "ck", "sse-c")
    msg = failed_mount(mount_factory, bucket, "client", extra=["--endpoint-url", proxy.endpoint,
                                                               "--key", "ck"])
    assert "not a client-side master key" in msg, msg
    assert proxy.count() == 0
