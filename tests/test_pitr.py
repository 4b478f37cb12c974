"""Point-in-time views of a versioned bucket (`mount --as-of`), on the real SeaweedFS.

Three "nights" of `rsync -a --delete` into a mount, with changes, deletions and renames in
between; a local copy of the source is kept after each night, and a mount `--as-of` each
night's end must show exactly that tree (names, bytes, modes, mtimes, symlinks).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_sse_mount import create_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def versioned(s3: S3Client, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """What `diff -r` compares, plus modes, mtimes and symlink targets."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(st.st_mode))
            else:
                out[rel] = ("file", oct(st.st_mode), int(st.st_mtime), p.read_bytes())
    return out


def rsync(src: Path, dst: Path) -> None:
    subprocess.run(["rsync", "-a", "--delete", f"{src}/", f"{dst}/"], check=True)


def flush(mnt: Path, env: dict[str, str]) -> None:
    subprocess.run([*S3ENCFS, "flush", str(mnt)], env=env, check=True, capture_output=True)


def night1(src: Path) -> None:
    (src / "docs" / "old").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("night one\n")
    (src / "docs" / "old" / "b.bin").write_bytes(os.urandom(70_000))
    (src / "photos").mkdir()
    for i in range(5):
        (src / "photos" / f"p{i}.jpg").write_bytes(os.urandom(3000 + i))
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (src / "link").symlink_to("docs/a.txt")
    os.chmod(src / "docs" / "a.txt", 0o600)
    (src / "empty-dir").mkdir()


def night2(src: Path) -> None:
    (src / "docs" / "a.txt").write_text("night two, longer than before\n")
    (src / "photos" / "p1.jpg").unlink()
    (src / "docs" / "old").rename(src / "docs" / "archive")  # a directory rename
    (src / "photos" / "p2.jpg").rename(src / "photos" / "p2-renamed.jpg")
    (src / "new").mkdir()
    (src / "new" / "n.txt").write_text("new on night two\n")
    # (empty directories are never deleted here: SeaweedFS does not version directory markers,
    # so an empty directory deleted later cannot be seen in the past; AWS versions them)
    (src / "empty-too").mkdir()
    big = bytearray((src / "big.bin").read_bytes())
    big[1_000_000:1_000_010] = b"0123456789"
    (src / "big.bin").write_bytes(bytes(big))


def night3(src: Path) -> None:
    shutil.rmtree(src / "new")
    (src / "link").unlink()
    (src / "link").symlink_to("photos/p0.jpg")
    os.chmod(src / "photos" / "p0.jpg", 0o640)
    (src / "docs" / "a.txt").write_text("night three\n")
    (src / "photos" / "p1.jpg").write_bytes(b"p1 is back, different\n")


def create_sse_key(env: dict[str, str]) -> str:
    create_key(env, "ck")
    return "sse-c:ck"


def create_s3ec_key(env: dict[str, str]) -> list[str]:
    subprocess.run([*S3ENCFS, "key", "create", "s3k", "--kind", "s3ec-aes"], env=env,
                   check=True, capture_output=True)
    return ["--key", "s3k"]


@pytest.mark.parametrize("mode", ["none", "client", "sse-c", "s3ec"])
def test_as_of_each_night_shows_that_nights_tree(mode: str, s3: S3Client, bucket: str,
                                                 mount_factory, keyenv: dict[str, str],  # noqa: F811
                                                 tmp_path: Path) -> None:
    versioned(s3, bucket)
    enc = create_sse_key(keyenv) if mode == "sse-c" else mode
    key = create_s3ec_key(keyenv) if mode == "s3ec" else []  # S3EC objects as of each night
    src = tmp_path / "src"
    src.mkdir()
    live = mount_factory(bucket, enc, name="live", extra=key)
    nights: list[tuple[float, dict[str, tuple[object, ...]], Path]] = []
    for n, change in enumerate((night1, night2, night3)):
        change(src)
        rsync(src, live.mountpoint)
        flush(live.mountpoint, keyenv)
        kept = tmp_path / f"kept{n}"
        subprocess.run(["cp", "-a", str(src), str(kept)], check=True)
        nights.append((time.time(), snapshot(src), kept))
        time.sleep(1.2)  # S3's LastModified has whole seconds: the next night is a later one
    assert snapshot(live.mountpoint) == nights[-1][1]
    for i, (when, expected, kept) in enumerate(nights):
        past = mount_factory(bucket, enc, name=f"night{i}", extra=[*key, "--as-of", f"@{when}"])
        got = snapshot(past.mountpoint)
        assert sorted(got) == sorted(expected), f"night {i + 1}: names differ"
        assert got == expected, f"night {i + 1}: contents differ"
        proc = subprocess.run(["diff", "-r", "--no-dereference", str(kept), str(past.mountpoint)],
                              capture_output=True)
        assert proc.returncode == 0, proc.stdout
        with pytest.raises(OSError) as exc:
            (past.mountpoint / "docs" / "a.txt").write_text("nope")
        assert exc.value.errno == errno.EROFS
        past.stop()


