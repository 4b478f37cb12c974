"""Client format v2 on real SeaweedFS mounts: attributes fail closed, objects are bound to their
path and to their version (issue 10, "Done when").

Each attack is made through boto3 on the raw bucket while no mount runs, and judged from a fresh
mount with an empty cache: the attacked file must read EIO (never someone else's bytes, never
default attributes), the other files keep reading right.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mounting import Mount, keyenv, mount_factory  # noqa: F401
from test_tamper import STRIDE, Raw

NOBODY = 65534


class Raw2(Raw):
    """`Raw` with paths below the root ("d/f") and whole-object copies."""

    def key(self, name: str) -> str:
        return self.layout.file_key(tuple(name.split("/")))

    def copy_to(self, src: str, dst: str) -> None:
        self.s3.copy_object(Bucket=self.bucket, Key=self.key(dst),
                            CopySource={"Bucket": self.bucket, "Key": self.key(src)})

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(name))

    def drop_indexes(self, expect: bool = True) -> None:
        idx = [k for k in self.snapshot() if k.startswith(".s3encfs/idx/")]
        assert idx or not expect
        if idx:
            self.s3.delete_objects(Bucket=self.bucket,
                                   Delete={"Objects": [{"Key": k} for k in idx]})


def read_errno(path: Path) -> int | bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc.errno or -1


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every local user can traverse (pytest's tmp dirs are 0700 to root)."""
    d = Path(tempfile.mkdtemp(prefix="s3encfs-ao-"))  # the system temp dir, not pytest's
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in d.iterdir():
            if p.is_dir() and not os.path.ismount(p):
                p.rmdir()
        d.rmdir()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
                          capture_output=True, text=True, timeout=60)


def test_stripped_attrs_and_deleted_index_never_open_a_private_file(
        bucket: str, s3: Any, keyenv: dict[str, str], mount_factory: Any,  # noqa: F811
        open_dir: Path, tmp_path: Path) -> None:
    m = mount_factory(bucket, "client")
    root = m.mountpoint
    (root / "private").mkdir(mode=0o700)
    (root / "private" / "secret").write_bytes(b"top secret")
    (root / "private" / "secret").chmod(0o600)
    (root / "private").chmod(0o700)
    (root / "public").mkdir(mode=0o755)
    (root / "public").chmod(0o755)
    (root / "public" / "readme").write_bytes(b"hello")
    (root / "public" / "readme").chmod(0o644)
    m.umount()

    raw = Raw2(s3, bucket, keyenv)
    _body, meta = raw.get("private/secret")
    raw.put_meta("private/secret", {k: v for k, v in meta.items() if k != "s3encfs-attrs"})
    raw.drop_indexes()

    m2 = Mount(f"s3://{bucket}", open_dir / "mnt", tmp_path / "ao-cache", keyenv,
               encryption="client", extra=["-o", "allow_other"],
               log_path=tmp_path / "ao.log").start()
    try:
        mnt = m2.mountpoint
        # the control: another user reaches the mount at all
        assert as_nobody("ls", str(mnt)).returncode == 0
        st = os.stat(mnt / "private")
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)  # not the old 0755 default
        assert st.st_uid == os.getuid()
        r = as_nobody("cat", str(mnt / "private" / "secret"))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stdout)
        assert "top secret" not in r.stdout
        # the directory whose attributes cannot be verified is 0700 too: closed, not widened
        assert as_nobody("cat", str(mnt / "public" / "readme")).returncode != 0
        # the owner reads the stripped object as EIO (never as a 0644 file), the rest reads
        assert read_errno(mnt / "private" / "secret") == errno.EIO
        assert (mnt / "public" / "readme").read_bytes() == b"hello"
    finally:
        m2.stop()
    log = m2.read_log()
    assert raw.key("private/secret") in log  # named by its encoded key
    assert "no sealed attributes" in log


