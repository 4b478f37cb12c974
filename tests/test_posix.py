"""POSIX semantics through a real mount, plain (`--encryption none`) and client-side encrypted.

One mount per mode is shared by the module (each test works in its own subdirectory); the
persistence test remounts it with an empty cache.  Everything goes through real syscalls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounting import S3ENCFS, Mount, keyenv, mount_factory  # noqa: F401

MODES = ["none", "client"]
NOBODY = 65534


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=MODES)
def m(request: pytest.FixtureRequest, s3, s3env, tmp_path_factory) -> Iterator[Mount]:
    """A module-wide mount (allow_other, so other uids reach it and permission checks matter)."""
    mode = request.param
    name = f"posix-{mode}-{os.getpid()}"
    s3.create_bucket(Bucket=name)
    base = tmp_path_factory.mktemp(f"posix-{mode}")
    keydir = base / "keys"
    env = dict(s3env, S3ENCFS_KEYRING_DIR=str(keydir), S3ENCFS_PASSPHRASE="",
               S3ENCFS_ALLOW_EMPTY_PASSPHRASE="1")
    subprocess.run([*S3ENCFS, "key", "create", "default"], env=env, check=True,
                   capture_output=True)
    # the mountpoint must be reachable by uid 65534 (pytest's tmp dirs are 0700)
    pub = Path(tempfile.mkdtemp(prefix=f"s3encfs-posix-{mode}-"))
    os.chmod(pub, 0o755)
    mnt = Mount(f"s3://{name}", pub / "mnt", base / "cache", env, encryption=mode,
                extra=["-o", "allow_other"], log_path=base / "mount.log")
    mnt.start()
    try:
        yield mnt
    finally:
        mnt.stop()
        if not os.path.ismount(mnt.mountpoint):
            shutil.rmtree(pub, ignore_errors=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=o["Key"])
        s3.delete_bucket(Bucket=name)


@pytest.fixture
def d(m: Mount, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the shared mount for one test."""
    p = m.mountpoint / request.node.originalname
    os.mkdir(p)
    return p


def remount_empty_cache(m: Mount) -> None:
    m.umount()
    shutil.rmtree(m.cache_dir)
    m.start()


def errno_of(fn, *args, **kw) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno is not None
    return ei.value.errno


# -- lookup / getattr / readdir ------------------------------------------------------------------
def test_lookup_getattr_readdir(m, d):
    (d / "a.txt").write_bytes(b"hello")
    (d / "sub").mkdir()
    (d / "sub" / "b").write_bytes(b"x" * 70000)
    st = os.stat(d / "a.txt")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 5
    assert os.stat(d / "sub" / "b").st_size == 70000
    assert stat.S_ISDIR(os.stat(d / "sub").st_mode)
    assert sorted(os.listdir(d)) == ["a.txt", "sub"]
    with os.scandir(d) as it:
        kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                 for e in it}
    assert kinds == {"a.txt": (False, True), "sub": (True, False)}
    assert errno_of(os.stat, d / "missing") == errno.ENOENT
    assert errno_of(os.stat, d / "a.txt" / "x") == errno.ENOTDIR
    out = subprocess.run(["find", str(d), "-printf", "%P|%y|%s\n"], check=True,
                         capture_output=True, text=True).stdout
    rows = sorted(line.split("|") for line in out.splitlines() if line)
    assert [(r[0], r[1]) for r in rows] == [("", "d"), ("a.txt", "f"), ("sub", "d"),
                                            ("sub/b", "f")]
    assert rows[1][2] == "5" and rows[3][2] == "70000"
    sizes = subprocess.run(["stat", "-c", "%s %F", str(d / "a.txt")], check=True,
                           capture_output=True, text=True).stdout.strip()
    assert sizes == "5 regular file"


