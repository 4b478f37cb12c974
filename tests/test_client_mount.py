"""Client-side encryption through real mounts (issue 3): nothing readable in the bucket or the
cache directory, name-length limits, non-UTF-8 names, --plain-names, and the core rsync /
kill -9 behaviour in client mode."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mounting import keyenv, mount_factory  # noqa: F401

SEG = 64 * 1024
MAX_NAME = 143  # longest plaintext name of name scheme 1 (docs/FORMAT.md)

NAMES = ["secret-name-XYZ", "secret-dir-QRS", "secret-name-nested-ABC", "secret-empty-EMP",
         "secret-link-LNK", "secret-target-TGT", "secret-seg-SEG", "secret-sub-DEEP",
         "secret-deep-file-JKL"]
MARKERS = ["CONTENT-MARKER-alpha", "CONTENT-MARKER-beta", "CONTENT-MARKER-gamma",
           "CONTENT-MARKER-delta"]


def make_tree(src: Path) -> None:
    (src / "secret-dir-QRS" / "secret-sub-DEEP").mkdir(parents=True)
    (src / "secret-name-XYZ.txt").write_text("hello CONTENT-MARKER-alpha world\n")
    nested = "".join(f"line {i} CONTENT-MARKER-beta\n" for i in range(8000))  # ~220 KB
    (src / "secret-dir-QRS" / "secret-name-nested-ABC.log").write_text(nested)
    (src / "secret-dir-QRS" / "secret-empty-EMP.txt").write_bytes(b"")
    seg = ("CONTENT-MARKER-gamma" * 4000).encode()[:SEG]
    (src / "secret-seg-SEG.bin").write_bytes(seg)
    (src / "secret-dir-QRS" / "secret-sub-DEEP" / "secret-deep-file-JKL").write_bytes(
        b"CONTENT-MARKER-delta" + random.Random(1).randbytes(3000))
    (src / "secret-link-LNK").symlink_to("secret-target-TGT.txt")
    os.chmod(src / "secret-name-XYZ.txt", 0o640)
    os.utime(src / "secret-seg-SEG.bin", (1_600_000_000, 1_600_000_000))


def scan_bucket(s3: Any, bucket: str) -> tuple[list[str], list[str], list[bytes]]:
    """(keys, metadata names+values, bodies) of every object, including `.s3encfs/`."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    meta: list[str] = []
    bodies: list[bytes] = []
    for k in keys:
        r = s3.get_object(Bucket=bucket, Key=k)
        bodies.append(r["Body"].read())
        for name, value in r["Metadata"].items():
            meta.extend([name, value])
        meta.append(r.get("ContentType", ""))
    return keys, meta, bodies


def grep_dir(root: Path, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


def dir_bytes(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(root) for f in fs)


def data_keys(s3: Any, bucket: str) -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(o["Key"] for o in page.get("Contents", [])
                   if not o["Key"].startswith(".s3encfs/"))
    return out


def rsync(src: Path, dst: Path, *args: str) -> str:
    return subprocess.run(["rsync", "-a", *args, f"{src}/", f"{dst}/"], check=True,
                          capture_output=True, text=True).stdout


# -- (a) the raw bucket reveals no names and no contents ----------------------------------------
def test_bucket_scan_finds_no_names_or_contents(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                                tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    m = mount_factory(bucket, "client")
    rsync(src, m.mountpoint)
    m.umount()

    keys, meta, bodies = scan_bucket(s3, bucket)
    assert len(data_keys(s3, bucket)) >= 8  # 6 files/links + 2 dir markers
    assert any(k.startswith(".s3encfs/") for k in keys)
    leaks = []
    for needle in NAMES + MARKERS:
        for k in keys:
            if needle.lower() in k.lower():
                leaks.append(("key", needle, k))
        for v in meta:
            if needle.lower() in v.lower():
                leaks.append(("metadata", needle, v))
        for i, b in enumerate(bodies):
            if needle.encode() in b:
                leaks.append(("body", needle, keys[i]))
    assert not leaks, leaks
    # POSIX attributes are sealed too: no plain mode/uid/mtime metadata
    assert not any(v in ("mode", "uid", "gid", "mtime") for v in meta[::2])

    # and the tree reads back exactly through a fresh mount
    m2 = mount_factory(bucket, "client", name="m2")
    assert rsync(src, m2.mountpoint, "--itemize-changes") == ""
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m2.mountpoint)], check=True)


# -- (b) no plaintext at rest in the cache directory --------------------------------------------
MARK = b"CACHE-PLAINTEXT-MARKER-7f3a"


