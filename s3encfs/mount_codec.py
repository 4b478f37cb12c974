"""What a mount encrypts with: master keys and SSE-C keys loaded, the codec and SSE policy
built from them, an s3ec store, and the proof (keycheck) that the master key is the bucket's.

Split out of mount.py (issue 11: one job per module); `s3encfs.mount` re-exports these names.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from s3encfs import keynames
from s3encfs.codec import Codec, IdentityCodec
from s3encfs.config import MountConfig, is_s3ec, parse_encryption
from s3encfs.exitcodes import MountError

log = logging.getLogger("s3encfs.mount")


def load_keys(cfg: MountConfig, names: list[str],
              role: str = "master") -> list[tuple[str, str, bytes]]:
    """(name, key_id, secret) for each key name, from the keyring (never logged); every key must
    be of kind `role` (a master key is never an SSE-C key, see keys/roles.py)."""
    from s3encfs.keys.keyring import Keyring, KeyringError
    from s3encfs.keys.passphrase import PassphraseError
    from s3encfs.keys.roles import check_role

    ring = Keyring(cfg.keyring) if cfg.keyring else Keyring()
    keynames.remember(ring.directory)  # error lines name this keyring's key ids
    out = []
    for name in names:
        try:
            key = check_role(ring.get(name), role)
        except (KeyringError, PassphraseError) as exc:
            hint = ""
            if name == "default" and not cfg.key and "no key named" in str(exc):
                hint = " — name the master key with --key NAME (or key = in the config)"
            from s3encfs.keys.filestore import WrongPassphrase

            raise MountError(f"{exc}{hint}", 77 if isinstance(exc, WrongPassphrase) else 78) \
                from None
        out.append((key.info.name, key.info.key_id, key.secret))
    return out


def build_codec_and_policy(cfg: MountConfig) -> tuple[Codec, Any]:
    from s3encfs.store.sse import check_transport, parse_policy

    try:
        client, sse, sse_key = parse_encryption(cfg.encryption)
    except ValueError as exc:
        raise MountError(str(exc)) from None
    codec: Codec = IdentityCodec()
    if is_s3ec(cfg.encryption):
        from s3encfs.crypto.s3ec_codec import S3ECCodec

        codec = S3ECCodec()
    if client:
        from s3encfs.crypto.client_codec import ClientCodec

        names = [n for n in (cfg.key or "default").split(",") if n]
        keys = load_keys(cfg, names)
        codec = ClientCodec({kid: secret for _n, kid, secret in keys}, keys[0][1],
                            encrypt_names=not cfg.plain_names)
    ssec: list[tuple[str, bytes]] | None = None
    spec = "none"
    if sse:
        spec = sse if not sse_key or sse == "sse-c" else f"{sse}:{sse_key}"
        if sse == "sse-c":
            assert sse_key is not None
            ssec = [(kid, secret) for _n, kid, secret in
                    load_keys(cfg, [n for n in sse_key.split(",") if n], "sse-c")]
            if client:
                _check_disjoint(keys, ssec)
    try:
        policy = parse_policy(spec, bucket_key=cfg.bucket_key, ssec_keys=ssec,
                              read_unencrypted=cfg.read_unencrypted)
        check_transport(policy, cfg.endpoint_url, cfg.allow_insecure_http)
    except ValueError as exc:
        raise MountError(str(exc)) from None
    return codec, policy


def _check_disjoint(masters: list[tuple[str, str, bytes]], ssec: list[tuple[str, bytes]]) -> None:
    from s3encfs.keys.filestore import Key, KeyInfo
    from s3encfs.keys.roles import KeyRoleError, check_disjoint

    try:
        check_disjoint([Key(KeyInfo(n, kid, "master", ""), s) for n, kid, s in masters],
                       [Key(KeyInfo(kid, kid, "sse-c", ""), s) for kid, s in ssec])
    except KeyRoleError as exc:
        raise MountError(str(exc)) from None


def s3ec_store(cfg: MountConfig, bucket: str, store_args: dict[str, Any],
               as_of: float | None = None) -> Any:
    """``--encryption s3ec``: the store that reads and writes S3 Encryption Client objects
    (with `as_of`, a read-only view of them as of that time)."""
    from s3encfs.s3ec_setup import S3ECSetupError, build_keys
    from s3encfs.store.s3ec import S3ECStore
    from s3encfs.store.s3ec_asof import S3ECAsOfStore

    if as_of is not None:
        store_args = {**store_args, "as_of": as_of}
    try:
        keys = build_keys(cfg, lambda name: load_keys(cfg, [name], role="s3ec")[0][2])
    except S3ECSetupError as exc:
        raise MountError(str(exc)) from None
    cls = S3ECStore if as_of is None else S3ECAsOfStore
    return cls(bucket, s3ec=keys, spool_dir=os.path.join(cfg.effective_cache_dir, "s3ec"),
               unauthenticated_ranges=cfg.s3ec_unauthenticated_ranges,
               view_bytes=cfg.cache_size, **store_args)


def check_master_key(store: Any, codec: Codec, prefix: str, *, may_write: bool = False,
                     init: bool = False) -> Codec:
    """Refuse a wrong master key before anything is served (see keycheck.py: the keycheck is
    written only when `may_write` and the prefix is empty, or with `init`)."""
    from s3encfs.keycheck import KeyCheckError, NamesMigrating, name_scheme, verify

    if codec.name != "client":
        return codec
    try:
        info = verify(store, codec, prefix, may_write=may_write, init=init) or {}
        scheme = name_scheme(info)  # crypto/names.py: as the bucket's names were written
    except NamesMigrating as exc:
        raise MountError(f"s3://{store.bucket}/{prefix}: {exc}") from None
    except KeyCheckError as exc:
        raise MountError(str(exc)) from None
    name_key = info.get("name_key_id")
    if (name_key and name_key != getattr(codec, "name_key_id", name_key)) or (
            codec.encrypts_names and scheme != getattr(codec, "name_scheme", 1)):
        from s3encfs.crypto.client_codec import ClientCodec

        assert isinstance(codec, ClientCodec)
        keys = {kid: codec.keys.get(kid) for kid in codec.keys.ids()}
        name_key = name_key or codec.name_key_id
        if name_key not in keys:
            raise MountError(f"names in this bucket are encrypted with master key id {name_key},"
                             " which is not in this mount's keys (give it after the current "
                             "one: --key CURRENT,OLD)")
        if name_key != codec.name_key_id:
            log.info(keynames.annotate(f"names here are encrypted with master key id "
                                       f"{name_key} (recorded in the keycheck), not the "
                                       f"current key {codec.current}"))
        codec = ClientCodec(keys, codec.current, encrypt_names=codec.encrypts_names,
                            name_key_id=name_key, name_scheme=scheme)
    return codec
