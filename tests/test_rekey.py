"""`s3encfs rekey` on SeaweedFS: SSE-C key rotation through real mounts, interruption + resume,
client master-key rotation (rewrap only), refusal while a mount is active."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

from s3encfs.keys.keyring import Keyring


def create_key(env: dict[str, str], name: str, kind: str = "sse-c") -> tuple[str, bytes]:
    subprocess.run([*S3ENCFS, "key", "create", name, "--kind", kind], env=env, check=True,
                   capture_output=True)
    key = Keyring(env["S3ENCFS_KEYRING_DIR"], environ=env).get(name)
    return key.info.key_id, key.secret


def rekey(env: dict[str, str], bucket: str, *args: str, check: bool = True,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*S3ENCFS, "rekey", f"s3://{bucket}", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def summary(out: str) -> dict[str, int]:
    """Numbers from 'rekey s3://b/: re-encrypted N, already current M, failed F (...)'."""
    line = [x for x in out.splitlines() if x.startswith("rekey s3://")][-1]
    nums = {}
    for label in ("re-encrypted", "already current", "failed"):
        nums[label] = int(line.split(label + " ")[1].split(",")[0].split(" ")[0])
    return nums


def object_keys(s3: Any, bucket: str) -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def ssec_args(secret: bytes) -> dict[str, Any]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": secret}


def test_ssec_rotation_through_mounts(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                      mount_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    a_id, a = create_key(keyenv, "ka")
    b_id, b = create_key(keyenv, "kb")
    src = tmp_path / "src"
    (src / "old" / "deep").mkdir(parents=True)
    (src / "old" / "one.txt").write_text("written with key A\n")
    (src / "old" / "deep" / "two.bin").write_bytes(os.urandom(200_000))
    (src / "old" / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))  # multipart
    m = mount_factory(bucket, "sse-c:ka")
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    m.umount()

    (src / "new").mkdir()
    (src / "new" / "three.txt").write_text("written with key B\n")
    m2 = mount_factory(bucket, "sse-c:kb,ka", name="m2")
    subprocess.run(["rsync", "-a", f"{src}/", f"{m2.mountpoint}/"], check=True)
    assert (m2.mountpoint / "old" / "one.txt").read_text() == "written with key A\n"
    # refused while a mount of this bucket runs on this machine
    busy = rekey(keyenv, bucket, "--encryption", "sse-c:kb,ka", check=False)
    assert busy.returncode != 0 and "is mounted at" in busy.stderr, busy.stderr
    m2.umount()

    by_key = {k: s3.head_object(Bucket=bucket, Key=k, **ssec_args(a))["Metadata"]
              for k in object_keys(s3, bucket) if "one.txt" in k or "big.bin" in k}
    assert by_key and all(md.get("s3encfs-ssec") == a_id for md in by_key.values())

    state = tmp_path / "state"
    out = rekey(keyenv, bucket, "--encryption", "sse-c:kb,ka", "--state-dir", str(state))
    n = summary(out.stdout)
    assert n["failed"] == 0 and n["re-encrypted"] >= 3, out.stdout
    assert not list(state.glob("rekey-*.json")), "finished run leaves no resume state"

    for key in object_keys(s3, bucket):
        if key.endswith("/"):
            continue
        head = s3.head_object(Bucket=bucket, Key=key, **ssec_args(b))
        assert head["Metadata"].get("s3encfs-ssec") == b_id, key
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key=key, **ssec_args(a))

    again = summary(rekey(keyenv, bucket, "--encryption", "sse-c:kb,ka").stdout)
    markers = [k for k in object_keys(s3, bucket) if k.endswith("/")]
    # idempotent: only dir markers (no SSE on SeaweedFS, so never "current") are re-put
    assert again["re-encrypted"] <= len(markers) and again["failed"] == 0, again

    m3 = mount_factory(bucket, "sse-c:kb", name="m3")  # key A removed from the mount
    subprocess.run(["diff", "-r", str(src), str(m3.mountpoint)], check=True)
    m3.umount()


def test_rekey_killed_halfway_then_rerun_finishes(bucket: str, s3: Any,
                                                  keyenv: dict[str, str],  # noqa: F811
                                                  tmp_path: Path) -> None:
    a_id, a = create_key(keyenv, "ka")
    b_id, b = create_key(keyenv, "kb")
    n_obj = 200
    for i in range(n_obj):
        s3.put_object(Bucket=bucket, Key=f"d/f{i:03d}", Body=f"body {i}".encode(),
                      Metadata={"s3encfs-ssec": a_id}, **ssec_args(a))
    state = tmp_path / "state"
    argv = [*S3ENCFS, "rekey", f"s3://{bucket}", "--encryption", "sse-c:kb,ka", "--jobs", "1",
            "--page-size", "10", "--state-dir", str(state)]
    proc = subprocess.Popen(argv, env=keyenv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    position = ""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(state.glob("rekey-*.json"))
            if files:
                try:
                    position = json.loads(files[0].read_text())["last_key"]
                except (ValueError, KeyError, OSError):
                    position = ""
                if position >= "d/f090":
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert position >= "d/f090", f"rekey finished or stalled before it could be killed ({position})"

    def at_b(key: str) -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=key, **ssec_args(b))
            return True
        except ClientError:
            return False

    done = sum(at_b(f"d/f{i:03d}") for i in range(n_obj))
    assert 0 < done < n_obj, done

    out = rekey(keyenv, bucket, "--encryption", "sse-c:kb,ka", "--state-dir", str(state))
    n = summary(out.stdout)
    assert n["failed"] == 0
    # resumed from the saved page, not from the top: fewer than all objects looked at
    assert n["re-encrypted"] == n_obj - done, (n, done)
    assert n["re-encrypted"] + n["already current"] < n_obj, n
    for i in range(n_obj):
        obj = s3.get_object(Bucket=bucket, Key=f"d/f{i:03d}", **ssec_args(b))
        assert obj["Body"].read() == f"body {i}".encode()
        assert obj["Metadata"]["s3encfs-ssec"] == b_id


def test_rekey_switches_sse_mode(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                 mount_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """none -> sse-s3 -> sse-kms: every object ends with the new SSE and still reads."""
    m = mount_factory(bucket, "none")
    (m.mountpoint / "a.txt").write_text("alpha\n")
    (m.mountpoint / "sub").mkdir()
    (m.mountpoint / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    m.umount()
    rekey(keyenv, bucket, "--encryption", "sse-s3")
    for key in object_keys(s3, bucket):
        if not key.endswith("/"):
            assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
    rekey(keyenv, bucket, "--encryption", "sse-kms:alias/s3encfs-test", "--bucket-key")
    for key in object_keys(s3, bucket):
        if not key.endswith("/"):
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head["ServerSideEncryption"] == "aws:kms", key
    shutil.rmtree(m.cache_dir)
    m2 = mount_factory(bucket, "sse-kms:alias/s3encfs-test", name="m2", extra=["--bucket-key"])
    assert (m2.mountpoint / "a.txt").read_text() == "alpha\n"
    assert len((m2.mountpoint / "sub" / "b.bin").read_bytes()) == 100_000
    m2.umount()


def test_client_master_key_rotation(bucket: str, s3: Any, keyenv: dict[str, str],  # noqa: F811
                                    mount_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "a.txt").write_text("alpha\n")
    (src / "dir" / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (src / "top").write_text("top\n")
    m = mount_factory(bucket, "client")
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.mountpoint}/"], check=True)
    m.umount()
    old_id = Keyring(keyenv["S3ENCFS_KEYRING_DIR"], environ=keyenv).get("default").info.key_id
    new_id, _ = create_key(keyenv, "newmaster", kind="master")
    data_before = {}
    for key in object_keys(s3, bucket):
        obj = s3.get_object(Bucket=bucket, Key=key)
        data_before[key] = obj["Body"].read()
        if "s3encfs-kid" in obj["Metadata"]:
            assert obj["Metadata"]["s3encfs-kid"] == old_id

    out = rekey(keyenv, bucket, "--encryption", "client", "--key", "newmaster,default")
    n = summary(out.stdout)
    assert n["failed"] == 0 and n["re-encrypted"] >= 3, out.stdout
    kids = []
    for key in object_keys(s3, bucket):
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        if "s3encfs-kid" in obj["Metadata"]:
            kids.append(obj["Metadata"]["s3encfs-kid"])
            assert body == data_before[key], f"{key}: body rewritten by a rewrap"
        if key.endswith(".s3encfs/keycheck") or "/idx/" in key:
            assert body[6 : 6 + body[5]].decode() == new_id, f"{key} not re-sealed"
    assert kids and set(kids) == {new_id}

    # the naming key (old) is still needed for names: mounting with only the new key is refused
    m_only = mount_factory(bucket, "client", name="only", extra=["--key", "newmaster"],
                           start=False)
    with pytest.raises(RuntimeError) as ei:
        m_only.start()
    # named as the keyring knows it (issue 14), with how to add it
    assert "names in this bucket are encrypted with master key default (id " in str(ei.value)
    assert "--key CURRENT,OLD" in str(ei.value)

    m2 = mount_factory(bucket, "client", name="m2", extra=["--key", "newmaster,default"])
    subprocess.run(["diff", "-r", str(src), str(m2.mountpoint)], check=True)
    (m2.mountpoint / "after.txt").write_text("after rotation\n")
    m2.umount()
    shutil.rmtree(m2.cache_dir)
    m2.start()
    assert (m2.mountpoint / "after.txt").read_text() == "after rotation\n"
    m2.umount()
