"""`check` and `rekey` without ``--key``: use the keyring's master key the bucket records.

The keycheck blob's header names, in clear, the id of the master key that sealed it (see
`crypto/blobs.seal_blob`; `rekey` re-seals it with the current key). That id is only a hint:
the key is still proven by opening the keycheck (`mount.check_master_key`), so a tampered header
can at worst pick a key that is then refused. No keycheck, or a key given: nothing is chosen
and the command keeps its default (``default``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from s3encfs.keynames import label


def recorded_master_key(cfg: Any, bucket: str, prefix: str) -> tuple[str, str] | None:
    """(name, message) of the keyring's master key that sealed the bucket's keycheck, when the
    config names no key in a client mode; None when there is nothing to choose (a key is given,
    not a client mode, no keycheck: the caller keeps its default). MountError when the bucket
    records a key the keyring does not hold."""
    from s3encfs.mount import MountError

    kid = _keycheck_key_id(cfg, bucket, prefix)
    if kid is None:
        return None
    from s3encfs.keys.keyring import Keyring

    ring = Keyring(cfg.keyring) if cfg.keyring else Keyring()
    try:
        infos = ring.list()
    except Exception:  # reported below as "not in the keyring"
        infos = []
    for info in infos:
        if info.key_id == kid and info.kind == "master":
            return info.name, (f"using master key {label(kid, {kid: info.name})}, which "
                               f"s3://{bucket}/{prefix}'s keycheck names (no --key given)")
    raise MountError(
        f"wrong master key for s3://{bucket}/{prefix}: it is encrypted with master key id "
        f"{kid}, which is not in the keyring {ring.directory} (import it with `s3encfs key "
        "import`, or name the key with --key NAME)", 78)


def _keycheck_key_id(cfg: Any, bucket: str, prefix: str) -> str | None:
    """The master key id in the keycheck's clear header; None when no key is to be chosen
    (a key given, not a client mode, no keycheck, no id)."""
    from s3encfs.config import parse_encryption
    from s3encfs.keycheck import KEYCHECK
    from s3encfs.mount import build_codec_and_policy
    from s3encfs.store.errors import NotFound
    from s3encfs.store.s3 import ObjectStore

    client, sse, sse_key = parse_encryption(cfg.encryption)
    if cfg.key or not client:
        return None
    plain = dataclasses.replace(  # the SSE part alone: the keycheck may be stored under SSE-C
        cfg, encryption=(f"{sse}:{sse_key}" if sse_key else sse) if sse else "none")
    _codec, policy = build_codec_and_policy(plain)
    store = ObjectStore(bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                        profile=cfg.profile, sse=policy)
    try:
        body, _info = store.get(prefix + KEYCHECK)
    except NotFound:
        return None
    from s3encfs.crypto.blobs import blob_key_id

    return blob_key_id(body)


def use_recorded_key(cfg: Any, bucket: str, prefix: str) -> Any:
    """`cfg` with ``key`` set to the recorded master key (saying so on stderr), else `cfg`."""
    import click

    picked = recorded_master_key(cfg, bucket, prefix)
    if picked is None:
        return cfg
    click.echo(picked[1], err=True)
    return dataclasses.replace(cfg, key=picked[0])
