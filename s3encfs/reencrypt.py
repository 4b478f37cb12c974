"""Re-encrypting one client-mode object under a fresh data key (`rekey` to format v2, and
`rekey --new-data-keys`).

A rewrap (`ClientCodec.rewrap`) only re-wraps the data key under another master key: whoever
held the old master key, or saw a data key, can still read everything. Re-encryption is what
takes that away for the bodies: the object is read, authenticated (segments *and* the sealed
attributes at this very key, so nothing unauthentic is laundered into a valid new object),
and written back under a new data key and object id in the current format, conditional on the
ETag it was read at (a concurrent writer wins; the run reports the object as failed).

The object is handled in memory, whole: fine for the files a bucket usually holds, not for
multi-GiB ones (a streaming version is a follow-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3encfs.crypto.envelope import decrypt_object, encrypt_object, version_of
from s3encfs.fs.sealing import cipher_meta


def needs_reencryption(codec: Any, meta: Mapping[str, str], new_data_keys: bool) -> bool:
    """A client-format object that is older than the codec writes, or every one when asked."""
    if "s3encfs-kid" not in meta:
        return False
    return new_data_keys or version_of(meta) < codec.format_version


def reencrypt(store: Any, codec: Any, rel: str, key: str) -> None:
    """Rewrite the object at `key` (`rel`: relative to the prefix) under a fresh data key."""
    body, info = store.get(key)
    meta = dict(info.metadata or {})
    attrs = codec.open_attrs(meta, rel)  # IntegrityError: not laundered into a valid object
    plain = decrypt_object(codec.open_object(meta), body)
    cipher, fresh = codec.new_object()
    new_meta = {**{k: v for k, v in meta.items() if not k.startswith("s3encfs-")},
                **cipher_meta(fresh), **codec.seal_attrs(fresh, attrs, rel)}
    store.put(key, encrypt_object(cipher, plain), new_meta, if_match=info.etag or None)
