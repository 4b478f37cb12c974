# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Crash consistency: `kill -9` of the mount (or of the S3 server) in the middle of an rsync.

What counts as "finished": rsync's own `--out-format=%n` lines cannot be used — in a local
transfer they are printed by the *sender* before (or right after sending) a file, well ahead of
the receiver's close()/rename().  Instead, just before the crash the test walks the destination
through the mount: rsync writes each file to a dot-temp name, closes it, sets its mtime and only
then renames it into place, so a final name carrying the new version's mtime is a file whose
close() returned before the crash.  Those must be intact after a remount.  Files that exist in an
old version before the run must afterwards be exactly old or exactly new, never a mix.  No
multipart upload may be left behind once the remount has drained its journal.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mounting import Mount, keyenv, mount_factory, tree_hashes  # noqa: F401

from s3encfs.server import SeaweedS3

NDIRS = 20
PER_DIR = 100  # 2,000 small files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OLD_MTIME = 1_000_000_000
NEW_MTIME = 1_500_000_000


def build_source(root: Path, version: str, *, small: bool = True) -> dict[str, str]:
    """2,000 small files + one versioned 256 KiB file per directory + one 20 MiB file; every
    file's mtime tells the version (OLD_MTIME for "A", NEW_MTIME otherwise)."""
    rnd = random.Random(11)
    out: dict[str, str] = {}
    for d in range(NDIRS):
        ddir = root / f"d{d:02d}"
        ddir.mkdir(parents=True, exist_ok=True)
        if small:
            for i in range(PER_DIR):
                data = rnd.randbytes(rnd.randint(0, 4096))
                (ddir / f"f{i:03d}").write_bytes(data)
                out[f"d{d:02d}/f{i:03d}"] = sha(data)
        vdata = (version.encode() * 1024)[:1024] * 256
        vdata = hashlib.sha256(f"{version}{d}".encode()).digest() + vdata
        (ddir / "m_versioned.bin").write_bytes(vdata)
        out[f"d{d:02d}/m_versioned.bin"] = sha(vdata)
    if small:
        big = random.Random(5).randbytes(20 * 1024**2)
        (root / "d00" / "a_big.bin").write_bytes(big)  # first: multipart in flight at the kill
        out["d00/a_big.bin"] = sha(big)
    mtime = OLD_MTIME if version == "A" else NEW_MTIME
    for rel in out:
        os.utime(root / rel, (mtime, mtime))
    return out


def finished_files(root: Path) -> list[str]:
    """Files under their final name with the new version's mtime: rsync closed them."""
    done = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            try:
                if int(p.lstat().st_mtime) == NEW_MTIME:
                    done.append(str(p.relative_to(root)))
            except FileNotFoundError:
                pass
    return done


