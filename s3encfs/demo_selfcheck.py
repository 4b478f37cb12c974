"""`make run --check` (python -m s3encfs.demo --check): a round trip through the demo mount."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from s3encfs.demo_host import DemoError, say

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def check_through_mount(mountpoint: Path, s3: S3Client, bucket: str) -> None:
    """Write + fsync + read a file through the mount; S3 must hold only ciphertext."""
    token = secrets.token_hex(8)
    name = f"demo-check-{token}.txt"
    body = (f"s3encfs demo check {token}\n" * 64).encode()
    path = mountpoint / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)  # returns once the object is in S3
    finally:
        os.close(fd)
    if path.read_bytes() != body:
        raise DemoError("read back through the mount differs from what was written")
    if name not in os.listdir(mountpoint):
        raise DemoError(f"{name} missing from the directory listing")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    if any(token in k for k in keys):
        raise DemoError("a file name appears in plaintext in the bucket")
    needle = token.encode()
    for k in keys:
        if needle in s3.get_object(Bucket=bucket, Key=k)["Body"].read():
            raise DemoError(f"object {k} holds plaintext")
    data_objects = [k for k in keys if not k.startswith(".s3encfs/")]
    if not data_objects:
        raise DemoError("no data object in the bucket after fsync")
    path.unlink()
    say(f"check: wrote, fsynced and read {len(body)} bytes through the mount; "
        f"the bucket holds {len(keys)} objects, none with plaintext")