# -- create / open / read / write / fsync ---------------------------------------------------------
def test_create_write_read_fsync(m, d):
    p = d / "f.bin"
    data = os.urandom(300_000)
    fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o640)
    try:
        assert os.write(fd, data) == len(data)
        os.fsync(fd)
        assert os.pwrite(fd, b"MIDDLE", 150_000) == 6
        got = os.pread(fd, 10, 149_998)
        assert got == data[149_998:150_000] + b"MIDDLE" + data[150_006:150_008]
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, b"tail")
        os.fsync(fd)
    finally:
        os.close(fd)
    expect = data[:150_000] + b"MIDDLE" + data[150_006:] + b"tail"
    assert p.read_bytes() == expect
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert errno_of(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    # write past EOF leaves a zero-filled hole
    with open(p, "r+b") as f:
        f.seek(len(expect) + 1000)
        f.write(b"Z")
    assert p.read_bytes() == expect + bytes(1000) + b"Z"
    # cp and dd
    subprocess.run(["cp", str(p), str(d / "copy")], check=True)
    assert (d / "copy").read_bytes() == p.read_bytes()
    subprocess.run(["dd", "if=/dev/zero", f"of={d / 'dd'}", "bs=64k", "count=3", "status=none"],
                   check=True)
    assert (d / "dd").read_bytes() == bytes(3 * 65536)
    # O_APPEND and O_TRUNC
    with open(d / "ap", "ab") as f:
        f.write(b"1")
    with open(d / "ap", "ab") as f:
        f.write(b"2")
    assert (d / "ap").read_bytes() == b"12"
    with open(d / "ap", "wb") as f:
        f.write(b"3")
    assert (d / "ap").read_bytes() == b"3"


# -- mkdir / rmdir / unlink -----------------------------------------------------------------------
def test_mkdir_rmdir(m, d):
    os.mkdir(d / "x", 0o750)
    assert stat.S_IMODE(os.stat(d / "x").st_mode) == 0o750
    assert errno_of(os.mkdir, d / "x") == errno.EEXIST
    os.makedirs(d / "x" / "y" / "z")
    (d / "x" / "y" / "z" / "f").write_bytes(b"1")
    assert errno_of(os.rmdir, d / "x") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, d / "x" / "y" / "z" / "f") == errno.ENOTDIR
    assert errno_of(os.rmdir, d / "nope") == errno.ENOENT
    os.unlink(d / "x" / "y" / "z" / "f")
    os.rmdir(d / "x" / "y" / "z")
    os.rmdir(d / "x" / "y")
    os.rmdir(d / "x")
    assert os.listdir(d) == []
    assert errno_of(os.stat, d / "x") == errno.ENOENT


def test_unlink(m, d):
    (d / "f").write_bytes(b"data")
    os.mkdir(d / "dir")
    os.unlink(d / "f")
    assert errno_of(os.stat, d / "f") == errno.ENOENT
    assert errno_of(os.unlink, d / "f") == errno.ENOENT
    assert errno_of(os.unlink, d / "dir") in (errno.EISDIR, errno.EPERM)
    assert os.listdir(d) == ["dir"]
    # a name can be reused immediately with new content
    (d / "f").write_bytes(b"new")
    assert (d / "f").read_bytes() == b"new"


# -- rename ---------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(src: Path, dst: Path, flags: int) -> None:
    rc = _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))


def test_rename_file(m, d):
    (d / "a").write_bytes(b"A" * 1000)
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert not (d / "a").exists()
    assert (d / "b").read_bytes() == b"A" * 1000
    assert os.stat(d / "b").st_ino == ino
    # into another directory
    os.mkdir(d / "sub")
    os.rename(d / "b", d / "sub" / "c")
    assert (d / "sub" / "c").read_bytes() == b"A" * 1000
    assert os.stat(d / "sub" / "c").st_ino == ino
    # replace semantics over an existing file
    (d / "other").write_bytes(b"old other")
    os.rename(d / "sub" / "c", d / "other")
    assert (d / "other").read_bytes() == b"A" * 1000
    assert sorted(os.listdir(d)) == ["other", "sub"]
    assert os.listdir(d / "sub") == []
    # RENAME_NOREPLACE
    (d / "n1").write_bytes(b"1")
    (d / "n2").write_bytes(b"2")
    assert errno_of(renameat2, d / "n1", d / "n2", RENAME_NOREPLACE) == errno.EEXIST
    assert (d / "n2").read_bytes() == b"2" and (d / "n1").read_bytes() == b"1"
    renameat2(d / "n1", d / "n3", RENAME_NOREPLACE)
    assert (d / "n3").read_bytes() == b"1"
    # file over dir / dir over file
    os.mkdir(d / "dd")
    assert errno_of(os.rename, d / "n2", d / "dd") == errno.EISDIR
    assert errno_of(os.rename, d / "dd", d / "n2") == errno.ENOTDIR
    assert errno_of(os.rename, d / "missing", d / "x") == errno.ENOENT