def _cache_payload() -> dict[str, bytes]:
    return {
        "small.txt": MARK + b" small",
        "big.bin": (MARK + b"-" + random.Random(7).randbytes(500)) * 2000,  # ~1 MiB, 16 segs
        "one-seg.bin": (MARK * (SEG // len(MARK) + 1))[:SEG],
    }


def test_no_plaintext_in_cache_dir(bucket: str, s3: Any, mount_factory: Any) -> None:  # noqa: F811
    files = _cache_payload()
    m = mount_factory(bucket, "client", extra=["--upload-delay", "600"])
    for name, data in files.items():
        (m.mountpoint / name).write_bytes(data)
    with open(m.mountpoint / "part.bin", "wb") as f:  # partial rewrite of staged data
        f.write(files["big.bin"])
        f.flush()
        os.pwrite(f.fileno(), MARK * 10, SEG * 3 + 10)
    time.sleep(1)
    early = [(o["Key"], o["Size"]) for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert data_keys(s3, bucket) == [], ("uploads were meant to be pending", early)
    assert dir_bytes(m.cache_dir) >= sum(map(len, files.values())), "nothing staged?"
    assert grep_dir(m.cache_dir, MARK) == [], "plaintext in the cache dir (pending uploads)"
    m.umount()
    assert len(data_keys(s3, bucket)) == 4
    assert grep_dir(m.cache_dir, MARK) == []

    # reads fill the block cache (on disk): ciphertext only
    m.start()
    for name, data in files.items():
        assert (m.mountpoint / name).read_bytes() == data
    blocks = m.cache_dir / "blocks"
    deadline = time.monotonic() + 30  # a reader does not wait for the disk-tier copy
    while dir_bytes(blocks) < len(files["big.bin"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dir_bytes(blocks) >= len(files["big.bin"]), "block cache not used?"
    assert grep_dir(m.cache_dir, MARK) == [], "plaintext in the cache dir (block cache)"
    m.umount()
    assert grep_dir(m.cache_dir, MARK) == []


def test_plain_mode_cache_grep_is_sensitive(bucket: str, mount_factory: Any) -> None:  # noqa: F811
    """Control for the test above: in plain mode the same grep does find the staged marker."""
    m = mount_factory(bucket, "none", extra=["--upload-delay", "600"])
    (m.mountpoint / "small.txt").write_bytes(MARK + b" small")
    time.sleep(0.5)
    assert grep_dir(m.cache_dir, MARK) != []


def test_no_plaintext_names_in_cache_dir(bucket: str, mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client", extra=["--upload-delay", "600"])
    (m.mountpoint / "secret-pending-name-QQQ.txt").write_bytes(b"x")
    time.sleep(0.5)
    assert grep_dir(m.cache_dir, b"secret-pending-name-QQQ") == []


# -- (c) name length limits ----------------------------------------------------------------------
def _expect_errno(code: int, fn: Any, *args: Any) -> None:
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == code, (fn, ei.value)


def plant_scheme1_keycheck(s3: Any, bucket: str, env: dict[str, str]) -> None:
    """The keycheck every mount wrote before name scheme 2: no "names" field, so the bucket
    keeps scheme-1 names (tests/test_long_names.py covers scheme 2, which new buckets get)."""
    import json

    from s3encfs.crypto import ClientCodec
    from s3encfs.keys.keyring import Keyring

    key = Keyring(environ=env).get("default")
    codec = ClientCodec({key.info.key_id: key.secret}, key.info.key_id)
    check = {"v": 1, "name_key_id": key.info.key_id}
    s3.put_object(Bucket=bucket, Key=".s3encfs/keycheck",
                  Body=codec.seal_blob("keycheck", json.dumps(check).encode()))


def test_name_length_limits(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                            mount_factory: Any) -> None:  # noqa: F811
    """A bucket of name scheme 1 keeps its 143-byte limit (and its names) unchanged."""
    plant_scheme1_keycheck(s3, bucket, keyenv)
    m = mount_factory(bucket, "client")
    assert os.statvfs(m.mountpoint).f_namemax == MAX_NAME
    mp = m.mountpoint
    ok_ascii = "n" * (MAX_NAME - 4) + ".txt"
    ok_utf8 = "é" * 71 + "a"  # 143 bytes
    too_ascii = "n" * (MAX_NAME + 1 - 4) + ".txt"
    too_utf8 = "é" * 72  # 144 bytes
    assert len(ok_ascii.encode()) == len(ok_utf8.encode()) == MAX_NAME
    assert len(too_ascii.encode()) == len(too_utf8.encode()) == MAX_NAME + 1

    (mp / ok_ascii).write_bytes(b"ascii 143")
    (mp / ok_utf8).write_bytes(b"utf8 143")
    (mp / ("d" * MAX_NAME)).mkdir()
    (mp / ("d" * MAX_NAME) / ok_ascii).write_bytes(b"nested 143")
    os.symlink("target", mp / ("l" * MAX_NAME))

    _expect_errno(errno.ENAMETOOLONG, (mp / too_ascii).write_bytes, b"x")
    _expect_errno(errno.ENAMETOOLONG, (mp / too_utf8).write_bytes, b"x")
    _expect_errno(errno.ENAMETOOLONG, os.mkdir, mp / ("d" * (MAX_NAME + 1)))
    _expect_errno(errno.ENAMETOOLONG, os.symlink, "target", mp / ("l" * (MAX_NAME + 1)))
    _expect_errno(errno.ENAMETOOLONG, os.rename, mp / ok_ascii, mp / too_ascii)
    assert (mp / ok_ascii).read_bytes() == b"ascii 143"  # a refused rename changes nothing

    # whole keys: 4 nested 143-byte directories make a 1,024-byte key; nothing fits below
    deep = mp
    for i in range(4):
        deep = deep / (str(i) * MAX_NAME)
        deep.mkdir()
    _expect_errno(errno.ENAMETOOLONG, (deep / "f").write_bytes, b"x")
    _expect_errno(errno.ENAMETOOLONG, os.mkdir, deep / "g")
    m.umount()

    m2 = mount_factory(bucket, "client", name="m2")
    mp = m2.mountpoint
    assert sorted(os.listdir(mp)) == sorted(
        [ok_ascii, ok_utf8, "d" * MAX_NAME, "l" * MAX_NAME, "0" * MAX_NAME])
    assert (mp / ok_ascii).read_bytes() == b"ascii 143"
    assert (mp / ok_utf8).read_bytes() == b"utf8 143"
    assert (mp / ("d" * MAX_NAME) / ok_ascii).read_bytes() == b"nested 143"
    assert os.readlink(mp / ("l" * MAX_NAME)) == "target"
    three = mp / ("0" * MAX_NAME) / ("1" * MAX_NAME) / ("2" * MAX_NAME)
    assert os.listdir(three) == ["3" * MAX_NAME]


# -- (d) non-UTF-8 names -------------------------------------------------------------------------
def test_non_utf8_names(bucket: str, s3: Any, mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    mp = os.fsencode(m.mountpoint)
    fname = b"\xff\xfe-name"
    dname = b"\xe9t\xe9-dir"  # latin-1
    with open(os.path.join(mp, fname), "wb") as f:
        f.write(b"non-utf8 file")
    os.mkdir(os.path.join(mp, dname))
    with open(os.path.join(mp, dname, b"\x80inner"), "wb") as f:
        f.write(b"inner")
    os.symlink(b"\xfa-target", os.path.join(mp, b"\xfb-link"))
    assert sorted(os.listdir(mp)) == sorted([fname, dname, b"\xfb-link"])
    m.umount()
    for k in data_keys(s3, bucket):  # stored keys are valid UTF-8 (S3 requires it)
        k.encode("utf-8")

    m2 = mount_factory(bucket, "client", name="m2")  # fresh cache
    mp = os.fsencode(m2.mountpoint)
    assert sorted(os.listdir(mp)) == sorted([fname, dname, b"\xfb-link"])
    with open(os.path.join(mp, fname), "rb") as f:
        assert f.read() == b"non-utf8 file"
    assert os.listdir(os.path.join(mp, dname)) == [b"\x80inner"]
    with open(os.path.join(mp, dname, b"\x80inner"), "rb") as f:
        assert f.read() == b"inner"
    assert os.readlink(os.path.join(mp, b"\xfb-link")) == b"\xfa-target"
    os.rename(os.path.join(mp, fname), os.path.join(mp, b"\xfe\xff-renamed"))
    m2.umount()
    m3 = mount_factory(bucket, "client", name="m3")
    mp = os.fsencode(m3.mountpoint)
    with open(os.path.join(mp, b"\xfe\xff-renamed"), "rb") as f:
        assert f.read() == b"non-utf8 file"
    assert not os.path.exists(os.path.join(mp, fname))


# -- (e) --plain-names ---------------------------------------------------------------------------
def test_plain_names_keys_readable_contents_encrypted(bucket: str, s3: Any,
                                                     mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client", extra=["--plain-names"])
    (m.mountpoint / "plain-dir").mkdir()
    body = b"PLAIN-NAMES-CONTENT-MARKER " * 5000
    (m.mountpoint / "plain-dir" / "plain-file.txt").write_bytes(body)
    os.symlink("plain-link-target", m.mountpoint / "plain-link")
    m.umount()

    keys = set(data_keys(s3, bucket))
    assert {"plain-dir/plain-file.txt", "plain-link"} <= keys, keys
    r = s3.get_object(Bucket=bucket, Key="plain-dir/plain-file.txt")
    raw = r["Body"].read()
    assert b"PLAIN-NAMES-CONTENT-MARKER" not in raw
    assert len(raw) == len(body) + 28 * (-(-len(body) // SEG))  # client format, 28 B/segment
    assert "s3encfs-key" in r["Metadata"] and "mode" not in r["Metadata"]
    link = s3.get_object(Bucket=bucket, Key="plain-link")["Body"].read()
    assert b"plain-link-target" not in link  # symlink targets are encrypted

    m2 = mount_factory(bucket, "client", name="m2", extra=["--plain-names"])
    assert (m2.mountpoint / "plain-dir" / "plain-file.txt").read_bytes() == body
    assert os.readlink(m2.mountpoint / "plain-link") == "plain-link-target"


# -- (f) rsync round trip, no-op re-sync, incremental re-sync, kill -9 in client mode ------------
def test_client_rsync_resync_and_kill9(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                       tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "multi.bin").write_bytes(random.Random(3).randbytes(5 * SEG + 123))
    m = mount_factory(bucket, "client")
    rsync(src, m.mountpoint)
    m.umount()
    shutil.rmtree(m.cache_dir)
    before = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in data_keys(s3, bucket)}

    m.start()
    assert rsync(src, m.mountpoint, "--itemize-changes") == ""
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m.mountpoint)], check=True)
    # one changed file → one item, and only that object is rewritten
    with open(src / "multi.bin", "r+b") as f:
        f.seek(2 * SEG + 7)
        f.write(b"CHANGED")
    out = rsync(src, m.mountpoint, "--itemize-changes").splitlines()
    assert [ln.split()[-1] for ln in out] == ["multi.bin"], out
    m.umount()
    after = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in data_keys(s3, bucket)}
    changed = [k for k in after if before.get(k) != after[k]]
    assert len(changed) == 1 and set(after) == set(before), (changed, set(after) ^ set(before))

    # kill -9 after close(): the journal + encrypted staging replay on the next mount
    m.start()
    data = random.Random(4).randbytes(3 * SEG + 5)
    (m.mountpoint / "after-kill.bin").write_bytes(data)
    (m.mountpoint / "secret-name-XYZ.txt").write_text("rewritten before the crash\n")
    m.kill()
    m.start()
    assert (m.mountpoint / "after-kill.bin").read_bytes() == data
    assert (m.mountpoint / "secret-name-XYZ.txt").read_text() == "rewritten before the crash\n"
    m.umount()
    m3 = mount_factory(bucket, "client", name="m3")  # fresh cache: it is all in S3
    assert (m3.mountpoint / "after-kill.bin").read_bytes() == data
    assert (m3.mountpoint / "secret-name-XYZ.txt").read_text() == "rewritten before the crash\n"


@pytest.mark.parametrize("mode", ["none", "client"])
def test_overwrite_shorter_survives_kill9(mode: str, bucket: str,
                                          mount_factory: Any) -> None:  # noqa: F811
    """O_TRUNC + shorter rewrite of an uploaded file, close(), kill -9: the replay must give
    exactly the new bytes (not the new bytes followed by the old file's tail)."""
    m = mount_factory(bucket, mode)
    (m.mountpoint / "f.txt").write_text("hello CONTENT-MARKER-alpha world\n")
    m.umount()
    m.start()
    (m.mountpoint / "f.txt").write_text("rewritten before the crash\n")
    assert (m.mountpoint / "f.txt").read_text() == "rewritten before the crash\n"
    m.kill()
    m.start()
    assert (m.mountpoint / "f.txt").read_text() == "rewritten before the crash\n"
    m.umount()
    m2 = mount_factory(bucket, mode, name="m2")  # fresh cache: S3 holds exactly the new bytes
    assert (m2.mountpoint / "f.txt").read_text() == "rewritten before the crash\n"
