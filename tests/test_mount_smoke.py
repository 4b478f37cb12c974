"""Smoke: a real mount in plain and client mode round-trips a small tree through rsync."""

import subprocess

import pytest
from mounting import keyenv, mount_factory  # noqa: F401


@pytest.mark.parametrize("mode", ["none", "client"])
def test_rsync_round_trip_and_noop_resync(mode, bucket, mount_factory, tmp_path):  # noqa: F811
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("hello")
    (src / "empty").write_bytes(b"")
    (src / "link").symlink_to("sub/f.txt")
    m = mount_factory(bucket, mode)
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    import shutil
    shutil.rmtree(m.cache_dir)
    m.start()
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{m.mountpoint}/"],
                         check=True, capture_output=True, text=True).stdout
    assert out == ""
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m.mountpoint)], check=True)
