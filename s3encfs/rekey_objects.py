"""The per-object work of `s3encfs rekey` (split out of rekey.py, issue 11: one job per module):
`Rekeyer.one` brings one object, directory marker or `.s3encfs/` blob to the target settings —
a server-side CopyObject onto itself (MetadataDirective=REPLACE) with the new SSE headers and
rewrapped key metadata, a re-encryption (reencrypt.py) for client format v1 objects or with
``--new-data-keys``, an empty re-PUT for markers, a re-seal for blobs.
"""

from __future__ import annotations

import json
from typing import Any

from s3encfs.reencrypt import needs_reencryption, reencrypt

SSEC_META = "s3encfs-ssec"
CONTROL = ".s3encfs/"
KIND_OBJECT, KIND_MARKER, KIND_BLOB = "object", "marker", "blob"


class Rekeyer:
    def __init__(self, store: Any, codec: Any, prefix: str, *, dry_run: bool = False,
                 new_data_keys: bool = False) -> None:
        from s3encfs.store.sse import SseCPolicy

        self.store = store
        self.policy = store.sse
        self.codec = codec if getattr(codec, "name", "") == "client" else None
        self.prefix = prefix
        self.dry_run = dry_run
        self.new_data_keys = new_data_keys
        self.ssec = self.policy if isinstance(self.policy, SseCPolicy) else None

    # raw HEAD (SSE headers included), trying the keyring's SSE-C keys like the store does
    def head_raw(self, key: str) -> dict[str, Any]:
        def attempt(args: dict[str, Any]) -> dict[str, Any]:
            return self.store._call("HeadObject", key, self.store.client.head_object, Key=key,
                                    **args)

        resp: dict[str, Any] = self.store._with_read_key(key, attempt)
        resp["Metadata"] = {k.lower(): v for k, v in (resp.get("Metadata") or {}).items()}
        return resp

    def sse_at_target(self, head: dict[str, Any]) -> bool:
        p = self.policy
        if self.ssec is not None:
            md5s = {v.strip() for v in str(head.get("SSECustomerKeyMD5") or "").split(",")}
            return (head.get("SSECustomerAlgorithm") == "AES256"
                    and md5s == {self.ssec.known_md5(self.ssec.writer)}
                    and head["Metadata"].get(SSEC_META) == self.ssec.writer)
        if p.mode == "none":  # no SSE of any kind (a server default may re-apply SSE-S3)
            return (head.get("SSECustomerAlgorithm") is None
                    and head.get("ServerSideEncryption") is None)
        if head.get("ServerSideEncryption") != p.algorithm:
            return False
        kid = head.get("SSEKMSKeyId")
        if p.kms_key_id and kid is not None and not p._key_matches(str(kid)):
            return False
        return not (p.bucket_key and head.get("BucketKeyEnabled") is False)

    def client_at_target(self, meta: dict[str, str]) -> bool:
        if self.codec is None or "s3encfs-kid" not in meta:
            return True
        return bool(meta["s3encfs-kid"] == self.codec.current)

    def new_metadata(self, meta: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in meta.items() if k != SSEC_META}
        if self.codec is not None and "s3encfs-kid" in meta:
            out.update(self.codec.rewrap(meta))
        return out

    def kind(self, key: str, size: int) -> str:
        if key.endswith("/") and size == 0:
            return KIND_MARKER
        if self.codec is not None and key[len(self.prefix):].startswith(CONTROL):
            return KIND_BLOB
        return KIND_OBJECT

    def one(self, key: str, size: int) -> bool:
        """Bring one object to the target; True if it changed, False if it already was."""
        kind = self.kind(key, size)
        if kind == KIND_BLOB:
            return self._blob(key)
        head = self.head_raw(key)
        meta = head["Metadata"]
        if kind == KIND_OBJECT and self.codec is not None and \
                needs_reencryption(self.codec, meta, self.new_data_keys):
            if not self.dry_run:
                reencrypt(self.store, self.codec, key[len(self.prefix):], key)
            return True
        if self.sse_at_target(head) and self.client_at_target(meta):
            return False
        if self.dry_run:
            return True
        newmeta = self.new_metadata(meta)
        if kind == KIND_MARKER:
            # SeaweedFS refuses CopyObject of a dir/ marker (404); an empty re-PUT is equivalent.
            self.store.put(key, b"", newmeta)
        else:
            etag = str(head.get("ETag", "")).strip('"')
            self.store.copy(key, key, metadata=newmeta, if_match=etag or None)
        return True

    def _blob(self, key: str) -> bool:
        """Client mode: re-seal a `.s3encfs/` blob under the current master key."""
        rel = key[len(self.prefix) + len(CONTROL):]
        if rel == "keycheck":
            purpose = "keycheck"
        elif rel.startswith("idx/"):
            purpose = "idx:" + key
        else:
            head = self.head_raw(key)
            if self.sse_at_target(head) or self.dry_run:
                return not self.sse_at_target(head)
            self.store.copy(key, key, metadata=self.new_metadata(head["Metadata"]))
            return True
        head = self.head_raw(key)
        body, _info = self.store.get(key)
        assert self.codec is not None
        sealed_with = body[6 : 6 + body[5]].decode("ascii", "replace") if len(body) > 6 else ""
        data = self.codec.open_blob(purpose, body)
        changed_entries = False
        if purpose.startswith("idx:"):
            idx = json.loads(data)
            for name, (etag, meta) in list(idx.get("files", {}).items()):
                if isinstance(meta, dict) and not self.client_at_target(meta):
                    idx["files"][name] = [etag, self.new_metadata(meta)]
                    changed_entries = True
            if changed_entries:
                data = json.dumps(idx, separators=(",", ":")).encode()
        if (sealed_with == self.codec.current and not changed_entries
                and self.sse_at_target(head)):
            return False
        if self.dry_run:
            return True
        self.store.put(key, self.codec.seal_blob(purpose, data),
                       self.new_metadata(head["Metadata"]))
        return True