def test_rename_file_still_being_written(m, d):
    with open(d / "w", "wb") as f:
        f.write(b"first")
        f.flush()
        os.rename(d / "w", d / "w2")
        f.write(b"second")
    assert (d / "w2").read_bytes() == b"firstsecond"
    assert not (d / "w").exists()


def test_rename_directory_tree(m, d):
    src = d / "tree"
    (src / "s1" / "s2").mkdir(parents=True)
    blobs = {Path("top.txt"): b"top", Path("s1/mid.bin"): os.urandom(200_000),
             Path("s1/s2/deep"): b"deep", Path("s1/s2/empty"): b""}
    for rel, data in blobs.items():
        (src / rel).write_bytes(data)
    (src / "s1" / "ln").symlink_to("s2/deep")
    os.chmod(src / "s1", 0o711)
    ino_dir = os.stat(src / "s1").st_ino
    ino_file = os.stat(src / "s1" / "s2" / "deep").st_ino
    os.rename(src, d / "moved")
    assert not src.exists()
    dst = d / "moved"
    for rel, data in blobs.items():
        assert (dst / rel).read_bytes() == data, rel
    assert os.readlink(dst / "s1" / "ln") == "s2/deep"
    assert stat.S_IMODE(os.stat(dst / "s1").st_mode) == 0o711
    assert os.stat(dst / "s1").st_ino == ino_dir
    assert os.stat(dst / "s1" / "s2" / "deep").st_ino == ino_file
    # over an empty directory: replaced; over a non-empty one: ENOTEMPTY
    os.mkdir(d / "emptyd")
    os.rename(dst / "s1" / "s2", d / "emptyd")
    assert sorted(os.listdir(d / "emptyd")) == ["deep", "empty"]
    os.mkdir(d / "full")
    (d / "full" / "f").write_bytes(b"f")
    assert errno_of(os.rename, d / "emptyd", d / "full") == errno.ENOTEMPTY
    assert (d / "full" / "f").read_bytes() == b"f"
    assert (d / "emptyd" / "deep").read_bytes() == b"deep"
    # into its own subdirectory
    assert errno_of(os.rename, dst, dst / "s1" / "x") == errno.EINVAL


