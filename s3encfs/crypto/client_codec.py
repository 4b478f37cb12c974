"""`ClientCodec`: the client-side encryption `Codec` (formats v1 and v2, docs/FORMAT.md)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from s3encfs.codec import Codec, IntegrityError, SegmentGeometry, SlotCipher
from s3encfs.lru import CIPHER_CACHE, LruDict

from . import blobs
from . import envelope as env
from .names import NameCipher, PlainNames
from .slots import SHORT_OVERHEAD, StagingSlots, meaningful_len

__all__ = ["SHORT_OVERHEAD", "ClientCodec", "StagingSlots", "meaningful_len"]

SLOT_KEY_FILE = "slot.key"
ATTRS_CACHE = 2048  # opened attrs kept (~1 KB each): more than the largest directory of W4
_SLOT_PURPOSE = "cache-slot-key"


class ClientCodec:
    """Per-object data keys wrapped by a master key; AES-256-GCM segments; AES-SIV names."""

    name = "client"
    # an object without valid sealed attributes is unreadable (never default attributes), and
    # directory attributes that cannot be authenticated fall back to 0700 (fs/listing.py)
    authenticates_attrs = True
    # every content upload takes a fresh data key and object id and re-seals every segment:
    # no segment of one version can be spliced into another (docs/FORMAT.md, "Versions")
    fresh_key_per_version = True

    def __init__(
        self,
        master_keys: dict[str, bytes],
        current: str,
        *,
        encrypt_names: bool = True,
        segment_size: int = 64 * 1024,
        name_key_id: str | None = None,
        name_scheme: int = 1,
        format_version: int = env.FORMAT_VERSION,
    ) -> None:
        if format_version not in env.READ_VERSIONS:
            raise ValueError(f"unknown client format version {format_version}")
        self.format_version = format_version
        if segment_size <= 0:
            raise ValueError("segment_size must be positive")
        self.keys = env.MasterKeys(master_keys, current)
        self.current = current
        self.geometry = SegmentGeometry(segment_size, env.SEGMENT_OVERHEAD, 1)
        self.name_key_id = name_key_id or current
        self.encrypts_names = encrypt_names
        self._names: NameCipher | PlainNames = (
            NameCipher(self.keys.get(self.name_key_id), name_scheme) if encrypt_names
            else PlainNames()
        )
        # the bucket's name scheme (crypto/names.py), from its keycheck (mount.check_master_key)
        self.name_scheme = name_scheme if encrypt_names else 1
        self.name_max = self._names.name_max
        # an object's exact key entries (version, key id, object id, wrapped data key,
        # commitment) -> its cipher: a function of those entries and the loaded master keys
        # alone, so entries that differ in any byte miss and are unwrapped and checked afresh.
        # A lock: attrs are sealed in worker threads.
        self._ciphers: LruDict[tuple[str | None, ...], env.SegmentCipher] = LruDict(CIPHER_CACHE)
        # and every cipher `new_object` made that is still alive (held by a file's content
        # until its upload): a first backup makes more new objects than `_ciphers` holds
        # before their uploads seal the attrs (2 s later), and each of those paid a second
        # unwrap (1.4 per file in process, 2.1 in a real W4). Costs no memory of its own.
        self._live: weakref.WeakValueDictionary[tuple[str | None, ...], env.SegmentCipher] = \
            weakref.WeakValueDictionary()
        # opened attrs by (key entries, sealed value, path): a listing shows again the objects
        # this mount sealed or opened (a directory listed again after --dir-ttl, or after the
        # kernel forgot one of its files), each an AES-GCM open and a JSON parse. Sound: the
        # exact bytes authenticated once (or were sealed here) always open to the same attrs.
        self._opened: LruDict[tuple[str | None, ...], dict[str, str]] = LruDict(ATTRS_CACHE)
        self._ciphers_lock = threading.Lock()

    def _key_entries(self, metadata: Mapping[str, str]) -> tuple[str | None, ...]:
        return tuple(map(metadata.get, env.KEY_META))

    # -- objects
    def new_object(self) -> tuple[env.SegmentCipher, dict[str, str]]:
        oid = env.random_bytes(env.OID_LEN)
        data_key = env.random_bytes(env.KEY_LEN)
        v = self.format_version
        meta = env.wrap_data_key(self.keys, self.current, oid, data_key, v)
        cipher = env.SegmentCipher(oid, data_key, self.geometry.segment_size, v)
        entries = self._key_entries(meta)
        with self._ciphers_lock:
            self._ciphers[entries] = cipher  # its attrs are sealed next
            self._live[entries] = cipher
        return cipher, meta

    def open_object(self, metadata: dict[str, str]) -> env.SegmentCipher:
        """The object's cipher. Memoized by its key entries (`_ciphers`): the same entries
        always unwrap to the same cipher, so only entries never seen are unwrapped (and their
        key commitment checked) — each object's attrs are sealed and opened without a second
        unwrap and four key derivations; a new object's cipher is found in `_live` for as long
        as its content holds it."""
        entries = self._key_entries(metadata)
        with self._ciphers_lock:
            cipher = self._ciphers.get(entries) or self._live.get(entries)
        if cipher is None:
            oid, data_key = env.unwrap_data_key(self.keys, metadata)
            cipher = env.SegmentCipher(oid, data_key, self.geometry.segment_size,
                                       env.version_of(metadata))
            with self._ciphers_lock:
                self._ciphers[entries] = cipher
        return cipher

    def rewrap(self, metadata: dict[str, str], key_id: str | None = None) -> dict[str, str]:
        """Key metadata re-wrapped under `key_id` (default: current) — rotation is metadata-only.
        Same data key, object id and format version, so the body and sealed attrs stay valid.
        Not a revocation: whoever saw the old master key (or a data key) can still read."""
        oid, data_key = env.unwrap_data_key(self.keys, metadata)
        return env.wrap_data_key(self.keys, key_id or self.current, oid, data_key,
                                 env.version_of(metadata))

    def format_of(self, metadata: Mapping[str, str]) -> int:
        return env.version_of(metadata)

    def key_id_of(self, metadata: Mapping[str, str]) -> str:
        return env.key_id_of(metadata)

    # -- attrs
    def seal_attrs(self, metadata: dict[str, str], attrs: dict[str, str],
                   path: str = "") -> dict[str, str]:
        """`path`: the object's key relative to the mount prefix (bound in v2)."""
        cipher = self.open_object(metadata)
        value = env.seal_attrs(cipher, attrs, path)
        with self._ciphers_lock:
            self._opened[(*self._key_entries(metadata), value, path)] = dict(sorted(attrs.items()))
        return {env.META_ATTRS: value}

    def open_attrs(self, metadata: dict[str, str], path: str = "") -> dict[str, str]:
        """IntegrityError when the attrs are missing (stripped), tampered, from another object or
        (v2) sealed for another path: the object is then unreadable, never given defaults."""
        value = metadata.get(env.META_ATTRS)
        if value is None:
            env.version_of(metadata)  # not ours at all: say so
            raise IntegrityError("object has no sealed attributes (stripped or not written by "
                                 "s3encfs)")
        memo = (*self._key_entries(metadata), value, path)
        with self._ciphers_lock:
            hit = self._opened.get(memo)
        if hit is not None:
            return dict(hit)
        attrs = env.open_attrs(self.open_object(metadata), value, path)
        with self._ciphers_lock:
            self._opened[memo] = dict(attrs)
        return attrs

    # -- blobs
    def seal_blob(self, purpose: str, data: bytes) -> bytes:
        return blobs.seal_blob(self.keys, purpose, data)

    def open_blob(self, purpose: str, data: bytes) -> bytes:
        return blobs.open_blob(self.keys, purpose, data)

    # -- names
    def encode_name(self, parent: str, name: str) -> str:
        return self._names.encode_name(parent, name)

    def decode_name(self, parent: str, encoded: str) -> str:
        return self._names.decode_name(parent, encoded)

    def encoded_len(self, name: str) -> int | None:
        if isinstance(self._names, NameCipher):
            return self._names.encoded_len(name)
        return None  # plain names: `encode_name` is cheap, and checks UTF-8 as well

    def long_body(self, hashed: str) -> bytes | None:
        return self._names.long_body(hashed)

    def learn_long(self, hashed: str, body: bytes) -> bool:
        return self._names.learn_long(hashed, body)

    # -- staging
    def slot_cipher(self, cache_dir: str) -> SlotCipher:
        return StagingSlots(load_or_create_slot_key(self, cache_dir))


