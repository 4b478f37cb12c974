"""Long names (name scheme 2, issue 10) through real client-mode mounts on SeaweedFS: 200- and
255-byte names (ASCII and multibyte UTF-8) for files, directories and symlinks, renames in and
out of long names, a fresh mount's listing, rsync round trips, ENAMETOOLONG at 256 bytes, the
side objects following their names, and tampering with them failing closed (EIO)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

A200 = "a" * 196 + ".txt"
A255 = "b" * 251 + ".bin"
U200 = "é" * 100  # 200 bytes of UTF-8
U255 = "ü" * 127 + "x"  # 255 bytes
D255 = "d" * 255
TOO = "c" * 256


def keys(s3: Any, bucket: str) -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(o["Key"] for o in page.get("Contents", []))
    return out


def sides(s3: Any, bucket: str) -> list[str]:
    return [k for k in keys(s3, bucket) if k.endswith(".name")]


def _errno(code: int, fn: Any, *args: Any) -> None:
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == code, (fn, ei.value)


def test_long_names_on_a_mount(bucket: str, s3: Any, mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    mp = m.mountpoint
    assert os.statvfs(mp).f_namemax == 255
    assert os.pathconf(mp, "PC_NAME_MAX") == 255
    for name in (A200, A255, U200, U255):
        assert len(name.encode()) in (200, 255)
        (mp / name).write_bytes(name.encode() * 3)
    (mp / D255).mkdir()
    (mp / D255 / U255).write_bytes(b"nested")
    (mp / D255 / "short").mkdir()
    os.symlink(A255, mp / ("l" * 255))
    _errno(errno.ENAMETOOLONG, (mp / TOO).write_bytes, b"x")
    _errno(errno.ENAMETOOLONG, os.mkdir, mp / TOO)
    _errno(errno.ENAMETOOLONG, os.rename, mp / A200, mp / TOO)
    _errno(errno.ENAMETOOLONG, (mp / ("é" * 128)).write_bytes, b"x")  # 256 bytes of UTF-8
    assert (mp / A255).stat().st_size == len(A255.encode()) * 3
    assert (mp / U200).read_bytes() == U200.encode() * 3
    # renames: long -> short, short -> long, long -> long, across directories
    os.rename(mp / A200, mp / "was-long")
    (mp / "to-be-long").write_bytes(b"short then long")
    os.rename(mp / "to-be-long", mp / D255 / A255)
    os.rename(mp / U200, mp / D255 / U200)
    os.rmdir(mp / D255 / "short")
    m.umount()

    stored = keys(s3, bucket)
    assert all(len(c) <= 180 for k in stored for c in k.split("/")), stored
    assert len(sides(s3, bucket)) == 7  # A255, U255, D255, l*255 at the top; U255, A255, U200 below

    m2 = mount_factory(bucket, "client", name="m2")
    mp = m2.mountpoint
    assert sorted(os.listdir(mp)) == sorted(["was-long", A255, U255, D255, "l" * 255])
    assert sorted(os.listdir(mp / D255)) == sorted([U255, A255, U200])
    assert (mp / "was-long").read_bytes() == A200.encode() * 3
    assert (mp / D255 / A255).read_bytes() == b"short then long"
    assert (mp / D255 / U200).read_bytes() == U200.encode() * 3
    assert os.readlink(mp / ("l" * 255)) == A255
    # deletes take their side objects with them
    for name in (U255, A255, "l" * 255):
        os.unlink(mp / name)
    for name in (U255, A255, U200):
        os.unlink(mp / D255 / name)
    os.rmdir(mp / D255)
    # a directory renamed into and out of a long name, with content
    (mp / "d1" / "sub").mkdir(parents=True)
    (mp / "d1" / "sub" / A255).write_bytes(b"deep")
    os.rename(mp / "d1", mp / D255)
    assert (mp / D255 / "sub" / A255).read_bytes() == b"deep"
    os.rename(mp / D255, mp / "d2")
    assert (mp / "d2" / "sub" / A255).read_bytes() == b"deep"
    m2.umount()
    left = sides(s3, bucket)
    assert len(left) == 1 and left[0].count("/") == 2, left  # only d2/sub/<A255>'s

    m3 = mount_factory(bucket, "client", name="m3")
    assert sorted(os.listdir(m3.mountpoint)) == ["d2", "was-long"]
    assert os.listdir(m3.mountpoint / "d2" / "sub") == [A255]
    m3.umount()
    proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client"],
                          env=m3.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rsync_tree_with_long_names(bucket: str, tmp_path: Path,
                                    mount_factory: Any) -> None:  # noqa: F811
    src = tmp_path / "src"
    (src / D255 / U200).mkdir(parents=True)
    for i, name in enumerate((A200, A255, U255, "short.txt", "x" * 144, "y" * 143)):
        (src / name).write_bytes(os.urandom(1000 + i * 70_000))
        (src / D255 / U200 / name).write_bytes(name.encode())
    os.symlink(U255, src / ("s" * 250))
    m = mount_factory(bucket, "client")
    dst = m.mountpoint / "tree"
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True, timeout=600)
    m.umount()
    m2 = mount_factory(bucket, "client", name="m2")
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m2.mountpoint / "tree")],
                   check=True, timeout=600)
    # and a second rsync finds nothing to do
    out = subprocess.run(["rsync", "-a", "-i", f"{src}/", f"{m2.mountpoint / 'tree'}/"],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    assert out.strip() == "", out


def _planted(bucket: str, s3: Any, mount_factory: Any) -> tuple[str, str]:  # noqa: F811
    m = mount_factory(bucket, "client")
    (m.mountpoint / A255).write_bytes(b"long one")
    (m.mountpoint / "keep").write_bytes(b"short one")
    (m.mountpoint / "sub").mkdir()
    (m.mountpoint / "sub" / "f").write_bytes(b"x")
    m.umount()
    (side,) = sides(s3, bucket)
    return side, side[: -len(".name")]


@pytest.mark.parametrize("attack", [
    "flip", "delete", "swap-record",
    # rename-object changes data bits of the hash; respell-object only the 4 unused bits of its
    # last base32 character (the same HMAC bytes: once passed, listed as a foreign name, no EIO)
    "rename-object", "respell-object",
    "into-other-dir"])
def test_tampered_long_names_are_eio(attack: str, bucket: str, s3: Any,
                                     mount_factory: Any) -> None:  # noqa: F811
    side, obj = _planted(bucket, s3, mount_factory)
    body = s3.get_object(Bucket=bucket, Key=side)["Body"].read()
    where = ""
    if attack == "flip":
        s3.put_object(Bucket=bucket, Key=side, Body=bytes([body[0] ^ 1]) + body[1:])
    elif attack == "delete":
        s3.delete_object(Bucket=bucket, Key=side)
    elif attack == "swap-record":  # another long name's record under this name
        m = mount_factory(bucket, "client", name="other")
        (m.mountpoint / A200).write_bytes(b"x")
        m.umount()
        other = next(k for k in sides(s3, bucket) if k != side)
        s3.put_object(Bucket=bucket, Key=side,
                      Body=s3.get_object(Bucket=bucket, Key=other)["Body"].read())
    elif attack in ("rename-object", "respell-object"):  # moved to another hashed name
        b32 = "abcdefghijklmnopqrstuvwxyz234567"
        if attack == "rename-object":
            fake = obj[:-2] + ("a" if obj[-2] != "a" else "b") + obj[-1]
        else:
            fake = obj[:-1] + b32[b32.index(obj[-1]) ^ 1]
        s3.copy_object(Bucket=bucket, Key=fake, CopySource={"Bucket": bucket, "Key": obj})
        s3.put_object(Bucket=bucket, Key=fake + ".name", Body=body)
    else:  # object and record copied together into another directory
        (sub,) = {k.split("/")[0] for k in keys(s3, bucket) if k.count("/") == 1
                  and not k.startswith(".s3encfs/")}
        s3.copy_object(Bucket=bucket, Key=f"{sub}/{obj}",
                       CopySource={"Bucket": bucket, "Key": obj})
        s3.put_object(Bucket=bucket, Key=f"{sub}/{side}", Body=body)
        where = "sub"
    m2 = mount_factory(bucket, "client", name="m2")
    _errno(errno.EIO, os.listdir, m2.mountpoint / where)
    if where:
        assert (m2.mountpoint / A255).read_bytes() == b"long one"  # the original is fine
    # the directory holding the damaged name fails as a whole (fs/listing.py cannot show its
    # entries honestly without it), and the log names the key
    log = m2.read_log()
    assert "long name gl-" in log or "side object" in log, log
    if attack == "flip":  # `check` fails too, naming the side object
        m2.umount()
        proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client"],
                              env=m2.env, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "does not authenticate" in proc.stderr, proc


def test_check_reports_orphaned_and_missing_side_objects(bucket: str, s3: Any,
                                                         mount_factory: Any) -> None:  # noqa: F811
    """`check` exits 1 on a side object whose name is gone and on a long name (a file, and a
    directory) whose side object is gone — naming the key — and 0 once they are put right."""
    import json

    m = mount_factory(bucket, "client")
    (m.mountpoint / A200).write_bytes(b"long file")
    (m.mountpoint / D255).mkdir()
    (m.mountpoint / D255 / "inner").write_bytes(b"under a long directory")
    m.umount()

    def problems() -> dict[str, str]:
        proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client",
                               "--json"], env=m.env, capture_output=True, text=True, timeout=300)
        rep = json.loads(proc.stdout)
        assert (proc.returncode == 1) == bool(rep["problems"]), proc.stdout + proc.stderr
        return {p["key"]: p["error"] for p in rep["problems"]}

    assert problems() == {}
    top = sides(s3, bucket)
    assert len(top) == 2  # A200's and D255's
    file_obj = next(k[: -len(".name")] for k in top if k[: -len(".name")] in keys(s3, bucket))
    file_side = file_obj + ".name"
    dir_side = next(k for k in top if k != file_side)
    body = s3.get_object(Bucket=bucket, Key=file_obj)
    data, meta = body["Body"].read(), body["Metadata"]

    s3.delete_object(Bucket=bucket, Key=file_obj)  # the object goes, its side object stays
    found = problems()
    assert list(found) == [file_side] and "orphaned" in found[file_side], found
    s3.put_object(Bucket=bucket, Key=file_obj, Body=data, Metadata=meta)
    assert problems() == {}

    side_body = s3.get_object(Bucket=bucket, Key=dir_side)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=dir_side)  # a long directory name loses its record
    found = problems()
    name = dir_side[: -len(".name")]
    assert "has no side object" in found[name], found
    assert all(k.startswith(name) for k in found), found  # and what is under it: undecodable
    s3.put_object(Bucket=bucket, Key=dir_side, Body=side_body)
    assert problems() == {}
