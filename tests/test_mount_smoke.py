"""Smoke: a real mount in plain and client mode, on each S3 client library, round-trips a small
tree (and one 6 MiB file, read back in big ranges) through rsync."""

import os
import subprocess

import pytest
from mounting import keyenv, mount_factory  # noqa: F401

from s3encfs.control import control_socket_path, query


@pytest.mark.parametrize("client", ["crt", "boto3"])
@pytest.mark.parametrize("mode", ["none", "client"])
def test_rsync_round_trip_and_noop_resync(mode, client, bucket, mount_factory,  # noqa: F811
                                          tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("hello")
    (src / "sub" / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024 + 17))
    (src / "empty").write_bytes(b"")
    (src / "link").symlink_to("sub/f.txt")
    m = mount_factory(bucket, mode, extra=["--s3-client", client])
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    assert query(control_socket_path(str(m.mountpoint)))["s3"]["client"] == client
    m.umount()
    import shutil
    shutil.rmtree(m.cache_dir)
    m.start()
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{m.mountpoint}/"],
                         check=True, capture_output=True, text=True).stdout
    assert out == ""
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(m.mountpoint)], check=True)
