# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Bad input: names S3 cannot hold, objects the filesystem cannot represent, a huge directory and
corrupt objects each get a clear error or a documented representation, and the rest of the mount
keeps working.

Representation observed (and asserted) for objects written by other tools:
* ``a//b`` (empty segment) is listed as ``a/b`` on SeaweedFS (which also refuses ``x/./y`` and
  ``x/../y`` keys with InvalidRequest); the listing code skips empty, ``.`` and ``..`` components;
* ``both`` and ``both/inner`` (a key that is a file and a prefix): the directory is shown;
* a ``withbody/`` object that has a body: shown as the directory ``withbody`` (the body is ignored).
"""

from __future__ import annotations

import errno
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mounting import keyenv, mount_factory  # noqa: F401


def errno_of(fn) -> int | None:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


def test_non_utf8_names_plain_mode(bucket, s3, mount_factory):
    m = mount_factory(bucket, "none")
    mnt = os.fsencode(m.mountpoint)
    bad = mnt + b"/caf\xe9.txt"
    code = errno_of(lambda: open(bad, "wb").close())
    assert code in (errno.EILSEQ, errno.EINVAL), errno.errorcode.get(code or 0)
    assert errno_of(lambda: os.mkdir(mnt + b"/dir\xff")) in (errno.EILSEQ, errno.EINVAL)
    (m.mountpoint / "ok.txt").write_bytes(b"still fine")  # the mount keeps working
    assert (m.mountpoint / "ok.txt").read_bytes() == b"still fine"
    m.umount()
    assert s3.get_object(Bucket=bucket, Key="ok.txt")["Body"].read() == b"still fine"


def test_non_utf8_names_client_mode(bucket, mount_factory):
    m = mount_factory(bucket, "client")
    mnt = os.fsencode(m.mountpoint)
    with open(mnt + b"/caf\xe9.txt", "wb") as f:
        f.write(b"latin-1 name")
    os.mkdir(mnt + b"/dir\xff")
    with open(mnt + b"/dir\xff/x", "wb") as f:
        f.write(b"inside")
    m.umount()
    m.start()
    names = set(os.listdir(mnt))
    assert {b"caf\xe9.txt", b"dir\xff"} <= names
    with open(mnt + b"/caf\xe9.txt", "rb") as f:
        assert f.read() == b"latin-1 name"
    with open(mnt + b"/dir\xff/x", "rb") as f:
        assert f.read() == b"inside"


@pytest.mark.parametrize("mode", ["none", "client"])
def test_names_and_paths_over_limits(mode, bucket, mount_factory, s3):
    m = mount_factory(bucket, mode)
    assert errno_of(lambda: (m.mountpoint / ("n" * 256)).write_bytes(b"x")) == errno.ENAMETOOLONG
    # encrypted names grow (and are base32-ish), so client mode takes shorter plaintext names
    ok_len = 200 if mode == "none" else 100
    (m.mountpoint / ("n" * ok_len)).write_bytes(b"long but fine")
    # nest until the key would pass 1,024 bytes
    d = m.mountpoint
    code = None
    for i in range(20):
        d = d / (f"{i:02d}" + "d" * 98)
        code = errno_of(lambda d=d: d.mkdir())
        if code is not None:
            break
    assert code == errno.ENAMETOOLONG, errno.errorcode.get(code or 0)
    depth = len(str(d.relative_to(m.mountpoint)).encode())
    print(f"\n[{mode}] ENAMETOOLONG at a {depth}-byte path")
    if mode == "none":
        assert depth <= 1024 + 110
    # client mode hashes long names (55-byte key segments, FORMAT.md), so a plaintext path can
    # be longer than S3's key limit; what holds in every mode: no key over 1,024 bytes was made
    m.flush()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert keys and max(len(k.encode()) for k in keys) <= 1024
    (m.mountpoint / "after").write_bytes(b"ok")
    assert (m.mountpoint / "after").read_bytes() == b"ok"


def test_unrepresentable_objects(bucket, s3, mount_factory):
    refused = []
    for key, body in [("normal.txt", b"normal"), ("a//b", b"double slash"),
                      ("x/./y", b"dot"), ("x/../y2", b"dotdot"), ("both", b"file part"),
                      ("both/inner", b"inner"), ("withbody/", b"a body on a dir marker"),
                      ("withbody/child", b"child"), ("sub/ok", b"ok")]:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except s3.exceptions.ClientError:
            refused.append(key)  # SeaweedFS refuses some of these keys itself
    print(f"\nkeys the server refused: {refused}")
    m = mount_factory(bucket, "none")
    top = sorted(os.listdir(m.mountpoint))
    print(f"\nroot listing: {top}")
    assert "normal.txt" in top and "sub" in top
    assert (m.mountpoint / "normal.txt").read_bytes() == b"normal"
    assert (m.mountpoint / "sub" / "ok").read_bytes() == b"ok"
    assert (m.mountpoint / "both").is_dir()
    assert (m.mountpoint / "both" / "inner").read_bytes() == b"inner"
    assert (m.mountpoint / "withbody").is_dir()
    assert (m.mountpoint / "withbody" / "child").read_bytes() == b"child"
    x = sorted(os.listdir(m.mountpoint / "x")) if (m.mountpoint / "x").is_dir() else []
    a = sorted(os.listdir(m.mountpoint / "a")) if (m.mountpoint / "a").is_dir() else []
    print(f"x/: {x}  a/: {a}")
    assert "." not in x and ".." not in x
    assert all(n for n in a)
    for dirpath, _dirs, files in os.walk(m.mountpoint):  # a full walk does not crash
        for f in files:
            (open(os.path.join(dirpath, f), "rb")).close()
    (m.mountpoint / "new").write_bytes(b"new")
    m.umount()  # still healthy enough to unmount cleanly
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"new"


def test_corrupt_object_client_mode_eio_for_that_file_only(bucket, s3, mount_factory):
    m = mount_factory(bucket, "client", extra=["--plain-names"])
    (m.mountpoint / "good").write_bytes(b"good" * 10000)
    (m.mountpoint / "victim").write_bytes(b"victim" * 10000)
    m.umount()
    head = s3.head_object(Bucket=bucket, Key="victim")
    body = bytearray(s3.get_object(Bucket=bucket, Key="victim")["Body"].read())
    body[100] ^= 0x01  # one flipped bit in the ciphertext
    s3.put_object(Bucket=bucket, Key="victim", Body=bytes(body), Metadata=head["Metadata"])
    import shutil
    shutil.rmtree(m.cache_dir)
    m.start()
    assert errno_of(lambda: (m.mountpoint / "victim").read_bytes()) == errno.EIO
    assert (m.mountpoint / "good").read_bytes() == b"good" * 10000
    assert "victim" in m.read_log()


def _fill(s3, bucket: str, prefix: str, n: int) -> None:
    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}f{i:06d}", Body=b"")
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(put, range(n)))


def _vmhwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"VmHWM:\s+(\d+)", f.read())
    assert found
    return int(found.group(1))


def _big_dir(n: int, bucket, s3, mount_factory) -> None:
    t0 = time.monotonic()
    _fill(s3, bucket, "big/", n)
    print(f"\ncreated {n} objects in {time.monotonic() - t0:.1f}s")
    m = mount_factory(bucket, "none")
    assert m.proc is not None
    before = _vmhwm_kib(m.proc.pid)
    t0 = time.monotonic()
    out = os.popen(f"ls -f {m.mountpoint}/big | wc -l").read()
    elapsed = time.monotonic() - t0
    hwm = _vmhwm_kib(m.proc.pid)
    print(f"ls -f of {n} entries: {elapsed:.1f}s, VmHWM {before // 1024} -> {hwm // 1024} MiB")
    assert int(out) in (n, n + 2)  # ("." and ".." are not listed by this mount)
    assert hwm < 300 * 1024


def test_directory_10k_entries(bucket, s3, mount_factory):
    _big_dir(10_000, bucket, s3, mount_factory)


@pytest.mark.slow
def test_directory_100k_entries(bucket, s3, mount_factory):
    _big_dir(100_000, bucket, s3, mount_factory)


def test_foreign_metadata_clamped_never_crashes(bucket, s3, mount_factory):
    """Plain mode, objects written by another tool with metadata the kernel cannot take: a mode of
    -1 or 2**70 killed the daemon on `ls` (OverflowError in a background listing task); huge
    uid/gid/mtime made the whole directory EIO.  Each bad value is ignored (default used, never a
    wider mode), the rest of the directory reads normally."""
    import stat

    bad = {
        "neg-mode": {"mode": "-1"},
        "huge-mode": {"mode": str(2**70)},
        "type-mode": {"mode": str(0o170777)},
        "huge-ids": {"uid": str(2**40), "gid": "-7", "mode": "33188"},
        "huge-mtime": {"mtime": str(10**30), "atime": "-" + str(10**30)},
        "huge-rdev": {"rdev": str(2**64)},
    }
    for sub in ("d", "big"):
        for name, meta in bad.items():
            s3.put_object(Bucket=bucket, Key=f"{sub}/{name}", Body=name.encode(), Metadata=meta)
        s3.put_object(Bucket=bucket, Key=f"{sub}/good", Body=b"good",
                      Metadata={"mode": str(0o100600), "uid": "1234", "mtime": "1700000000.5"})
    for i in range(300):  # a bigger directory too (its attributes come from background HEADs)
        s3.put_object(Bucket=bucket, Key=f"big/f{i:03d}", Body=b"x")
    mt = mount_factory(bucket, "none")
    for sub in ("d", "big"):
        root = mt.mountpoint / sub
        names = set(os.listdir(root))
        assert set(bad) | {"good"} <= names
        for name in bad:
            st = os.stat(root / name)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644, name
            assert (root / name).read_bytes() == name.encode()
        st = os.stat(root / "huge-ids")
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        good = os.stat(root / "good")
        assert stat.S_IMODE(good.st_mode) == 0o600 and good.st_uid == 1234
        assert good.st_mtime_ns == 1700000000_500000000
    time.sleep(1)  # background HEADs of the big directory have run
    assert mt.proc.poll() is None, mt.read_log()
    assert len(os.listdir(mt.mountpoint / "big")) == 307
    assert "ignoring invalid mode" in mt.read_log()