def test_as_of_refuses_an_unversioned_bucket(bucket: str, mount_factory) -> None:  # noqa: F811
    m = mount_factory(bucket, "none", extra=["--as-of", "1 hour ago"], start=False)
    with pytest.raises(RuntimeError) as exc:
        m.start()
    assert "--as-of needs bucket versioning" in str(exc.value)


def test_as_of_bad_time_is_a_clear_error(bucket: str, mount_factory) -> None:  # noqa: F811
    m = mount_factory(bucket, "none", extra=["--as-of", "last tuesdayish"], start=False)
    with pytest.raises(RuntimeError) as exc:
        m.start()
    assert "not a point in time" in str(exc.value)


def ransomware(root: Path, victims_to_delete: int = 2) -> None:
    """Every file overwritten with random bytes (same names), a few deleted, one note added."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for p in files:
        p.write_bytes(os.urandom(max(16, p.stat().st_size)))
    for p in files[:victims_to_delete]:
        p.unlink()
    (root / "README-PAY-US.txt").write_text("your files are encrypted\n")


def restore_cmd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*S3ENCFS, "restore", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("enc", ["none", "client", "sse-c", "s3ec"])
def test_restore_after_a_ransomware_night(enc: str, s3: S3Client, bucket: str,
                                          mount_factory, keyenv: dict[str, str],  # noqa: F811
                                          tmp_path: Path) -> None:
    versioned(s3, bucket)
    mode = create_sse_key(keyenv) if enc == "sse-c" else enc
    key = create_s3ec_key(keyenv) if enc == "s3ec" else []
    src = tmp_path / "src"
    src.mkdir()
    night1(src)
    live = mount_factory(bucket, mode, name="live", extra=key)
    rsync(src, live.mountpoint)
    flush(live.mountpoint, keyenv)
    good = snapshot(live.mountpoint)
    when = time.time()
    time.sleep(1.2)
    ransomware(src)  # the host is hit; the nightly backup faithfully copies the damage
    rsync(src, live.mountpoint)
    flush(live.mountpoint, keyenv)
    assert snapshot(live.mountpoint) != good
    live.umount()

    source = f"s3://{bucket}"
    opts = ["--encryption", mode, *key]
    dry = restore_cmd(keyenv, source, "--path", "docs", "--as-of", f"@{when}", *opts,
                      "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore" in dry.stdout and "/docs/a.txt" in dry.stdout, dry.stdout
    first = restore_cmd(keyenv, source, "--as-of", f"@{when}", *opts, "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["restored"] >= 8 and out["deleted"] >= 1 and not out["failed"], out
    again = restore_cmd(keyenv, source, "--as-of", f"@{when}", *opts, "--json")
    assert again.returncode == 0, again.stderr
    out2 = json.loads(again.stdout)
    assert (out2["restored"], out2["deleted"], out2["failed"]) == (0, 0, []), out2

    live2 = mount_factory(bucket, mode, name="after", extra=key)
    assert snapshot(live2.mountpoint) == good
    # history is kept: the ransomware version is still there, one version older
    v = subprocess.run([*S3ENCFS, "versions", str(live2.mountpoint / "photos" / "p0.jpg"),
                        "--json"], env=keyenv, capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stderr
    rows = json.loads(v.stdout)["versions"]
    assert [r["state"] for r in rows] == ["current", "noncurrent", "noncurrent"], rows
    assert rows[0]["size"] == 3000 == rows[2]["size"]
    # and a deleted file shows its delete marker between the restored and the old version
    v = subprocess.run([*S3ENCFS, "versions", str(live2.mountpoint / "docs"), "--json"],
                       env=keyenv, capture_output=True, text=True, timeout=120)
    rows = [r for r in json.loads(v.stdout)["versions"] if r["name"] == "a.txt"]
    assert [r["state"] for r in rows] == ["current", "deleted", "noncurrent"], rows


def test_restore_to_a_local_directory(s3: S3Client, bucket: str,
                                      mount_factory, keyenv: dict[str, str],  # noqa: F811
                                      tmp_path: Path) -> None:
    versioned(s3, bucket)
    src = tmp_path / "src"
    src.mkdir()
    night1(src)
    live = mount_factory(bucket, "client", name="live")
    rsync(src, live.mountpoint)
    flush(live.mountpoint, keyenv)
    good = snapshot(live.mountpoint / "docs")
    when = time.time()
    time.sleep(1.2)
    shutil.rmtree(live.mountpoint / "docs")
    flush(live.mountpoint, keyenv)
    out = tmp_path / "restored"
    # PATH inside the running mount: its settings come from the control socket
    r = restore_cmd(keyenv, str(live.mountpoint / "docs"), "--as-of", f"@{when}", "--to",
                    str(out))
    assert r.returncode == 0, r.stderr + r.stdout
    assert snapshot(out) == good
    assert not (live.mountpoint / "docs").exists()
    # one file, in place, PATH inside the mount
    (live.mountpoint / "photos" / "p0.jpg").write_bytes(b"damaged")
    flush(live.mountpoint, keyenv)
    one = restore_cmd(keyenv, str(live.mountpoint / "photos" / "p0.jpg"), "--as-of", f"@{when}")
    assert one.returncode == 0, one.stderr
    assert "restored 1, deleted 0, unchanged 0" in one.stdout, one.stdout
    live.umount()
    fresh = mount_factory(bucket, "client", name="fresh")
    assert (fresh.mountpoint / "photos" / "p0.jpg").read_bytes() == \
        (src / "photos" / "p0.jpg").read_bytes()


def test_object_lock_protects_every_written_version(s3: S3Client, mount_factory,  # noqa: F811
                                                    keyenv: dict[str, str],  # noqa: F811
                                                    request: pytest.FixtureRequest) -> None:
    from botocore.exceptions import ClientError

    name = f"lock-{os.getpid()}-{request.node.name[-8:].strip('[]_').lower() or 'x'}"[:40]
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    # (a locked bucket cannot be emptied, so this one is left on the test server)
    m = mount_factory(name, "client", extra=["--object-lock", "governance:1d"])
    (m.mountpoint / "dir").mkdir()
    (m.mountpoint / "dir" / "small").write_bytes(b"x" * 1000)
    (m.mountpoint / "big").write_bytes(os.urandom(20 * 1024 * 1024))  # multipart
    flush(m.mountpoint, keyenv)
    versions = s3.list_object_versions(Bucket=name)["Versions"]
    data = [v for v in versions if not v["Key"].endswith("/")]
    assert len(data) >= 5  # 2 files, key check, >= 2 directory indexes
    assert any(".s3encfs/idx/" in v["Key"] for v in data)
    now = time.time()
    for v in data:
        h = s3.head_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
        assert h["ObjectLockMode"] == "GOVERNANCE", v["Key"]
        assert 0.9 * 86400 < h["ObjectLockRetainUntilDate"].timestamp() - now < 1.1 * 86400
    for v in data:  # nobody with the mount's credentials can erase a version
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    # deleting a file still works (a delete marker); the locked version stays underneath
    (m.mountpoint / "dir" / "small").unlink()
    flush(m.mountpoint, keyenv)
    assert not (m.mountpoint / "dir" / "small").exists()
    assert len(s3.list_object_versions(Bucket=name)["DeleteMarkers"]) >= 1

    info = subprocess.run([*S3ENCFS, "info", f"s3://{name}", "--object-lock", "governance:1d"],
                          env=keyenv, capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "versioning:              Enabled" in info.stdout, info.stdout
    assert "object lock:             enabled" in info.stdout
    assert "governance retention for 1 days" in info.stdout
    assert "no lifecycle rule expires noncurrent versions" in info.stdout
    ok = subprocess.run([*S3ENCFS, "check", f"s3://{name}", "--object-lock", "governance:1d"],
                        env=keyenv, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    s3.put_object(Bucket=name, Key="unlocked", Body=b"written by something else")
    bad = subprocess.run([*S3ENCFS, "check", f"s3://{name}", "--object-lock", "governance:1d",
                          "--encryption", "none"], env=keyenv, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "unlocked: retention none, expected GOVERNANCE" in bad.stdout, \
        bad.stdout


def test_object_lock_refuses_an_unversioned_bucket(bucket: str, mount_factory) -> None:  # noqa: F811
    m = mount_factory(bucket, "none", extra=["--object-lock", "governance:1d"], start=False)
    with pytest.raises(RuntimeError) as exc:
        m.start()
    assert "--object-lock needs a versioned bucket" in str(exc.value)
    assert not list(m.mountpoint.iterdir())


def test_as_of_listing_equals_a_live_listing(s3: S3Client, bucket: str, s3server,  # type: ignore[no-untyped-def]
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The view's delimited and undelimited listings, synthesized from ListObjectVersions, are
    what ListObjectsV2 says at the same moment; and a key deleted or not yet written is absent."""
    from s3encfs.store.asof import AsOfStore
    from s3encfs.store.errors import NotFound
    from s3encfs.store.s3 import ObjectStore

    versioned(s3, bucket)
    keys = ["a", "a/", "a/b", "a/b/", "a/b/c", "a/bb", "a0", "b/x/y/z", "b/x/y/", "c d/é"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"" if k.endswith("/") else k.encode())
    s3.put_object(Bucket=bucket, Key="a/b/c", Body=b"second version")
    s3.delete_object(Bucket=bucket, Key="a0")
    time.sleep(1.1)
    when = time.time()
    time.sleep(1.1)
    s3.put_object(Bucket=bucket, Key="a/later", Body=b"after the time")
    s3.delete_object(Bucket=bucket, Key="a/bb")
    for k, val in s3server.env().items():
        monkeypatch.setenv(k, val)
    kw = {"endpoint_url": s3server.env()["AWS_ENDPOINT_URL"]}
    view = AsOfStore(bucket, as_of=when, **kw)
    live = ObjectStore(bucket, **kw)

    def listing(st: ObjectStore, prefix: str, delim: str | None) -> tuple[list, list]:
        objs, prefixes = [], []
        for page in st.list_pages(prefix, delim):
            objs += [(o.key, o.size, o.etag) for o in page.objects]
            prefixes += page.prefixes
        return objs, prefixes

    s3.put_object(Bucket=bucket, Key="a/bb", Body=b"a/bb")  # live: as it was at `when`
    s3.delete_object(Bucket=bucket, Key="a/later")
    for prefix in ("", "a/", "a/b/", "b/", "b/x/", "c d/", "zz/"):
        for delim in ("/", None):
            got, want = listing(view, prefix, delim), listing(live, prefix, delim)
            assert (got[0], sorted(got[1])) == (want[0], sorted(want[1])), (prefix, delim)
    assert view.get("a/b/c")[0] == b"second version"
    assert view.get_range("a/b/c", 7, 14) == b"version"
    with pytest.raises(NotFound):
        view.head("a0")
    with pytest.raises(NotFound):
        AsOfStore(bucket, as_of=when, **kw).head("a/later")  # a fresh view: not via a listing


def test_as_of_mount_gets_its_own_cache_dir_and_is_read_only(tmp_path: Path) -> None:
    """docs/INTERNALS.md, "Point-in-time views": an --as-of mount never shares the live
    mount's cache directory (its journal must never replay into a read-only view; the lock
    must not collide), and it is mounted `ro`."""
    from s3encfs import pitr
    from s3encfs.config import MountConfig

    live = MountConfig(source="s3://b/p", mountpoint="/mnt/x", cache_dir=str(tmp_path / "c"))
    past = MountConfig(source="s3://b/p", mountpoint="/mnt/y", cache_dir=str(tmp_path / "c"),
                       as_of="2026-01-02T03:04:05Z")
    assert pitr.setup(live) is None and live.effective_cache_dir == str(tmp_path / "c")
    assert pitr.setup(past) is not None
    assert past.effective_cache_dir != live.effective_cache_dir
    assert past.effective_cache_dir.startswith(str(tmp_path / "c") + ".as-of-")
    assert "ro" in past.options
