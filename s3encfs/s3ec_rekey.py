"""`s3encfs rekey --encryption s3ec`: rotate S3 Encryption Client wrapping keys (rewrap only).

For each object whose wrapped data key is not under the writing key (the first one configured,
as for mount), the data key is unwrapped with the key the object's metadata names (V3: the
commitment checked), wrapped again under the writing key, and the key part of the metadata is
replaced: by a server-side CopyObject of the object onto itself (conditional on the HEAD's ETag),
or, when that part lives in ``X.instruction``, by a conditional PUT of the instruction file. The
body, the content algorithm, the V3 message id and commitment, the V2 IV and our sealed POSIX
attributes stay as they are: they depend on the data key, which does not change, so the SDKs
and the mount read the object exactly as before. Before writing, the new wrap is opened again
with the writing key (when it can read: not for a public-only RSA key) and must give the same
data key — a bad rewrap would lose the object, since the old wrapped key is gone after it.

**A rewrap is not a revocation**: whoever holds the old wrapping key (or a copy, backup, old
object version or log of the old metadata) can still unwrap the same data key and read the
object. To take access away, re-encrypt under fresh data keys (write the files again through
an s3ec mount) and delete the old versions.

Resumable through `rekey_run.run`: objects already wrapped by the writing key are skipped (a HEAD
decides), and the last key of every finished LIST page is kept in the state file.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto.s3ec_keyrings import S3ECKeys

_V2_KEY_PART = (fmt.KEY_V2, fmt.WRAP_ALG, fmt.MATDESC)
_V3_KEY_PART = (fmt.V3_KEY, fmt.V3_WRAP, fmt.V3_MATDESC, fmt.V3_CONTEXT)


class S3ECRekeyer:
    """The `rekey_objects.Rekeyer` interface (`one`, `store`, `prefix`, `dry_run`), s3ec mode."""

    def __init__(self, store: Any, keys: S3ECKeys, prefix: str, *, dry_run: bool = False):
        self.store = store  # a plain ObjectStore
        self.keys = keys
        self.prefix = prefix
        self.dry_run = dry_run
        self.target = f"s3ec-writer={keys.writer.name}"

    def one(self, key: str, size: int) -> bool:
        from s3encfs.store.errors import NotFound

        rel = key[len(self.prefix):]
        if key.endswith("/") or key.endswith(fmt.INSTRUCTION_SUFFIX):
            return False  # plain markers; instruction files are rewritten with their object
        if rel.startswith(".s3encfs/") and not rel.startswith(".s3encfs/idx/"):
            return False  # a mount's plain control objects (its directory indexes are S3EC)
        info = self.store.head(key)
        meta = fmt.lower_keys(info.metadata or {})
        s3 = {k: v for k, v in meta.items() if k in fmt.ALL_NAMES}
        instruction: dict[str, str] | None = None
        inst_etag = ""
        if fmt.needs_instruction_file(s3) or not fmt.is_s3ec(s3):
            try:
                body, inst = self.store.get(key + fmt.INSTRUCTION_SUFFIX)
            except NotFound:
                raise fmt.NotS3EC("not an S3 Encryption Client object") from None
            instruction = fmt.lower_keys(json.loads(body))
            inst_etag = inst.etag
            s3 = fmt.merge_instruction(s3, body)
        env = fmt.parse_envelope(s3)
        ring = self.keys.keyring_for(env)
        if ring is self.keys.writer and getattr(ring, "is_current", lambda _e: True)(env):
            return False  # (a KMS writer with older KMS keys: the key KMS reports decides)
        _ck, dk = self.keys.open_object(s3)  # unwrap with the old key, V3 commitment checked
        part = self._key_part(env, dk)
        self._verify(s3, part, dk)
        if not self.dry_run:
            if instruction is not None:
                self._rewrite_instruction(key, instruction, part, inst_etag)
            else:
                new = {**_without_key_part(meta), **part}
                self.store.copy(key, key, metadata=new, if_match=info.etag or None)
        return True

    def _rewrite_instruction(self, key: str, instruction: dict[str, str],
                             part: dict[str, str], etag: str) -> None:
        """The wrapped key lives in `KEY.instruction`: rewrite that file (If-Match its ETag)."""
        body = json.dumps({**_without_key_part(instruction), **part}).encode()
        self.store.put(key + fmt.INSTRUCTION_SUFFIX, body, {"x-amz-crypto-instr-file": ""},
                       if_match=etag or None)

    def _key_part(self, env: fmt.Envelope, dk: bytes) -> dict[str, str]:
        """The metadata names that hold the wrapped key, rewrapped under the writing key."""
        w = self.keys.writer.wrap(dk, env.version)
        edk = base64.b64encode(w.edk).decode()
        if env.version == 3:
            part = {fmt.V3_KEY: edk, fmt.V3_WRAP: fmt.V3_CODE[w.wrap_alg]}
            if w.wrap_alg == fmt.WRAP_KMS:
                part[fmt.V3_CONTEXT] = fmt.compact_json(w.description)
            elif w.description:
                part[fmt.V3_MATDESC] = fmt.compact_json(w.description)
            return part
        return {fmt.KEY_V2: edk, fmt.WRAP_ALG: w.wrap_alg,
                fmt.MATDESC: fmt.compact_json(w.description)}

    def _verify(self, s3: dict[str, str], part: dict[str, str], dk: bytes) -> None:
        new = {**{k: v for k, v in s3.items() if k not in _V2_KEY_PART + _V3_KEY_PART}, **part}
        env = fmt.parse_envelope(new)
        if self.keys.keyring_for(env) is not self.keys.writer:
            raise ValueError("rewrapped metadata does not select the writing key")
        if getattr(self.keys.writer, "can_read", True):
            if self.keys.open_object(new)[1] != dk:
                raise ValueError("rewrapped key does not open to the same data key")


def _without_key_part(meta: dict[str, str]) -> dict[str, str]:
    """Metadata (or instruction-file fields) less the names that hold the wrapped key."""
    return {k: v for k, v in meta.items() if k not in _V2_KEY_PART + _V3_KEY_PART}


def build(cfg: Any, store: Any, prefix: str, *, dry_run: bool,
          writer: str | None = None) -> S3ECRekeyer:
    """`writer`: the target key by name (a `--key` name, ``kms`` or the KMS key id, an RSA PEM
    path) when it is not the one a mount would write with (the first `--key`, else KMS, else
    the first PEM) — e.g. to move from a raw AES key to KMS."""
    from s3encfs.exitcodes import MountError
    from s3encfs.mount_codec import load_keys
    from s3encfs.s3ec_setup import S3ECSetupError, build_keys

    try:
        keys = build_keys(cfg, lambda name: load_keys(cfg, [name], role="s3ec")[0][2])
    except S3ECSetupError as exc:
        raise MountError(str(exc)) from None
    if writer:
        names = {writer, f"kms:{writer}"}
        pick = [k for k in keys.keyrings if k.name in names
                or (writer == "kms" and k.wrap_alg == fmt.WRAP_KMS)]
        if len(pick) != 1:
            raise MountError(f"--s3ec-writer {writer!r} names none of the configured keys "
                             f"({', '.join(k.name for k in keys.keyrings)})")
        keys = S3ECKeys([pick[0], *[k for k in keys.keyrings if k is not pick[0]]],
                        version=keys.version)
    return S3ECRekeyer(store, keys, prefix, dry_run=dry_run)
