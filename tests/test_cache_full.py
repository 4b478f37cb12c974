# ruff: noqa: F811  (pytest fixtures imported from mounting are parameters here)
"""Cache disk full: the cache directory on a 64 MiB tmpfs.  A writer bigger than the space gets
ENOSPC, files closed before are not lost, and writes work again once the big file is gone."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess

import pytest
from mounting import keyenv, mount_factory  # noqa: F401


@pytest.fixture
def small_cache(tmp_path):
    d = tmp_path / "tmpfs-cache"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.parametrize("mode", ["none", "client"])
def test_cache_full_enospc_then_recovers(mode, bucket, s3, mount_factory, small_cache):
    m = mount_factory(bucket, mode, start=False,
                      extra=["--upload-delay", "30"])  # keep closed files staged meanwhile
    m.cache_dir = small_cache / "c"
    m.start()
    small = {f"small{i}": os.urandom(1024 * 1024) for i in range(4)}
    for name, data in small.items():
        (m.mountpoint / name).write_bytes(data)

    chunk = os.urandom(1024 * 1024)
    written = 0
    err: OSError | None = None
    try:
        with open(m.mountpoint / "huge", "wb") as f:
            for _ in range(200):  # 200 MiB > 64 MiB of cache
                f.write(chunk)
                written += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        err = exc
    print(f"\n[{mode}] writer failed after {written >> 20} MiB written: {err!r}")
    assert err is not None, "a 200 MiB file fit into a 64 MiB cache?"
    # (with the kernel write-back cache the error may only show at fsync/close)

    # the mount still serves; the big file is deleted and writes work again
    unlink_err: OSError | None = None
    try:
        os.unlink(m.mountpoint / "huge")
    except FileNotFoundError:
        pass
    except OSError as exc:  # known bug: see the xfail below
        unlink_err = exc
        # free space the other way (the admin grows the disk), then delete
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_cache)], check=True)
        with contextlib.suppress(FileNotFoundError):  # the failed unlink removed the name
            os.unlink(m.mountpoint / "huge")
    (m.mountpoint / "after").write_bytes(b"space again" * 1000)
    for name, data in small.items():
        assert (m.mountpoint / name).read_bytes() == data
    m.umount()
    if mode == "none":
        for name, data in small.items():
            assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == data
        assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"space again" * 1000
    else:
        import shutil
        shutil.rmtree(m.cache_dir)
        m.start()
        for name, data in small.items():
            assert (m.mountpoint / name).read_bytes() == data
        assert (m.mountpoint / "after").read_bytes() == b"space again" * 1000
        m.umount()
    if unlink_err is not None:
        pytest.xfail(f"deleting the big file on a full cache disk failed ({unlink_err!r}): "
                     "unlink -> streamer.discard -> journal.delete_kv raises SQLite 'database "
                     "or disk is full' (a WAL write needs space), and uploads of the already "
                     "closed files fail the same way, so the mount cannot recover by itself; "
                     "it recovered only after the tmpfs was grown")
    if err.errno != errno.ENOSPC:  # everything else held: report the wrong errno as xfail
        pytest.xfail(f"the writer got {errno.errorcode.get(err.errno or 0)} instead of ENOSPC: "
                     "with the staging data filling the disk, close() fails in flush -> "
                     "persist -> SQLite 'database or disk is full', which the handler maps to "
                     "EIO")