def rsync_and_crash(src: Path, dst: Path, crash: Callable[[], None], after: float,
                    recover: Callable[[], None] | None = None) -> tuple[list[str], int]:
    """Start `rsync -a`, crash after at least `after` s and once some files are finished (a
    loaded machine may need longer); return (files finished before the crash, rc)."""
    proc = subprocess.Popen(["rsync", "-a", f"{src}/", f"{dst}/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after)
    finished = finished_files(dst)
    deadline = time.monotonic() + 120
    while not finished and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        finished = finished_files(dst)
    assert proc.poll() is None, "rsync finished before the crash: make the tree bigger"
    crash()
    if recover is not None:
        recover()
    rc = proc.wait(timeout=600)
    return finished, rc


def bucket_hashes(s3, bucket: str) -> dict[str, str]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            k = o["Key"]
            if k.endswith("/") or k.startswith(".s3encfs/"):
                continue
            out[k] = sha(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
    return out


mount_hashes = tree_hashes


def check_state(state: dict[str, str], finished: list[str], new: dict[str, str],
                old: dict[str, str]) -> None:
    missing = [n for n in finished if n not in state]
    assert not missing, f"{len(missing)} finished files lost, e.g. {missing[:5]}"
    wrong = [n for n in finished if state[n] != new[n]]
    assert not wrong, f"{len(wrong)} finished files differ, e.g. {wrong[:5]}"
    torn = [n for n in old if n in state and state[n] not in (old[n], new[n])]
    assert not torn, f"torn versioned files: {torn}"
    versioned_missing = [n for n in old if n not in state]
    assert not versioned_missing, f"versioned files vanished: {versioned_missing}"
    stray = [n for n in state if n not in new]
    # rsync temp files (".name.XXXXXX") of files that were mid-write may legitimately remain
    stray = [n for n in stray if not Path(n).name.startswith(".")]
    # a conflict copy must at least be a whole version of its file (see the xfail test below)
    conflicts = [n for n in stray if ".conflict-" in n]
    for n in conflicts:
        orig = n.split(".conflict-")[0]
        assert state[n] in (new.get(orig), old.get(orig)), f"torn conflict copy {n}"
    if conflicts:
        print(f"conflict copies after replay: {conflicts}")
    stray = [n for n in stray if n not in conflicts]
    assert not stray, f"unexpected files: {stray[:5]}"


@pytest.mark.parametrize("mode", ["none", "client"])
def test_kill_mount_mid_rsync(mode, bucket, s3, mount_factory, tmp_path):
    old_src = tmp_path / "old"
    old = build_source(old_src, "A", small=False)
    new_src = tmp_path / "new"
    new = build_source(new_src, "B")

    m = mount_factory(bucket, mode)
    subprocess.run(["rsync", "-a", f"{old_src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    m.start()

    finished, rc = rsync_and_crash(new_src, m.mountpoint, m.kill, after=1.5)
    print(f"\n[{mode}] rsync rc={rc}, finished {len(finished)} of {len(new)} files before "
          f"kill -9")
    assert rc != 0
    assert 0 < len(finished) < len(new)
    pending = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    print(f"[{mode}] multipart uploads pending right after the kill: {len(pending)}")

    t0 = time.monotonic()
    m.start()  # same cache dir: the journal replays
    m.umount()
    print(f"[{mode}] remount + drain: {time.monotonic() - t0:.1f}s")
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    print(f"[{mode}] multipart uploads left after remount: {len(uploads)} "
          "(asserted in test_no_orphaned_multipart_after_kill)")

    if mode == "none":
        state = bucket_hashes(s3, bucket)
    else:
        shutil.rmtree(m.cache_dir)
        m.start()
        state = mount_hashes(m.mountpoint)
        m.umount()
    check_state(state, finished, new, old)

    # a second complete rsync (--delete: drops the interrupted run's temp file) converges
    t0 = time.monotonic()
    m.start()
    subprocess.run(["rsync", "-a", "--delete", f"{new_src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    print(f"[{mode}] second rsync + drain: {time.monotonic() - t0:.1f}s")
    if mode == "none":
        assert bucket_hashes(s3, bucket) == new
    else:
        shutil.rmtree(m.cache_dir)
        m.start()
        assert mount_hashes(m.mountpoint) == new


def test_no_orphaned_multipart_after_kill(bucket, s3, mount_factory, tmp_path):
    m = mount_factory(bucket, "none")
    data = random.Random(1).randbytes(40 * 1024**2)
    (m.mountpoint / "big.bin").write_bytes(data)
    deadline = time.monotonic() + 30
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads") \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "no multipart upload seen"
    m.kill()
    m.start()
    m.umount()
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [], f"orphaned multipart uploads: {uploads}"


def test_replay_makes_no_false_conflict_copies(bucket, s3, mount_factory, tmp_path):
    m = mount_factory(bucket, "none")
    for i in range(300):
        (m.mountpoint / f"f{i:03d}").write_bytes(b"x" * (i + 1))
    time.sleep(0.6)  # upload delay is 0.3 s: many PUTs are in flight now
    m.kill()
    m.start()
    m.umount()
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", []) if not o["Key"].startswith(".s3encfs/")]
    assert sorted(k for k in keys if ".conflict-" not in k) == [f"f{i:03d}" for i in range(300)]
    conflicts = [k for k in keys if ".conflict-" in k]
    assert conflicts == [], f"false conflict copies: {conflicts}"


@pytest.fixture
def own_server(tmp_path):
    server = SeaweedS3(tmp_path / "weed")
    server.start()
    yield server
    server.stop()


def test_kill_s3_server_mid_rsync(own_server, keyenv, tmp_path):
    client = own_server.client()
    client.create_bucket(Bucket="crash")
    env = {**keyenv, **own_server.env()}
    old_src = tmp_path / "old"
    old = build_source(old_src, "A", small=False)
    new_src = tmp_path / "new"
    new = build_source(new_src, "B")
    m = Mount("s3://crash", tmp_path / "mnt", tmp_path / "cache", env, encryption="none",
              extra=["--endpoint-url", own_server.endpoint], log_path=tmp_path / "m.log")
    m.start()
    try:
        subprocess.run(["rsync", "-a", f"{old_src}/", f"{m.mountpoint}/"], check=True)
        m.umount()
        m.start()
        endpoint = own_server.endpoint

        def restart() -> None:  # from this thread: weed dies with the thread that started it
            time.sleep(8)
            own_server.start()
            assert own_server.endpoint == endpoint

        t0 = time.monotonic()
        finished, rc = rsync_and_crash(new_src, m.mountpoint, own_server.kill, after=1.5,
                                       recover=restart)
        print(f"\nserver killed: rsync rc={rc} after {time.monotonic() - t0:.1f}s, "
              f"finished {len(finished)} of {len(new)}")
        assert finished
        t0 = time.monotonic()
        m.umount(timeout=600)
        print(f"drain after restart: {time.monotonic() - t0:.1f}s")
        uploads = client.list_multipart_uploads(Bucket="crash").get("Uploads", [])
        state = bucket_hashes(client, "crash")
        check_state(state, finished, new, old)
        # and a complete rsync afterwards converges
        m.start()
        subprocess.run(["rsync", "-a", "--delete", f"{new_src}/", f"{m.mountpoint}/"],
                       check=True)
        m.umount()
        assert bucket_hashes(client, "crash") == new
        assert not uploads, f"orphaned multipart upload(s) {[u['Key'] for u in uploads]}"
    finally:
        m.stop()
