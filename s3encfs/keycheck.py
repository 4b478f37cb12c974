"""The bucket's key check (`PREFIX.s3encfs/keycheck`): prove the master key before serving.

The keycheck is a blob sealed with the master key that records which key id encrypts names.
It used to be trust-on-first-use: whoever mounted a prefix without one (a wrong key after the
blob was deleted, say) wrote a new one, saw an empty tree, and locked the right key out. Now:

- a keycheck is *created* only on an empty prefix (nothing but our canaries there) or with an
  explicit ``--init``, and only by a caller that may write (never a ``-o ro`` mount, ``check``
  or ``info``);
- a missing keycheck on a non-empty prefix is replaced by a proof against what is there: sealed
  directory indexes and object metadata in our format must open with the mount's keys. One
  success is required (``--init``: none disproving), any failure refuses the mount;
- the naming key recorded in the keycheck is used as is (never rewritten by a mount); a mount
  whose current key differs says so in the log;
- so is the name scheme (``"names"``, crypto/names.py): a keycheck written on an empty prefix
  records `NEW_NAME_SCHEME`; one without the field (every bucket older than scheme 2) means
  scheme 1, and an ``--init`` over existing objects records the scheme their names decode with;
  ``"names": "migrating"`` (rekey_names.py at work, or interrupted) refuses every mount.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from s3encfs.codec import Codec, IntegrityError, UndecodableName

log = logging.getLogger("s3encfs.keycheck")

CONTROL = ".s3encfs/"
KEYCHECK = CONTROL + "keycheck"
PROBE_LIMIT = 64  # objects looked at when proving a key without a keycheck
NEW_NAME_SCHEME = 2  # padded names, long names in side objects (docs/FORMAT.md, "Names")


MIGRATING = "migrating"  # `"names"` while `rekey --names 2` runs (rekey_names.py)


class NamesMigrating(Exception):
    """The bucket is half-way through a name-scheme migration: nothing may mount it."""


def name_scheme(info: dict[str, Any] | None) -> int:
    """The name scheme a keycheck records (1 when it predates the field, or is missing).
    A bucket being migrated (``"names": "migrating"``, a value older versions refuse as
    unknown) raises NamesMigrating: its keys are a mix of both schemes."""
    value = (info or {}).get("names", 1)
    if value == MIGRATING:
        raise NamesMigrating(
            f"this bucket is half-way through a migration to name scheme "
            f"{(info or {}).get('names_to', 2)} (`s3encfs rekey --names 2`, interrupted?): run "
            "that command again to finish it; until then nothing may mount it")
    if value not in (1, 2):
        raise KeyCheckError(f"the keycheck records an unknown name scheme {value!r}")
    return int(value)


def _detect_scheme(store: Any, codec: Codec, prefix: str) -> int:
    """Which scheme the top-level names of a prefix without keycheck decode with."""
    from s3encfs.crypto.names import NameCipher, is_long

    keys, key_id = getattr(codec, "keys", None), getattr(codec, "name_key_id", None)
    if keys is None or key_id is None or not codec.encrypts_names:
        return 1
    key = keys.get(key_id)
    v2 = NameCipher(key, 2)
    for page in store.list_pages(prefix, "/"):
        names = [o.key[len(prefix):] for o in page.objects] + \
            [p[len(prefix):-1] for p in page.prefixes]
        for enc in names:
            if is_long(enc):
                return 2
            try:
                v2.decode_name("", enc)
                return 2
            except (UndecodableName, IntegrityError, ValueError):  # not a scheme-2 name
                continue
        break
    return 1


class KeyCheckError(Exception):
    """The mount's keys are wrong for this prefix, or cannot be proven right."""


def _is_ours(metadata: dict[str, str]) -> bool:
    return any(k.startswith("s3encfs-") and k != "s3encfs-ssec" for k in metadata)


