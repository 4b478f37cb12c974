"""``--encryption s3ec``: the keyrings a mount's configuration names, and its store.

Writing key (the first one): the first `key` name from the local keyring (raw AES-256, kind
``s3ec-aes``, or RSA, kinds ``s3ec-rsa`` / public-only ``s3ec-rsa-pub``), else the KMS key, else
the first RSA PEM. All of them read. The material
description of a raw key is ``{"s3encfs-key": NAME}`` unless the key name is given as
``NAME{json}`` — e.g. ``app{"kms_cmk_id":"x"}`` or ``legacy{}`` for objects a Java/Go application
wrote with its own description (reads pick keys by it, never by trial).
"""

from __future__ import annotations

import json
from typing import Any

from s3encfs.config import MountConfig
from s3encfs.crypto.s3ec_keyrings import AesKeyring, Keyring, KmsKeyring, RsaKeyring, S3ECKeys


class S3ECSetupError(ValueError):
    pass


def _name_and_description(spec: str) -> tuple[str, dict[str, str]]:
    name, brace, rest = spec.partition("{")
    if not brace:
        return name, {"s3encfs-key": name}
    try:
        desc = json.loads("{" + rest)
    except ValueError:
        raise S3ECSetupError(f"bad material description in key {spec!r}") from None
    if not isinstance(desc, dict) or not all(isinstance(v, str) for v in desc.values()):
        raise S3ECSetupError(f"material description of {name!r} must map strings to strings")
    return name, desc


def parse_context(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise S3ECSetupError(f"bad KMS encryption context item {item!r} (want k=v)")
        out[k.strip()] = v.strip()
    return out


def build_keys(cfg: MountConfig, load_secret: Any) -> S3ECKeys:
    """`load_secret(name) -> bytes` reads one keyring key (mount.load_keys)."""
    rings: list[Keyring] = []
    for spec in [s for s in _split_keys(cfg.key) if s]:
        name, desc = _name_and_description(spec)
        secret = load_secret(name)
        rings.append(AesKeyring(name, secret, desc) if len(secret) == 32 else
                     RsaKeyring(name, _rsa_from_der(name, secret), desc))
    if cfg.s3ec_kms_key:
        import boto3

        session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
        ids = [k.strip() for k in cfg.s3ec_kms_key.split(",") if k.strip()]
        rings.append(KmsKeyring(session.client("kms"), ids[0],  # NEW,OLD: rotation
                                parse_context(cfg.s3ec_kms_context), older=ids[1:]))
    for path in [p for p in (cfg.s3ec_rsa_key or "").split(",") if p]:
        try:
            with open(path, "rb") as f:
                pem = f.read()
        except OSError as exc:
            raise S3ECSetupError(f"cannot read RSA key {path}: {exc.strerror}") from None
        rings.append(RsaKeyring.from_pem(path, pem, {}))
    if not rings:
        raise S3ECSetupError("s3ec mode needs a key: --key NAME (kind s3ec-aes), "
                             "--s3ec-kms-key ID or --s3ec-rsa-key PEM")
    try:
        return S3ECKeys(rings, version=cfg.s3ec_version)  # legacy CBC: never through the mount
    except ValueError as exc:
        raise S3ECSetupError(str(exc)) from None


def _rsa_from_der(name: str, der: bytes) -> Any:
    """A keyring key of kind s3ec-rsa (PKCS#8 DER) or s3ec-rsa-pub (SubjectPublicKeyInfo)."""
    from s3encfs.keys.filestore import KeyringError
    from s3encfs.keys.rsakeys import load

    for kind in ("s3ec-rsa", "s3ec-rsa-pub"):
        try:
            return load(kind, der)
        except KeyringError:
            continue
    raise S3ECSetupError(f"key {name!r} is neither a 32-byte AES key nor an RSA key")


def _split_keys(text: str | None) -> list[str]:
    """Comma-separated key names; commas inside a {json} description do not split."""
    out, depth, cur = [], 0, ""
    for ch in text or "":
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out
