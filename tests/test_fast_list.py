"""A cold tree walk lists whole subtrees (one LIST per 1,000 keys, split per directory):
it must show exactly what per-directory LISTs show, with far fewer requests."""

# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from mounting import keyenv, mount_factory, tree_hashes  # noqa: F401


@pytest.fixture
def proxy(s3server):
    p = FaultProxy(s3server.endpoint)
    p.start()
    yield p
    p.stop()


def make_tree(root: Path) -> int:
    """Names whose keys interleave in byte order ('a-b/…' and 'a.b/…' sort between 'a' and
    'a/…'), empty and deep directories, unicode; returns the number of directories."""
    dirs = 0
    for top in ("a", "a-b", "a.b", "ä", "z"):
        for sub in ("", "s", "s-t", "s/deep/er"):
            d = root / top / sub if sub else root / top
            d.mkdir(parents=True, exist_ok=True)
            for i in range(3):
                (d / f"f{i}").write_bytes(f"{d.relative_to(root)}/{i}".encode() * (i + 1))
    (root / "empty" / "inner-empty").mkdir(parents=True)
    (root / "a" / "link").symlink_to("s/f0")
    os.chmod(root / "a" / "s", 0o750)
    for _d, ds, _f in os.walk(root):
        dirs += len(ds)
    return dirs


def walk(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for d, ds, fs in os.walk(root):
        for n in ds + fs:
            p = Path(d) / n
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                                             st.st_mtime_ns // 1_000_000_000)
    return out


@pytest.mark.parametrize("mode", ["none", "client"])
def test_cold_walk_with_subtree_listing_matches_per_directory_listing(
        mode, bucket, s3, proxy, mount_factory, tmp_path):
    src = tmp_path / "src"
    ndirs = make_tree(src)
    w = mount_factory(bucket, mode, name="writer", prefix="pre")
    subprocess.run(["rsync", "-a", f"{src}/", f"{w.mountpoint}/"], check=True)
    w.umount()
    if mode == "none":  # a foreign tool's objects: implicit directories, no metadata
        for key in ("pre/foreign/x/1", "pre/foreign/x-y/2", "pre/foreign/x.y/x/3", "other/4"):
            s3.put_object(Bucket=bucket, Key=key, Body=b"foreign")
        ndirs += 4

    walks, hashes, lists = {}, {}, {}
    for label, extra in (("fast", []), ("slow", ["--no-fast-list"])):
        m = mount_factory(bucket, mode, name=label, prefix="pre",
                          extra=["--endpoint-url", proxy.endpoint, *extra])
        proxy.reset_stats()
        walks[label] = walk(m.mountpoint)
        lists[label] = proxy.count("ListObjectsV2")
        hashes[label] = tree_hashes(m.mountpoint)
        m.umount()
        shutil.rmtree(m.cache_dir)
    def comparable(w: dict[str, tuple[int, int, int, int]]) -> dict[str, tuple[int, ...]]:
        # directories without a marker show the mount's start time: differs per mount
        return {k: v[:3] if k.startswith("foreign") else v for k, v in w.items()}

    assert comparable(walks["fast"]) == comparable(walks["slow"])
    assert hashes["fast"] == hashes["slow"]
    assert len(walks["fast"]) > ndirs >= 25
    expected = walk(src)
    assert {k: v for k, v in walks["fast"].items() if k in expected} == expected
    assert lists["slow"] >= ndirs
    assert lists["fast"] <= ndirs // 3, lists


def test_walk_by_path_prefetches_like_readdir(bucket, proxy, mount_factory, tmp_path):
    """rsync into an existing tree never reads a directory: it lstat()s every path. Those
    lookups must also get subtree listings, and rsync must find nothing to send."""
    src = tmp_path / "src"
    ndirs = make_tree(src)
    w = mount_factory(bucket, "none", name="writer")
    subprocess.run(["rsync", "-a", f"{src}/", f"{w.mountpoint}/"], check=True)
    w.umount()
    m = mount_factory(bucket, "none", name="again", extra=["--endpoint-url", proxy.endpoint])
    proxy.reset_stats()
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{m.mountpoint}/"],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == ""
    assert proxy.count("ListObjectsV2") <= ndirs // 3, proxy.count("ListObjectsV2")


def test_a_listing_from_a_subtree_list_is_not_trusted_longer_than_dir_ttl(
        bucket, s3, mount_factory):
    """The split listing is as old as the LIST page it came from: another writer's new file
    must show up --dir-ttl after that page, not --dir-ttl after the directory was first read."""
    for key in ("top/q/s/old", "top/r/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    m = mount_factory(bucket, "none", extra=["--dir-ttl", "3", "--attr-timeout", "0.2"])
    t0 = time.monotonic()
    assert sorted(os.listdir(m.mountpoint / "top")) == ["q", "r"]  # subtree LIST of top/
    time.sleep(2)
    s3.put_object(Bucket=bucket, Key="top/q/s/new", Body=b"2")
    deep = m.mountpoint / "top" / "q" / "s"  # first listed now, from the 2 s old subtree LIST
    assert sorted(os.listdir(deep)) in (["old"], ["new", "old"])
    time.sleep(max(0.0, t0 + 3.8 - time.monotonic()))
    assert sorted(os.listdir(deep)) == ["new", "old"]
