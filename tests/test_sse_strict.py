"""SSE-C fails closed (issue 10, item 5), against real SeaweedFS mounts.

- an unencrypted object planted in an sse-c bucket (a new name, or over a file we wrote) reads
  as EIO; `--read-unencrypted` (migrations) serves it;
- SSE-C over http:// to a host that is not loopback is refused unless --allow-insecure-http.
"""

# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
from __future__ import annotations

import errno
import shutil
import subprocess

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

SECRET = bytes(range(32))


def create_ssec_key(env: dict[str, str], name: str = "ck") -> None:
    subprocess.run([*S3ENCFS, "key", "create", name, "--kind", "sse-c"], env=env, check=True,
                   capture_output=True)


@pytest.mark.parametrize("mode", ["sse-c:ck", "client+sse-c:ck"])
def test_planted_unencrypted_object_is_eio(mode, bucket, s3, mount_factory, keyenv):
    create_ssec_key(keyenv)
    m = mount_factory(bucket, mode)
    (m.mountpoint / "mine.txt").write_bytes(b"written through the mount\n")
    m.umount()
    objs = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    mine = next(k for k in objs if not k.startswith(".s3encfs") and not k.endswith("/"))
    if mode == "sse-c:ck":  # plain names: plant a new file and replace ours by plaintext
        s3.put_object(Bucket=bucket, Key="planted.txt", Body=b"attacker bytes\n")
    s3.put_object(Bucket=bucket, Key=mine, Body=b"attacker replaced this\n")
    shutil.rmtree(m.cache_dir)
    m.start()
    with pytest.raises(OSError) as err:
        (m.mountpoint / "mine.txt").read_bytes()
    assert err.value.errno == errno.EIO
    if mode == "sse-c:ck":
        with pytest.raises(OSError) as err:
            (m.mountpoint / "planted.txt").read_bytes()
        assert err.value.errno == errno.EIO
    m.umount()
    assert "SSE" in m.read_log()
    if mode == "sse-c:ck":  # the explicit migration switch serves unencrypted objects
        m2 = mount_factory(bucket, mode, name="mig", extra=["--read-unencrypted"])
        assert (m2.mountpoint / "planted.txt").read_bytes() == b"attacker bytes\n"
        m2.umount()


def test_ssec_over_plain_http_to_other_host_refused(bucket, mount_factory, keyenv):
    create_ssec_key(keyenv)
    m = mount_factory(bucket, "sse-c:ck", start=False,
                      extra=["--endpoint-url", "http://192.0.2.1:9"])
    with pytest.raises(RuntimeError) as err:
        m.start()
    assert "plain http" in str(err.value) and "--allow-insecure-http" in str(err.value)


def test_transport_rule() -> None:
    from s3encfs.store.sse import SseCPolicy, SsePolicy, check_transport

    pol = SseCPolicy([("k", SECRET)])
    for ok in ("http://127.0.0.1:8333", "http://localhost:1", "http://[::1]:2",
               "https://s3.example.net", None):
        check_transport(pol, ok, False)
    check_transport(SsePolicy(), "http://s3.example.net", False)  # no key in the headers
    check_transport(pol, "http://s3.example.net", True)  # explicitly allowed
    for bad in ("http://s3.example.net", "http://10.0.0.5:9000", "HTTP://192.0.2.1"):
        with pytest.raises(ValueError, match="plain http"):
            check_transport(pol, bad, False)


def test_rekey_to_ssec_from_unencrypted_needs_read_unencrypted(bucket, s3, mount_factory,
                                                               keyenv):
    create_ssec_key(keyenv)
    m = mount_factory(bucket, "none")
    (m.mountpoint / "a.txt").write_text("alpha\n")
    m.umount()

    def rekey(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*S3ENCFS, "rekey", f"s3://{bucket}", "--encryption", "sse-c:ck",
                               *extra], env=keyenv, capture_output=True, text=True, timeout=300)

    refused = rekey()
    assert "failed 0" not in refused.stdout, refused.stdout + refused.stderr
    done = rekey("--read-unencrypted", "--restart")
    assert done.returncode == 0 and "failed 0" in done.stdout, done.stdout + done.stderr
    head = s3.head_object(Bucket=bucket, Key="a.txt", SSECustomerAlgorithm="AES256",
                          SSECustomerKey=_secret(keyenv, "ck"))
    assert head["SSECustomerAlgorithm"] == "AES256"
    shutil.rmtree(m.cache_dir)
    m2 = mount_factory(bucket, "sse-c:ck", name="m2")  # strict: every object is SSE-C now
    assert (m2.mountpoint / "a.txt").read_text() == "alpha\n"
    m2.umount()


def _secret(env: dict[str, str], name: str) -> bytes:
    from s3encfs.keys.keyring import Keyring

    return Keyring(env["S3ENCFS_KEYRING_DIR"], environ=env).get(name).secret