# -- truncate -------------------------------------------------------------------------------------
def test_truncate_and_ftruncate(m, d):
    p = d / "t"
    data = os.urandom(100_000)
    p.write_bytes(data)
    os.truncate(p, 250_000)  # grow: zeros
    assert os.stat(p).st_size == 250_000
    assert p.read_bytes() == data + bytes(150_000)
    os.truncate(p, 12_345)  # shrink
    assert p.read_bytes() == data[:12_345]
    os.truncate(p, 20_000)  # grow again: the cut-off bytes must not come back
    assert p.read_bytes() == data[:12_345] + bytes(20_000 - 12_345)
    os.truncate(p, 0)
    assert p.read_bytes() == b""
    # ftruncate on an open file with unwritten (not yet uploaded/closed) data
    fd = os.open(d / "ft", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        big = os.urandom(500_000)
        os.write(fd, big)
        os.ftruncate(fd, 1000)
        assert os.fstat(fd).st_size == 1000
        assert os.pread(fd, 2000, 0) == big[:1000]
        os.pwrite(fd, b"END", 3000)  # hole after the cut must be zeros
        os.ftruncate(fd, 4000)
    finally:
        os.close(fd)
    assert (d / "ft").read_bytes() == big[:1000] + bytes(2000) + b"END" + bytes(997)
    subprocess.run(["truncate", "-s", "64K", str(d / "ft")], check=True)
    assert os.stat(d / "ft").st_size == 65536
    assert errno_of(os.truncate, d, 0) == errno.EISDIR


# -- symlinks, fifo, hard links, statfs, names -----------------------------------------------------
def test_symlink_readlink(m, d):
    (d / "target").write_bytes(b"t")
    os.symlink("target", d / "rel")
    os.symlink("/etc/hostname-does-not-matter", d / "abs")
    os.symlink("nowhere/at/all", d / "dangling")
    assert os.readlink(d / "rel") == "target"
    assert os.readlink(d / "abs") == "/etc/hostname-does-not-matter"
    assert stat.S_ISLNK(os.lstat(d / "dangling").st_mode)
    assert (d / "rel").read_bytes() == b"t"
    assert errno_of(os.stat, d / "dangling") == errno.ENOENT
    assert errno_of(os.readlink, d / "target") == errno.EINVAL
    assert errno_of(os.symlink, "x", d / "rel") == errno.EEXIST


def test_hard_link_is_eperm(m, d):
    (d / "f").write_bytes(b"1")
    assert errno_of(os.link, d / "f", d / "g") == errno.EPERM
    assert not (d / "g").exists()


def test_statfs(m):
    s = os.statvfs(m.mountpoint)
    assert s.f_bavail > 0 and s.f_bfree >= s.f_bavail
    assert s.f_blocks > 0 and s.f_frsize > 0
    # client mode on a new bucket: name scheme 2 takes 255 bytes too (a scheme-1 bucket says
    # 143: tests/test_client_mount.py); pathconf tells the truth
    assert s.f_namemax == 255
    assert os.pathconf(m.mountpoint, "PC_NAME_MAX") == s.f_namemax
    out = subprocess.run(["df", "-P", str(m.mountpoint)], check=True, capture_output=True,
                         text=True).stdout
    assert "s3encfs" in out


def test_enametoolong_and_long_names(m, d):
    assert errno_of(open, d / ("a" * 256), "wb") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, d / ("b" * 256)) == errno.ENAMETOOLONG
    # a lookup of a name no file can have says so (it said ENOENT)
    assert errno_of(os.lstat, d / ("x" * 256)) == errno.ENAMETOOLONG
    # a new bucket's client-mode names (scheme 2, FORMAT.md) reach 255 bytes too; the
    # 143-byte limit of scheme-1 buckets is tested in test_client_mount.py
    assert errno_of(os.stat, d / ("x" * 255)) == errno.ENOENT
    for longest in (130, 200, 255):
        name = "c" * longest
        (d / name).write_bytes(b"ok")
        assert (d / name).read_bytes() == b"ok"
        assert name in os.listdir(d)


def test_names_with_spaces_and_unicode(m, d):
    names = ["with space", " leading", "trailing ", "ünïcødé-ファイル", "emoji-😀", "a+b=c&d",
             "percent%20", "quote'\"", "back\\slash", "tab\tname", "ščř 文件 😀 x"]
    for i, n in enumerate(names):
        (d / n).write_bytes(str(i).encode())
    os.mkdir(d / "dir ü 😀")
    (d / "dir ü 😀" / "inner é").write_bytes(b"in")
    assert sorted(os.listdir(d)) == sorted([*names, "dir ü 😀"])
    for i, n in enumerate(names):
        assert (d / n).read_bytes() == str(i).encode(), n
    assert (d / "dir ü 😀" / "inner é").read_bytes() == b"in"


# -- xattrs ---------------------------------------------------------------------------------------
def test_non_user_xattr_refused(m, d):
    (d / "f").write_bytes(b"1")
    for name in ("trusted.foo", "security.foo"):
        e = errno_of(os.setxattr, d / "f", name, b"v")
        assert e in (errno.ENOTSUP, errno.EPERM), (name, e)
    os.setxattr(d / "f", "user.ok", b"v")
    assert os.getxattr(d / "f", "user.ok") == b"v"
    assert errno_of(os.getxattr, d / "f", "user.missing") == errno.ENODATA
    os.removexattr(d / "f", "user.ok")
    assert "user.ok" not in os.listxattr(d / "f")


