# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""`s3encfs status` counts FUSE requests per operation (`fuse_requests`): the measure for
cutting the requests a small file costs. Also prints what an rsync of small files costs per
file, for docs/BENCHMARKS.md."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from mounting import keyenv, mount_factory  # noqa: F401

from s3encfs.control import control_socket_path, query

N = 20


def _counts(mnt: Path) -> dict[str, int]:
    st = query(control_socket_path(str(mnt)), "status")
    return dict(st["fuse_requests"])


def test_status_counts_fuse_requests_per_op(bucket, mount_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N):
        (src / f"f{i:02d}.txt").write_bytes(b"x" * (100 + i))
    m = mount_factory(bucket, "none")
    before = _counts(m.mountpoint)
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/d/"], check=True, timeout=120)
    after = _counts(m.mountpoint)
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    delta = {op: n for op, n in delta.items() if n}
    total = sum(delta.values())
    print(f"\nrsync -a of {N} small files: {total} FUSE requests, {total / N:.1f} per file: "
          f"{dict(sorted(delta.items()))}")
    # every file was created, written and released once; each counted where it happened
    assert delta.get("create", 0) >= N
    assert delta.get("write", 0) >= N
    assert delta.get("release", 0) >= N
    assert delta.get("rename", 0) >= N  # rsync writes .f.XXXX then renames it into place
    # what the kernel sends per file with the writeback cache on (docs/BENCHMARKS.md, session
    # 13: 20.3 here, 19 of them per file): no more may come from a change on our side, e.g. an
    # attr or entry timeout of 0, a getattr the kernel re-asks, a lookup that is not cached
    assert total / N <= 21.5, dict(sorted(delta.items()))
    assert delta.get("getxattr", 0) <= N and delta.get("lookup", 0) <= 3.5 * N, delta
    # s3encfs/fuse_loop.py: requests already queued were read without a scheduler pass
    loop = query(control_socket_path(str(m.mountpoint)), "status")["fuse_loop"]
    assert loop["fast"] > 0 and loop["waited"] > 0, loop
    m.umount()


def test_negative_lookups_are_cached_as_long_as_entries(bucket, mount_factory):
    """"No such file" is cached for --attr-timeout (5 s), like a positive entry: rsync asks for
    every new name before it creates it, and again (the receiver's open of a basis file) after
    the first answer's old 1 s had run out on a big tree."""
    m = mount_factory(bucket, "none")
    before = _counts(m.mountpoint).get("lookup", 0)
    assert not (m.mountpoint / "nothing-here").exists()
    time.sleep(1.5)  # past the old 1 s negative-entry timeout, well within 5 s
    assert not (m.mountpoint / "nothing-here").exists()
    assert _counts(m.mountpoint).get("lookup", 0) - before == 1
    # a name created through this mount is seen at once despite the cached negative entry
    (m.mountpoint / "nothing-here").write_bytes(b"now")
    assert (m.mountpoint / "nothing-here").read_bytes() == b"now"
    m.umount()


def test_journal_writes_per_small_file(bucket, mount_factory, tmp_path):
    """What an rsync'd file costs the journal until it is in S3 (issue 16): its row at close,
    the utimensat, chmod and rename of the closed file, the "landed" rewrite — and the rows'
    removal, one statement for a whole directory's index write (was one per file)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N):
        (src / f"f{i:02d}.txt").write_bytes(b"y" * (200 + i))
    m = mount_factory(bucket, "none")
    sock = control_socket_path(str(m.mountpoint))
    before = query(sock, "status")["journal_writes"]
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/d/"], check=True, timeout=120)
    m.flush()
    st = query(sock, "status")
    per_file = (st["journal_writes"] - before) / N
    print(f"\njournal writes per rsync'd file until in S3: {per_file:.2f}")
    assert st["journal_rows"] == 0
    assert per_file <= 5.5, per_file  # 6 when every row was removed by its own statement
    m.umount()
