"""Client mode with encrypted names: plaintext file names never reach the log.

Log calls pass paths as arguments (``log.error("read of %r failed", node.path)``). A
`NameHidingFilter` on the s3encfs log handler rewrites every string argument (and every tuple
of strings, i.e. path parts) of records from ``s3encfs.*`` loggers *before* the message is
formatted: strings that are object keys or encoded names (they decode with this mount's codec,
or are our ``.s3encfs/`` control objects) stay as they are — what a tamper report needs — and
anything else is replaced by ``name#`` plus a keyed hash (HMAC-SHA256 under a key derived from
the naming master key, 12 hex digits): the same name gives the same token in every log of that
bucket, but the token does not reveal the name. ``--log-plain-names`` turns this off.

Messages built with f-strings bypass this; s3encfs's own log calls use arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import Any

from s3encfs.codec import Codec, IntegrityError, LogSafe, UndecodableName

CONTROL = ".s3encfs"
# the loggers of code that handles file names (mount, keys, control... log none)
NAME_LOGGERS = ("s3encfs.fs", "s3encfs.listing", "s3encfs.upload", "s3encfs.cache",
                "s3encfs.journal", "s3encfs.store")


class NameHidingFilter(logging.Filter):
    def __init__(self, codec: Codec, prefix: str, hash_key: bytes) -> None:
        super().__init__()
        self.codec = codec
        self.prefix = prefix
        self._key = hash_key

    def token(self, name: str) -> str:
        mac = hmac.new(self._key, name.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return "name#" + mac.hexdigest()[:12]

    def _encoded(self, text: str) -> bool:
        """True for object keys / encoded paths this codec wrote (or `.s3encfs/` blobs)."""
        rel = text[len(self.prefix):] if self.prefix and text.startswith(self.prefix) else text
        rel = rel.removeprefix("s3://")
        parts = [p for p in rel.split("/") if p]
        if not parts:
            return not text.strip()  # "" and "/" (the root) say nothing
        if parts[0] in (CONTROL, ".s3encfs-canary") or parts[0].startswith(".s3encfs-canary-"):
            return True
        parent: list[str] = []
        for comp in parts:
            try:
                parent.append(self.codec.decode_name("/".join(parent), comp))
            except (UndecodableName, ValueError, IntegrityError):
                return False
        return True

    def _hide(self, value: Any) -> Any:
        if isinstance(value, LogSafe):
            return value
        if isinstance(value, str):
            return value if self._encoded(value) else self.token(value)
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            return tuple(self._hide(v) for v in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.args or not record.name.startswith(NAME_LOGGERS):
            return True
        if isinstance(record.args, dict):
            record.args = {k: self._hide(v) for k, v in record.args.items()}
        else:
            record.args = tuple(self._hide(v) for v in record.args)
        return True


def install(codec: Codec, prefix: str, hash_key: bytes,
            handlers: Iterable[logging.Handler] | None = None) -> NameHidingFilter:
    """Put the filter first on the s3encfs handlers (before redaction formats messages)."""
    f = NameHidingFilter(codec, prefix, hash_key)
    for handler in handlers if handlers is not None else logging.getLogger("s3encfs").handlers:
        handler.filters.insert(0, f)
    return f


def hash_key_for(master_secret: bytes) -> bytes:
    """The log-token key: HMAC of a fixed label under the naming master key (never logged)."""
    return hmac.new(master_secret, b"s3encfs/v1/log-name-token", hashlib.sha256).digest()


def install_for_mount(codec: Codec, prefix: str) -> NameHidingFilter | None:
    """Install the filter when `codec` encrypts names (client mode); None otherwise."""
    if codec.name != "client" or not codec.encrypts_names:
        return None
    keys: Any = getattr(codec, "keys", None)
    name_key_id = getattr(codec, "name_key_id", None)
    if keys is None or name_key_id is None:
        return None
    return install(codec, prefix, hash_key_for(keys.get(name_key_id)))
