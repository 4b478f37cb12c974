"""Client format v1 objects (as written before format v2) still read on a real SeaweedFS mount;
`s3encfs rekey` migrates them to v2 and `rekey --new-data-keys` re-encrypts under fresh keys.

The v1 objects are written here byte for byte the way the v1 writer did (the codec with
``format_version=1``: tests/vectors/format_v1.json proves those bytes unchanged), including a
sealed directory index holding a subdirectory's attributes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from typing import Any

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

from s3encfs.crypto.client_codec import ClientCodec
from s3encfs.crypto.envelope import encrypt_object
from s3encfs.fs.listing import DirIndex
from s3encfs.keys.keyring import Keyring
from s3encfs.store.layout import Attrs, Layout, attrs_to_meta

FILES = {("old.txt",): b"written by format v1\n", ("dir", "old2.bin"): os.urandom(150_000)}


def write_v1_tree(s3: Any, bucket: str, env: dict[str, str]) -> Layout:
    key = Keyring(environ=env).get("default")
    codec = ClientCodec({key.info.key_id: key.secret}, key.info.key_id, format_version=1)
    layout = Layout("", codec)
    t = 1_700_000_000 * 10**9
    s3.put_object(Bucket=bucket, Key=layout.dir_prefix(("dir",)), Body=b"")
    files: dict[tuple[str, ...], dict[str, tuple[str, dict[str, str]]]] = {(): {}, ("dir",): {}}
    for parts, data in FILES.items():
        cipher, meta = codec.new_object()
        attrs = Attrs(stat.S_IFREG | 0o640, 0, 0, len(data), t, t, t)
        meta = {**meta, **codec.seal_attrs(meta, attrs_to_meta(attrs))}
        assert meta["s3encfs-v"] == "1"
        k = layout.file_key(parts)
        etag = s3.put_object(Bucket=bucket, Key=k, Body=encrypt_object(cipher, data),
                             Metadata=meta)["ETag"].strip('"')
        files[parts[:-1]][codec.encode_name("/".join(parts[:-1]), parts[-1])] = (etag, meta)
    dir_attrs = attrs_to_meta(Attrs(stat.S_IFDIR | 0o750, 0, 0, 0, t, t, t))
    for d, entries in files.items():
        dirs = {codec.encode_name("", "dir"): dir_attrs} if d == () else {}
        ikey = layout.index_key(d)
        blob = codec.seal_blob("idx:" + ikey, DirIndex(entries, dirs, None).to_bytes())
        s3.put_object(Bucket=bucket, Key=ikey, Body=blob)
    # the keycheck, as every mount of the v1 era wrote it on first use
    check = {"v": 1, "name_key_id": getattr(codec, "name_key_id", None)}
    s3.put_object(Bucket=bucket, Key=".s3encfs/keycheck",
                  Body=codec.seal_blob("keycheck", json.dumps(check).encode()))
    return layout


def versions(s3: Any, bucket: str, layout: Layout) -> dict[tuple[str, ...], tuple[str, str]]:
    out = {}
    for parts in FILES:
        meta = s3.head_object(Bucket=bucket, Key=layout.file_key(parts))["Metadata"]
        out[parts] = (meta["s3encfs-v"], meta["s3encfs-oid"])
    return out


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*S3ENCFS, *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_tree(m: Any) -> None:
    for parts, data in FILES.items():
        p = m.mountpoint.joinpath(*parts)
        assert p.read_bytes() == data, parts
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert stat.S_IMODE((m.mountpoint / "dir").stat().st_mode) == 0o750


@pytest.mark.timeout(900)  # two rekeys, three checks and two mounts (slow on a loaded machine)
def test_v1_objects_read_and_migrate_to_v2(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                          mount_factory: Any) -> None:  # noqa: F811
    layout = write_v1_tree(s3, bucket, keyenv)
    out = run(keyenv, "check", f"s3://{bucket}", "--encryption", "client", "--data").stdout
    assert "2 objects in client format v1" in out, out
    m = mount_factory(bucket, "client")
    read_tree(m)
    m.umount()
    before = versions(s3, bucket, layout)
    assert {v for v, _oid in before.values()} == {"1"}

    out = run(keyenv, "rekey", f"s3://{bucket}", "--encryption", "client").stdout
    assert "re-encrypted 2" in out  # the two v1 files; markers and blobs are already current
    after = versions(s3, bucket, layout)
    assert {v for v, _oid in after.values()} == {"2"}
    assert all(after[p][1] != before[p][1] for p in FILES)  # fresh data keys and object ids
    again = run(keyenv, "rekey", f"s3://{bucket}", "--encryption", "client").stdout
    assert "re-encrypted 0" in again  # resumable / idempotent: nothing left to do
    run(keyenv, "check", f"s3://{bucket}", "--encryption", "client", "--data")

    run(keyenv, "rekey", f"s3://{bucket}", "--encryption", "client", "--new-data-keys")
    fresh = versions(s3, bucket, layout)
    assert all(fresh[p][1] != after[p][1] and fresh[p][0] == "2" for p in FILES)
    m2 = mount_factory(bucket, "client", name="m2")
    read_tree(m2)
    m2.umount()
    run(keyenv, "check", f"s3://{bucket}", "--encryption", "client", "--data")