def _prove(store: Any, codec: Codec, prefix: str) -> tuple[int, int, list[str]]:
    """(objects present, objects proven, failures) over up to PROBE_LIMIT objects."""
    from s3encfs.store.errors import NotFound

    present = proven = 0
    failures: list[str] = []
    looked = 0
    for page in store.list_pages(prefix, delimiter=None):
        for obj in page.objects:
            rel = obj.key[len(prefix):]
            if rel.startswith(".s3encfs-canary-"):
                continue
            present += 1
            if looked >= PROBE_LIMIT or (rel.endswith("/") and obj.size == 0):
                continue
            looked += 1
            try:
                if rel.startswith(CONTROL + "idx/"):
                    body, _info = store.get(obj.key)
                    codec.open_blob("idx:" + obj.key, body)
                else:
                    meta = store.head(obj.key).metadata or {}
                    if not _is_ours(meta):
                        continue  # another tool's object proves nothing either way
                    codec.open_object(meta)
            except NotFound:
                continue
            except IntegrityError as exc:
                failures.append(f"{obj.key}: {exc}")
                continue
            proven += 1
        if looked >= PROBE_LIMIT:
            break
    return present, proven, failures


def _record(codec: Codec, names: int) -> dict[str, Any]:
    return {"v": 1, "name_key_id": getattr(codec, "name_key_id", None), "names": names}


def _seal(codec: Codec, names: int = NEW_NAME_SCHEME) -> bytes:
    return codec.seal_blob("keycheck", json.dumps(_record(codec, names)).encode())


def seal_new(codec: Codec) -> bytes:
    """A keycheck for a prefix whose every name this codec is about to write (`rekey --from
    s3ec` converting into the client format)."""
    return _seal(codec, NEW_NAME_SCHEME)


def rewrite(store: Any, codec: Codec, prefix: str, record: dict[str, Any]) -> None:
    """Replace the keycheck with `record` (name-scheme migration only: the record's naming key
    stays as the caller read it)."""
    store.put(prefix + KEYCHECK, codec.seal_blob("keycheck", json.dumps(record).encode()), {})


def verify(store: Any, codec: Codec, prefix: str, *, may_write: bool = False,
           init: bool = False) -> dict[str, Any] | None:
    """Check the mount's master keys against the prefix; return the keycheck's contents (None
    when there is none). Raises KeyCheckError. Writes only when `may_write` and the prefix is
    empty, or with `init` after no object disproved the key."""
    from s3encfs.store.errors import NotFound

    where = f"s3://{store.bucket}/{prefix}"
    try:
        body, _info = store.get(prefix + KEYCHECK)
    except NotFound:
        return _verify_without_keycheck(store, codec, prefix, may_write=may_write, init=init)
    try:
        info = json.loads(codec.open_blob("keycheck", body))
    except IntegrityError as exc:
        raise KeyCheckError(
            f"wrong master key for {where}: {exc} — this bucket was encrypted with another "
            "key (see `s3encfs key list`)") from None
    if not isinstance(info, dict):
        raise KeyCheckError(f"{where}: the keycheck does not hold a record")
    return info


def _verify_without_keycheck(store: Any, codec: Codec, prefix: str, *, may_write: bool,
                             init: bool) -> dict[str, Any] | None:
    """No keycheck: prove the key against the objects present, then write one if allowed."""
    where = f"s3://{store.bucket}/{prefix}"
    present, proven, failures = _prove(store, codec, prefix)
    if failures:
        raise KeyCheckError(
            f"wrong master key for {where}: the keycheck is missing and {len(failures)} "
            f"object(s) do not open with this mount's keys (first: {failures[0]}); refusing "
            "to mount rather than hide them")
    if present and not proven and not init:
        raise KeyCheckError(
            f"{where} holds {present} object(s) but no keycheck, and none of them proves this "
            "mount's master key; if this really is the right key (e.g. the prefix holds only "
            "other tools' files), mount once with --init to record it")
    if present:
        log.warning("%s: the keycheck is missing; the master key was proven against %d "
                    "object(s)%s", where, proven,
                    " — recreating it (--init)" if init and may_write else
                    "; mount with --init to recreate it")
    if may_write and (not present or init):
        from s3encfs.store.errors import PreconditionFailed

        names = _detect_scheme(store, codec, prefix) if present else NEW_NAME_SCHEME
        try:
            store.put(prefix + KEYCHECK, _seal(codec, names), {}, if_none_match=True)
        except PreconditionFailed:  # another mount created it meanwhile: check against that
            return verify(store, codec, prefix)
        return _record(codec, names)
    if present:  # proven without a keycheck: read its names the way they were written
        return {"names": _detect_scheme(store, codec, prefix)}
    return None
