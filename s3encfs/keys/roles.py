"""Key roles: a client master key and an SSE-C key are never the same key.

A master key must stay on this machine; an SSE-C key is sent to the provider with every request.
Using one secret in both roles would hand the provider the root of the client-side encryption,
so a mount loads its keys through `load_role_keys`, which refuses a key of the wrong kind and a
secret (or key id) that appears in both roles.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from .filestore import Key, KeyringError

ROLES = {"master": "client-side master key", "sse-c": "SSE-C key",
         "s3ec-aes": "S3 Encryption Client AES key", "s3ec-rsa": "S3 Encryption Client RSA key",
         "s3ec-rsa-pub": "S3 Encryption Client RSA public key",
         "s3ec": "S3 Encryption Client key"}
#: roles any of several kinds can fill (`--key` in s3ec mode: AES or RSA)
ROLE_KINDS = {"s3ec": ("s3ec-aes", "s3ec-rsa", "s3ec-rsa-pub")}


class KeyRoleError(KeyringError):
    """A key used in a role it was not made for, or one key in two roles."""


def check_role(key: Key, role: str) -> Key:
    """`key` if its kind is `role`; KeyRoleError naming the key and both kinds otherwise."""
    if key.info.kind not in ROLE_KINDS.get(role, (role,)):
        kind = ROLES.get(key.info.kind, key.info.kind)
        raise KeyRoleError(
            f"key {key.info.name!r} (id {key.info.key_id}) is a {kind}, not a {ROLES[role]}; "
            "refusing to use it as one "
            "(create one with: s3encfs key create NAME --kind "
            f"{' or '.join(ROLE_KINDS.get(role, (role,)))})"
        )
    return key


def check_disjoint(masters: Sequence[Key], ssec: Sequence[Key]) -> None:
    """Refuse one key (same id or same secret) in both the master and the SSE-C role."""
    for m in masters:
        for s in ssec:
            if m.info.key_id == s.info.key_id or hmac.compare_digest(m.secret, s.secret):
                raise KeyRoleError(
                    f"key {m.info.name!r} would be both the client master key and the SSE-C key "
                    f"({s.info.name!r}): the SSE-C key is sent to the server with every request,"
                    " so it must never be a master key; use two different keys"
                )