def loaded_key_id(codec: ClientCodec, metadata: Mapping[str, str]) -> str:
    """Return the object's master key id; MissingMasterKey (naming it) if it isn't loaded.
    (Not `mount.check_master_key`, which proves the mount's key against the keycheck.)"""
    key_id = env.key_id_of(metadata)
    codec.keys.get(key_id)
    return key_id


def load_or_create_slot_key(codec: ClientCodec, cache_dir: str) -> bytes:
    """The cache key in ``cache_dir/slot.key``, sealed as a blob by the master key (mode 0600).

    Created atomically (tmp + link) so concurrent mounts agree on one key."""
    path = os.path.join(cache_dir, SLOT_KEY_FILE)
    for _ in range(2):
        try:
            with open(path, "rb") as f:
                sealed = f.read()
        except FileNotFoundError:
            pass
        else:
            key = codec.open_blob(_SLOT_PURPOSE, sealed)
            if len(key) != env.KEY_LEN:
                raise IntegrityError(f"{path}: bad cache key length")
            return key
        key = env.random_bytes(env.KEY_LEN)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, codec.seal_blob(_SLOT_PURPOSE, key))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            continue  # another process won; read its key
        finally:
            os.unlink(tmp)
        return key
    raise IntegrityError(f"{path}: could not create or read the cache key")


if TYPE_CHECKING:  # mypy proves ClientCodec satisfies the Codec protocol

    def _is_codec(c: ClientCodec) -> Codec:
        return c
