"""Attributes bound to an object's key (client format v2): re-sealing them when an object moves.

A sealing codec binds an object's sealed attributes to its key relative to the mount prefix
(docs/FORMAT.md), so an object copied, moved or swapped to another key by someone without the
keys no longer opens there.  Our own renames are server-side copies; they carry the attributes
re-sealed for the destination (CopyObject, MetadataDirective=REPLACE), after checking them at the
source — an object whose attributes do not open is copied as it is and stays unreadable, never
laundered into a valid one by the move.
"""

from __future__ import annotations

import logging

from s3encfs.codec import IntegrityError
from s3encfs.store.layout import Layout
from s3encfs.store.s3 import ObjectStore

log = logging.getLogger("s3encfs.sealing")

KEY_PREFIX = "s3encfs-"
NOT_KEY_MATERIAL = ("s3encfs-attrs", "s3encfs-ssec")


def cipher_meta(meta: dict[str, str]) -> dict[str, str]:
    """Only the codec's key material from an object's metadata (not attrs, not SSE ids)."""
    return {k: v for k, v in meta.items()
            if k.startswith(KEY_PREFIX) and k not in NOT_KEY_MATERIAL}


def reseal_for_move(store: ObjectStore, layout: Layout, src: str,
                    dst: str) -> dict[str, str] | None:
    """Metadata for the copy of `src` to `dst` with attributes sealed for `dst`; None (copy the
    metadata unchanged) when the source's attributes do not authenticate at `src`."""
    codec = layout.codec
    meta = dict(store.head(src).metadata or {})
    try:
        attrs = codec.open_attrs(meta, layout.rel_key(src))
    except IntegrityError as exc:
        log.error("moving %s to %s: its attributes do not authenticate (%s); copied unchanged, "
                  "it stays unreadable", src, dst, exc)
        return None
    keys = cipher_meta(meta)
    return {**keys, **codec.seal_attrs(keys, attrs, layout.rel_key(dst))}
