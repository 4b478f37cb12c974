"""The banner `make run` prints once the demo mount is up."""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING

from s3encfs.demo_host import cli_hint, say

if TYPE_CHECKING:
    from s3encfs.demo import Demo

BUCKET = "demo"
KEY_NAME = "demo"


def banner(demo: Demo, key_created: bool) -> None:
    """What is mounted where, the key's risk and how to look at the raw bucket."""
    env_file = demo.server.state_dir / "aws.env"
    py = shlex.quote(sys.executable)
    raw = (f"(source {shlex.quote(str(env_file))}; {py} -c \"import boto3; "
           f"[print(o['Size'], o['Key']) for o in boto3.client('s3')"
           f".list_objects_v2(Bucket='{BUCKET}').get('Contents', [])]\")")
    rel = os.path.relpath(demo.mountpoint)
    show = rel if not rel.startswith("..") else str(demo.mountpoint)
    say("")
    say("=" * 78)
    say(f" s3encfs demo: s3://{BUCKET} is mounted at {demo.mountpoint}")
    say("=" * 78)
    say(f" mountpoint : {demo.mountpoint}   (try: cp -r /etc/ssh {show}/; ls -l {show})")
    say(f" S3 endpoint: {demo.server.endpoint}   (SeaweedFS, loopback only)")
    say(f" encryption : client-side, master key {KEY_NAME!r}"
        + (" (created just now)" if key_created else ""))
    say(f" key store  : {demo.keys_dir}")
    say("              The demo key has an EMPTY passphrase: anyone who can read that")
    say("              directory can decrypt the bucket. Back the key up with:")
    say(f"              S3ENCFS_KEYRING_DIR={shlex.quote(str(demo.keys_dir))} "
        f"S3ENCFS_PASSPHRASE= S3ENCFS_ALLOW_EMPTY_PASSPHRASE=1 \\\n"
        f"                {cli_hint()} key export {KEY_NAME} "
        "--output demo-key.txt")
    say(f" mount log  : {demo.log_path}")
    say(" raw bucket : what S3 really stores (encrypted names and contents):")
    say(f"   {raw}")
    say("")
    say(" Ctrl-C (or SIGTERM) stops: pending data is uploaded, the mount is unmounted,")
    say(" then the server stops. Data persists in the state dir for the next `make run`.")
    say("=" * 78)