# -- open-unlinked files, inode stability ---------------------------------------------------------
def test_unlinked_while_open(m, d):
    p = d / "u"
    data = os.urandom(200_000)
    p.write_bytes(data)
    m.flush()  # it is in S3: the object itself goes away
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        assert not p.exists()
        assert os.listdir(d) == []
        assert os.pread(fd, len(data), 0) == data
        os.pwrite(fd, b"more", len(data))
        assert os.pread(fd, 10, len(data) - 6) == data[-6:] + b"more"
        assert os.fstat(fd).st_size == len(data) + 4
        assert os.fstat(fd).st_nlink == 0  # was 1
        # the name is free for a new file meanwhile
        (d / "u").write_bytes(b"other")
        assert os.pread(fd, 4, 0) == data[:4]
    finally:
        os.close(fd)
    assert (d / "u").read_bytes() == b"other"
    # freshly created and never closed
    fd = os.open(d / "v", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"abc")
        os.unlink(d / "v")
        os.write(fd, b"def")
        assert os.pread(fd, 10, 0) == b"abcdef"
    finally:
        os.close(fd)
    assert sorted(os.listdir(d)) == ["u"]


def test_inode_numbers_stable(m, d):
    (d / "f").write_bytes(b"1")
    os.mkdir(d / "dir")
    (d / "dir" / "g").write_bytes(b"2")
    i_f, i_dir, i_g = (os.stat(d / x).st_ino for x in ("f", "dir", "dir/g"))
    assert len({i_f, i_dir, i_g}) == 3
    os.rename(d / "f", d / "f2")
    os.rename(d / "dir", d / "dir2")
    assert os.stat(d / "f2").st_ino == i_f
    assert os.stat(d / "dir2").st_ino == i_dir
    assert os.stat(d / "dir2" / "g").st_ino == i_g
    # stable across repeated lookups and readdir
    with os.scandir(d) as it:
        seen = {e.name: e.inode() for e in it}
    assert seen == {"f2": i_f, "dir2": i_dir}


# -- permission checks for another uid ------------------------------------------------------------
def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
                           "--clear-groups", *argv], capture_output=True, text=True)


def test_permissions_other_uid(m, d):
    os.chmod(d, 0o755)
    (d / "secret").write_bytes(b"s")
    os.chmod(d / "secret", 0o600)
    (d / "public").write_bytes(b"p")
    os.chmod(d / "public", 0o644)
    # positive control: nobody reaches the mount at all and can read a 0644 file
    ok = as_nobody("cat", str(d / "public"))
    assert ok.returncode == 0 and ok.stdout == "p", ok.stderr
    r = as_nobody("cat", str(d / "secret"))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    w = as_nobody("touch", str(d / "new"))
    assert w.returncode != 0 and "Permission denied" in w.stderr
    assert not (d / "new").exists()
    wf = as_nobody("sh", "-c", f"echo x >> '{d / 'public'}'")
    assert wf.returncode != 0 and "Permission denied" in wf.stderr
    assert (d / "public").read_bytes() == b"p"
    # a directory nobody owns is writable by nobody
    os.mkdir(d / "nob")
    os.chown(d / "nob", NOBODY, NOBODY)
    ok2 = as_nobody("sh", "-c", f"echo hi > '{d / 'nob' / 'mine'}'")
    assert ok2.returncode == 0, ok2.stderr
    st = os.stat(d / "nob" / "mine")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


# -- attributes persisted across a remount with an empty cache ------------------------------------
ATIME = 1_234_567_890_123_456_789
MTIME = 1_600_000_000_987_654_321


