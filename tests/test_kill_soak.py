# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Issue 15's kill -9 soak: the mount is killed at random moments while rsync copies a tree into
it and an "editor" saves documents the way editors do (write a temp file, rename it over the
name).  After every remount (journal replay) each document holds its newest closed version —
the one whose rename returned before the kill, or the one whose rename was in flight — and at
the end, from an empty cache, the tree is complete and there is not one conflict copy.

The slow tier kills 20 times during an rsync of /usr/include; the normal tier 3 times on a small
generated tree.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mounting import Mount, keyenv, mount_factory, tree_hashes  # noqa: F401

NDOCS = 6
MiB = 1024 * 1024


def small_tree(root: Path, nfiles: int = 200) -> None:
    rnd = random.Random(3)
    for i in range(nfiles):
        p = root / f"d{i % 10}" / f"s{i % 3}" / f"f{i:04d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(rnd.randint(0, 20_000)))
    (root / "d0" / "big.bin").write_bytes(rnd.randbytes(17 * MiB))  # multipart


class Editor(threading.Thread):
    """Saves docs/doc<i> again and again by rename-over; remembers, per doc, the last version
    whose rename returned (`done`) and the one being saved (`trying`)."""

    def __init__(self, mnt: Path, seed: int, done: dict[str, bytes]):
        super().__init__(daemon=True)
        self.mnt, self.rnd, self.done = mnt, random.Random(seed), done
        self.trying: dict[str, bytes] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        docs = self.mnt / "docs"
        k = 0
        while not self.stop.is_set():
            name = f"doc{k % NDOCS}"
            size = 3 * MiB if self.rnd.random() < 0.2 else self.rnd.randint(10, 50_000)
            data = f"{name} edit {k} {time.time()}\n".encode() + self.rnd.randbytes(size)
            tmp = docs / f".{name}.swp"
            self.trying[name] = data
            try:
                tmp.write_bytes(data)
                os.rename(tmp, docs / name)
            except OSError:
                return  # the mount is gone
            self.done[name] = data
            k += 1
            time.sleep(self.rnd.random() * 0.2)


def conflict_names(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".conflict-" in p.name]


def run_soak(m: Mount, src: Path, kills: int, seed: int) -> None:
    rnd = random.Random(seed)
    (m.mountpoint / "docs").mkdir()
    (m.mountpoint / "tree").mkdir()
    done: dict[str, bytes] = {}
    for round_ in range(kills):
        editor = Editor(m.mountpoint, seed * 1000 + round_, done)
        editor.start()
        rsync = subprocess.Popen(["rsync", "-a", f"{src}/", f"{m.mountpoint}/tree/"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5 + rnd.random() * 2.5)
        m.kill()
        rsync.wait(timeout=60)
        editor.stop.set()
        editor.join(timeout=60)
        m.start()  # replay
        for name in set(done) | set(editor.trying):
            p = m.mountpoint / "docs" / name
            got = p.read_bytes() if p.exists() else None
            allowed = {done.get(name), editor.trying.get(name)}
            assert got in allowed, (
                f"round {round_}: docs/{name} is not its newest closed version "
                f"({len(got or b'')} bytes; expected {sorted(len(a or b'') for a in allowed)})")
            if got is not None:
                done[name] = got
        assert conflict_names(m.mountpoint) == [], f"round {round_}"
    subprocess.run(["rsync", "-a", "--delete", f"{src}/", f"{m.mountpoint}/tree/"], check=True,
                   timeout=900)
    m.umount(timeout=900)
    shutil.rmtree(m.cache_dir)
    m.start()
    try:
        assert conflict_names(m.mountpoint) == []
        for name, data in done.items():
            assert (m.mountpoint / "docs" / name).read_bytes() == data, name
        assert tree_hashes(m.mountpoint / "tree") == tree_hashes(src)
    finally:
        m.umount(timeout=900)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_kill9_soak_small(mode, bucket, mount_factory, tmp_path):
    src = tmp_path / "src"
    small_tree(src)
    run_soak(mount_factory(bucket, mode), src, kills=3, seed=7)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", ["none", "client"])
def test_kill9_soak_usr_include(mode, bucket, mount_factory, tmp_path):
    src = Path("/usr/include")
    if not src.is_dir():
        pytest.skip("no /usr/include on this machine")
    run_soak(mount_factory(bucket, mode), src, kills=20, seed=11)