@pytest.mark.timeout(900)  # five mounts: slow on a loaded machine
@pytest.mark.parametrize("index", ["deleted", "kept"])
def test_objects_are_bound_to_their_path(index: str, bucket: str, s3: Any,
                                         keyenv: dict[str, str],  # noqa: F811
                                         mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    root = m.mountpoint
    files = {"a.txt": b"contents of A", "b.txt": b"contents of B", "c.txt": b"contents of C",
             "victim.txt": b"victim", "d1/f.txt": b"in d1", "d2/g.txt": b"in d2",
             "moved-src/h.txt": b"to be moved", "ok.txt": b"untouched"}
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    os.symlink("/etc/passwd", root / "link")
    # our own renames (file, directory) re-seal: they must keep reading after the attacks
    (root / "renamed-from.txt").write_bytes(b"renamed by us")
    m.umount()
    m.start()
    os.rename(root / "renamed-from.txt", root / "d2" / "renamed-to.txt")
    os.rename(root / "d1", root / "d1-renamed")
    m.umount()

    raw = Raw2(s3, bucket, keyenv)
    # swap two whole objects (body + metadata)
    a, b = raw.get("a.txt"), raw.get("b.txt")
    raw.put_body("a.txt", *b)
    raw.put_body("b.txt", *a)
    raw.copy_to("c.txt", "c-copy.txt")  # copy to another name
    raw.copy_to("d2/g.txt", "d1-renamed/g.txt")  # copy into another directory
    raw.copy_to("moved-src/h.txt", "d2/h.txt")  # cross-directory move
    raw.delete("moved-src/h.txt")
    raw.put_body("victim.txt", *raw.get("link"))  # a symlink substituted for a file
    if index == "deleted":
        raw.drop_indexes()

    m2 = mount_factory(bucket, "client", name="m2")
    mnt = m2.mountpoint
    for name in ("a.txt", "b.txt", "c-copy.txt", "d1-renamed/g.txt", "d2/h.txt", "victim.txt"):
        assert read_errno(mnt / name) == errno.EIO, name
    assert not os.path.islink(mnt / "victim.txt")
    # re-sealing the attrs of an object that does not authenticate would launder it: refused
    with pytest.raises(OSError) as ei:
        os.chmod(mnt / "a.txt", 0o644)
    assert ei.value.errno == errno.EIO
    m2.umount()
    log = m2.read_log()
    assert raw.key("c-copy.txt") in log and raw.key("victim.txt") in log
    m2 = mount_factory(bucket, "client", name="m2b")
    mnt = m2.mountpoint
    assert read_errno(mnt / "a.txt") == errno.EIO
    for name in ("c.txt", "d2/g.txt", "ok.txt"):
        assert (mnt / name).read_bytes() == files[name], name
    assert os.readlink(mnt / "link") == "/etc/passwd"
    assert (mnt / "d2" / "renamed-to.txt").read_bytes() == b"renamed by us"
    assert (mnt / "d1-renamed" / "f.txt").read_bytes() == b"in d1"


SIZE = 5 * 65536 + 1000  # 5 full segments + 1000 bytes


def _segs(body: bytes) -> list[bytes]:
    return [body[i:i + STRIDE] for i in range(0, len(body), STRIDE)]


@pytest.mark.timeout(900)  # six mounts
@pytest.mark.parametrize("rewrite", ["partial", "o_trunc"])
def test_versions_cannot_be_spliced(rewrite: str, bucket: str, s3: Any,
                                    keyenv: dict[str, str],  # noqa: F811
                                    mount_factory: Any) -> None:  # noqa: F811
    m = mount_factory(bucket, "client")
    p = m.mountpoint / "f.bin"
    old = os.urandom(SIZE)
    p.write_bytes(old)
    m.umount()
    raw = Raw2(s3, bucket, keyenv)
    body1, meta1 = raw.get("f.bin")

    m.start()
    new = bytearray(old)
    new[3 * 65536 + 10:3 * 65536 + 20] = b"X" * 10  # segment 3 only
    if rewrite == "partial":
        with open(p, "r+b") as f:
            f.seek(3 * 65536 + 10)
            f.write(b"X" * 10)
    else:
        p.write_bytes(bytes(new))
    m.umount()
    body2, meta2 = raw.get("f.bin")
    assert len(body1) == len(body2)
    # a new version has its own data key and object id (v1 kept them across rewrites)
    assert meta2["s3encfs-oid"] != meta1["s3encfs-oid"]
    assert meta2["s3encfs-key"] != meta1["s3encfs-key"]

    attacks = {
        # the old segment 3 spliced into the new version
        "splice-old-into-new": (b"".join(_segs(body2)[:3] + _segs(body1)[3:4] + _segs(body2)[4:]),
                                meta2),
        # the new segment 3 spliced into the old version
        "splice-new-into-old": (b"".join(_segs(body1)[:3] + _segs(body2)[3:4] + _segs(body1)[4:]),
                                meta1),
        "old-body-new-meta": (body1, meta2),
        "new-body-old-meta": (body2, meta1),
    }
    for label, (body, meta) in attacks.items():
        raw.put_body("f.bin", body, meta)
        # the index would vouch for new-body-old-meta (same ETag as the real version: metadata-
        # only tampering is caught by the index); an attacker deletes it
        raw.drop_indexes(expect=False)
        m2 = mount_factory(bucket, "client", name=f"m-{label}")
        assert read_errno(m2.mountpoint / "f.bin") == errno.EIO, label
        m2.umount()
    raw.put_body("f.bin", body2, meta2)  # the real new version still reads
    m3 = mount_factory(bucket, "client", name="m3")
    assert (m3.mountpoint / "f.bin").read_bytes() == bytes(new)