def test_attributes_persist_across_remount(m, d):
    f = d / "file"
    f.write_bytes(b"content")
    os.chown(f, 1234, 5678)  # (chown clears set-uid: chmod after it)
    os.chmod(f, 0o4751)
    os.utime(f, ns=(ATIME, MTIME))
    sub = d / "subdir"
    os.mkdir(sub)
    os.chown(sub, 4321, 8765)
    os.chmod(sub, 0o2750)
    os.utime(sub, ns=(ATIME + 1, MTIME + 1))
    os.symlink("file", d / "link")
    os.mkfifo(d / "fifo", 0o640)
    os.setxattr(f, "user.one", b"\x00\x01binary\xff")
    os.setxattr(f, "user.two", b"second")
    os.setxattr(sub, "user.dirattr", b"on a dir")
    (d / "empty").write_bytes(b"")
    # a directory renamed with contents, then given attributes
    (d / "r1" / "r2").mkdir(parents=True)
    (d / "r1" / "r2" / "deep").write_bytes(b"deep")
    os.rename(d / "r1", d / "renamed")
    os.utime(d / "renamed", ns=(ATIME + 2, MTIME + 2))
    # utime last (directory mtimes change when entries are added)
    os.utime(d, ns=(ATIME + 3, MTIME + 3))

    def check() -> None:
        st = os.stat(f)
        assert stat.S_IMODE(st.st_mode) == 0o4751 and stat.S_ISREG(st.st_mode)
        assert (st.st_uid, st.st_gid) == (1234, 5678)
        assert (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
        assert f.read_bytes() == b"content"
        sd = os.stat(sub)
        assert stat.S_ISDIR(sd.st_mode) and stat.S_IMODE(sd.st_mode) == 0o2750
        assert (sd.st_uid, sd.st_gid) == (4321, 8765)
        assert (sd.st_atime_ns, sd.st_mtime_ns) == (ATIME + 1, MTIME + 1)
        assert os.readlink(d / "link") == "file"
        assert stat.S_ISLNK(os.lstat(d / "link").st_mode)
        fi = os.lstat(d / "fifo")
        assert stat.S_ISFIFO(fi.st_mode) and stat.S_IMODE(fi.st_mode) == 0o640
        assert os.getxattr(f, "user.one") == b"\x00\x01binary\xff"
        assert os.getxattr(f, "user.two") == b"second"
        assert sorted(os.listxattr(f)) == ["user.one", "user.two"]
        assert os.getxattr(sub, "user.dirattr") == b"on a dir"
        assert os.stat(d / "empty").st_size == 0
        assert (d / "renamed" / "r2" / "deep").read_bytes() == b"deep"
        assert not (d / "r1").exists()
        sr = os.stat(d / "renamed")
        assert (sr.st_atime_ns, sr.st_mtime_ns) == (ATIME + 2, MTIME + 2)
        sdd = os.stat(d)
        assert (sdd.st_atime_ns, sdd.st_mtime_ns) == (ATIME + 3, MTIME + 3)
        assert sorted(os.listdir(d)) == ["empty", "fifo", "file", "link", "renamed", "subdir"]

    check()
    remount_empty_cache(m)
    check()


def test_root_attributes_persist(m):
    before = os.stat(m.mountpoint)
    os.chmod(m.mountpoint, 0o750)
    os.utime(m.mountpoint, ns=(ATIME, MTIME))
    try:
        remount_empty_cache(m)
        st = os.stat(m.mountpoint)
        assert stat.S_IMODE(st.st_mode) == 0o750
        assert (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
    finally:
        os.chmod(m.mountpoint, stat.S_IMODE(before.st_mode) or 0o755)


# -- function-scoped mounts: durability of empty files, foreign objects --------------------------
def _file_keys(s3, bucket: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return [k for k in keys if not k.startswith(".s3encfs/") and not k.endswith("/")]


@pytest.mark.parametrize("mode", MODES)
def test_create_without_write_is_durable(mode, bucket, s3, mount_factory):  # noqa: F811
    mt = mount_factory(bucket, mode)
    fd = os.open(mt.mountpoint / "empty", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    mt.umount()
    keys = _file_keys(s3, bucket)
    assert len(keys) == 1, keys
    head = s3.head_object(Bucket=bucket, Key=keys[0])
    if mode == "none":
        assert keys == ["empty"]
        assert head["ContentLength"] == 0
    shutil.rmtree(mt.cache_dir)
    mt.start()
    assert os.listdir(mt.mountpoint) == ["empty"]
    assert os.stat(mt.mountpoint / "empty").st_size == 0
    assert (mt.mountpoint / "empty").read_bytes() == b""


def test_foreign_objects_appear(bucket, s3, mount_factory):  # noqa: F811
    s3.put_object(Bucket=bucket, Key="other/x.txt", Body=b"from another tool")
    s3.put_object(Bucket=bucket, Key="top.txt", Body=b"top")
    lm = s3.head_object(Bucket=bucket, Key="other/x.txt")["LastModified"].timestamp()
    mt = mount_factory(bucket, "none")
    root = mt.mountpoint
    assert sorted(os.listdir(root)) == ["other", "top.txt"]
    sd = os.stat(root / "other")
    assert stat.S_ISDIR(sd.st_mode) and stat.S_IMODE(sd.st_mode) == 0o755
    assert os.listdir(root / "other") == ["x.txt"]
    sf = os.stat(root / "other" / "x.txt")
    assert stat.S_ISREG(sf.st_mode) and stat.S_IMODE(sf.st_mode) == 0o644
    assert sf.st_size == len(b"from another tool")
    assert abs(sf.st_mtime - lm) < 1.0
    assert (sf.st_uid, sf.st_gid) == (os.getuid(), os.getgid())
    assert (root / "other" / "x.txt").read_bytes() == b"from another tool"
    # and it can be modified and renamed like any other file
    with open(root / "other" / "x.txt", "ab") as fh:
        fh.write(b"!")
    os.rename(root / "other", root / "other2")
    mt.umount()
    body = s3.get_object(Bucket=bucket, Key="other2/x.txt")["Body"].read()
    assert body == b"from another tool!"


def test_namespace_changes_persist_across_remount(m, d):
    """Renames (uploaded or still pending, replacing or not), unlinks and truncates as S3 sees
    them: after a remount with an empty cache the directory holds exactly the expected tree."""
    (d / "up-a").write_bytes(b"uploaded a")
    (d / "up-b").write_bytes(b"uploaded b")
    (d / "up-c").write_bytes(b"uploaded c")
    (d / "victim").write_bytes(b"old victim")
    (d / "gone").write_bytes(b"to be unlinked")
    (d / "trunc").write_bytes(os.urandom(200_000))
    m.flush()  # these are in S3 now
    os.rename(d / "up-a", d / "renamed-a")  # uploaded -> free name
    os.rename(d / "up-b", d / "victim")  # uploaded -> over an uploaded file
    (d / "pending").write_bytes(b"pending one")
    os.rename(d / "pending", d / "renamed-pending")  # not yet uploaded -> free name
    (d / "pending2").write_bytes(b"pending two")
    os.rename(d / "pending2", d / "up-c")  # not yet uploaded -> over an uploaded file
    os.unlink(d / "gone")
    keep = (d / "trunc").read_bytes()[:777]
    os.truncate(d / "trunc", 777)
    expect = {"renamed-a": b"uploaded a", "victim": b"uploaded b",
              "renamed-pending": b"pending one", "up-c": b"pending two", "trunc": keep}

    def check() -> None:
        assert sorted(os.listdir(d)) == sorted(expect)
        for name, data in expect.items():
            assert (d / name).read_bytes() == data, name

    check()
    remount_empty_cache(m)
    check()


def test_truncate_uploaded_file_across_remount(m, d):
    """Grow / shrink-then-grow files whose content is already an S3 object (not in staging)."""
    a, b = os.urandom(100_000), os.urandom(300_000)
    (d / "grow").write_bytes(a)
    (d / "shrink-grow").write_bytes(b)
    m.flush()  # uploaded
    remount_empty_cache(m)  # nothing local any more: the base is the S3 object
    os.truncate(d / "grow", 250_000)
    os.truncate(d / "shrink-grow", 70_000)
    os.truncate(d / "shrink-grow", 200_000)
    with open(d / "grow", "r+b") as f:  # a write inside the grown zero area
        f.seek(240_000)
        f.write(b"W")
    expect = {"grow": a + bytes(140_000) + b"W" + bytes(9_999),
              "shrink-grow": b[:70_000] + bytes(130_000)}
    for name, data in expect.items():
        assert (d / name).read_bytes() == data, name
    remount_empty_cache(m)
    for name, data in expect.items():
        assert (d / name).read_bytes() == data, name
