"""`s3encfs rekey --names 2`: migrate a client-mode bucket from name scheme 1 (exact-length names,
143 bytes at most) to scheme 2 (padded names, long names in side objects; docs/FORMAT.md, "Names").

Every object key changes: each component is re-encoded under scheme 2 from its scheme-1
plaintext, and (client format v2) the sealed attributes are bound to the encoded key, so each
object is copied server-side to its new key with re-sealed attributes (CopyObject,
MetadataDirective=REPLACE; `ObjectStore.copy` takes the UploadPartCopy path above 5 GiB) and the
old key is deleted only after the copy landed. The store is wrapped by store/longnames.py, so a
name of 96–143 bytes — inline in scheme 1, hashed in scheme 2 — gets its side object before the
copy that needs it. Directory indexes move to their new keys with their directory entries
re-keyed (``files`` entries, a cache of object metadata at the old keys, are dropped: a mount
HEADs those objects once).

Safe at any kill point, and resumable without a state file (the bucket is the state):

1. a scan (read-only) decodes every key under scheme 1 or, where that fails, scheme 2 (moved
   already); it refuses before writing anything when a new key would exceed S3's 1,024 bytes;
2. the keycheck records ``"names": "migrating"`` — every mount (and `check`, `rekey`) refuses
   the bucket from then on, older versions too (an unknown scheme);
3. indexes are written at their new keys (the root's, whose key does not change, in place:
   its entries are decoded under either scheme);
4. objects are copied, then their old keys deleted; directory markers are written at their
   new keys and the old ones kept until everything below them moved;
5. old markers (deepest first) and old indexes are deleted, and the keycheck records
   ``"names": 2``.

A rerun after a kill at any point repeats what is not yet visible as done (copies are
idempotent: same body, same attributes). An object that does not authenticate is left alone and
reported; the bucket then stays in the migrating state until it is fixed or deleted and the
command rerun. ``--dry-run`` does the scan and HEADs and opens every object (a full proof that
the migration will go through) without writing.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from s3encfs.codec import IntegrityError, NameTooLong, UndecodableName
from s3encfs.crypto.names import SIDE_SUFFIX, is_long

log = logging.getLogger("s3encfs.rekey")

CONTROL = ".s3encfs/"
CANARY = ".s3encfs-canary-"
SSEC_META = "s3encfs-ssec"
_MISSING: Any = object()


class NamesRefused(Exception):
    """The migration cannot start (or continue) on this bucket; nothing was written."""


@dataclass
class Item:
    """One key still in scheme 1 and where it goes."""

    old: str
    new: str
    parts: tuple[str, ...]
    marker: bool
    size: int


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    done: int = 0  # keys already in scheme 2
    undecodable: list[str] = field(default_factory=list)
    too_long: list[str] = field(default_factory=list)
    dirs: set[tuple[str, ...]] = field(default_factory=lambda: {()})
    indexes: set[str] = field(default_factory=set)


@dataclass
class Index:
    """A directory's index at its new key, ready to write."""

    old: str
    new: str
    sealed: bytes
    sides: list[tuple[str, bytes]]  # side objects of long child-directory names


@dataclass
class Result:
    moved: int = 0
    indexes: int = 0
    already: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    finished: bool = False


class NameMigration:
    def __init__(self, store: Any, codec: Any, prefix: str, *, jobs: int = 8,
                 dry_run: bool = False) -> None:
        from s3encfs.crypto.client_codec import ClientCodec
        from s3encfs.store.layout import Layout
        from s3encfs.store.longnames import with_long_names

        keys = {kid: codec.keys.get(kid) for kid in codec.keys.ids()}
        self.old = ClientCodec(keys, codec.current, name_key_id=codec.name_key_id, name_scheme=1)
        self.new = ClientCodec(keys, codec.current, name_key_id=codec.name_key_id, name_scheme=2)
        self.lay1, self.lay2 = Layout(prefix, self.old), Layout(prefix, self.new)
        self.prefix = self.lay1.prefix
        self.raw = store
        self.store = with_long_names(store, self.new, self.prefix)  # writes side objects
        self.jobs, self.dry_run = jobs, dry_run
        self._decoded: dict[tuple[int, str], tuple[str, ...] | None] = {}

    # -- decoding under either scheme -----------------------------------------------------------
    def decode(self, codec: Any, parts: list[str]) -> tuple[str, ...] | None:
        """The plaintext path of encoded components `parts` under `codec`'s scheme, or None."""
        plain: tuple[str, ...] | None = ()
        for i in range(len(parts)):
            memo = (codec.name_scheme, "/".join(parts[: i + 1]))
            hit = self._decoded.get(memo, _MISSING)
            if hit is _MISSING:
                assert plain is not None
                hit = self._decode_one(codec, plain, parts[: i + 1])
                self._decoded[memo] = hit
            plain = hit
            if plain is None:
                return None
        return plain

    def _decode_one(self, codec: Any, parent: tuple[str, ...],
                    enc_parts: list[str]) -> tuple[str, ...] | None:
        from s3encfs.store.errors import NotFound

        enc = enc_parts[-1]
        if codec is self.new and is_long(enc) and codec.long_body(enc) is None:
            try:  # a long name moved by an earlier run: its side object says what it is
                body, _info = self.raw.get(self.prefix + "/".join(enc_parts) + SIDE_SUFFIX)
                codec.learn_long(enc, body)
            except NotFound:
                pass
        try:
            return (*parent, codec.decode_name("/".join(parent), enc))
        except (UndecodableName, IntegrityError, ValueError):
            return None

    # -- 1. the scan ----------------------------------------------------------------------------
    def scan(self) -> Plan:
        from s3encfs.store.longnames import is_side_key

        plan = Plan()
        for page in self.raw.list_pages(self.prefix, None):
            for o in page.objects:
                rel = o.key[len(self.prefix):]
                if rel.startswith(CONTROL):
                    if rel.startswith(CONTROL + "idx/"):
                        plan.indexes.add(o.key)
                    continue
                if rel.startswith(CANARY) or is_side_key(rel):
                    continue
                self._classify(plan, o.key, rel, int(o.size))
        return plan

    def _classify(self, plan: Plan, key: str, rel: str, size: int) -> None:
        parts = [p for p in rel.split("/") if p]
        marker = rel.endswith("/")
        plain = self.decode(self.old, parts) if parts else None
        if plain is not None:
            try:
                new_rel = self.lay2.encode_rel(plain) + ("/" if marker else "")
            except NameTooLong:
                plan.too_long.append(key)
                return
            plan.items.append(Item(key, self.prefix + new_rel, plain, marker, size))
        else:
            plain = self.decode(self.new, parts) if parts else None
            if plain is None:
                plan.undecodable.append(key)
                return
            plan.done += 1
        dirs = plain if marker else plain[:-1]
        plan.dirs.update(dirs[:i] for i in range(len(dirs) + 1))

    # -- 3. indexes -----------------------------------------------------------------------------
    def prepare_index(self, plan: Plan, d: tuple[str, ...]) -> Index | None:
        """Directory `d`'s scheme-2 index, built from its scheme-1 one (None when it has none).
        Raises when the old one does not open."""
        try:
            old_key = self.lay1.index_key(d)
        except NameTooLong:  # a name scheme 1 cannot hold: no scheme-1 index either
            return None
        if old_key not in plan.indexes:
            return None
        new_key = self.lay2.index_key(d)
        body, _info = self.raw.get(old_key)
        data = json.loads(self.old.open_blob("idx:" + old_key, body))
        if not isinstance(data, dict):
            raise ValueError(f"directory index {old_key} does not hold a record")
        dirs = self._dirs_entries(d, data)
        out = {"v": data.get("v", 1), "files": {}, "dirs": dirs, "self": data.get("self")}
        sealed = self.new.seal_blob("idx:" + new_key,
                                    json.dumps(out, separators=(",", ":")).encode())
        # a long child name must stay decodable even before anything under it has moved
        where = self.prefix + (self.lay2.encode_rel(d) + "/" if d else "")
        sides = [(f"{where}{enc}{SIDE_SUFFIX}", body) for enc in dirs
                 if is_long(enc) and (body := self.new.long_body(enc)) is not None]
        return Index(old_key, new_key, sealed, sides)

    def indexes(self, plan: Plan) -> tuple[list[Index], list[tuple[str, str]]]:
        """Every directory's new index (read and built, nothing written), and the failures."""
        ready: list[Index] = []
        failed: list[tuple[str, str]] = []
        for d in sorted(plan.dirs, key=len):
            got, err = self._try(self.prepare_index, plan, d)
            if err:
                failed.append((self.lay1.index_key(d), err))
            elif got is not None:
                ready.append(got)
        return ready, failed

    def _dirs_entries(self, d: tuple[str, ...], data: dict[str, Any]) -> dict[str, Any]:
        """Child-directory attributes re-keyed by their scheme-2 names (an entry already in
        scheme 2 — the root's index after an interrupted run — stays; a stale one goes)."""
        enc1 = self.lay1.encode_rel(d).split("/") if d else []
        enc2 = self.lay2.encode_rel(d).split("/") if d else []
        parent = "/".join(d)
        out: dict[str, Any] = {}
        for enc, attrs in (data.get("dirs") or {}).items():
            plain = self.decode(self.old, [*enc1, enc]) or self.decode(self.new, [*enc2, enc])
            if plain is None:
                log.debug("dropping a stale index entry of %s", self.lay1.index_key(d))
                continue
            out[self.new.encode_name(parent, plain[-1])] = attrs
        return out

    # -- 4. objects -----------------------------------------------------------------------------
    def move(self, it: Item) -> None:
        """Copy one object to its new key, re-sealed; delete the old key (markers: later)."""
        self.lay2.encode_rel(it.parts)  # the codec remembers the long names' side objects
        if it.marker and it.size == 0:
            if not self.dry_run:
                self.store.put(it.new, b"", {})
            return
        if it.marker:  # a non-empty `x/` object: kept byte for byte, like any foreign object
            if not self.dry_run:
                self.store.copy(it.old, it.new)
            return
        info = self.raw.head(it.old)
        meta = {k.lower(): v for k, v in (info.metadata or {}).items() if k.lower() != SSEC_META}
        old_rel, new_rel = it.old[len(self.prefix):], it.new[len(self.prefix):]
        attrs = self.old.open_attrs(meta, old_rel)  # IntegrityError: never laundered
        meta.update(self.old.seal_attrs(meta, attrs, new_rel))
        if self.dry_run:
            return
        self.store.copy(it.old, it.new, metadata=meta, if_match=info.etag or None)
        self.raw.delete(it.old)

    def _try(self, fn: Any, *args: Any) -> tuple[Any, str]:
        from s3encfs.store.errors import StoreError

        try:
            return fn(*args), ""
        except (StoreError, IntegrityError, ValueError, NameTooLong) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def run_items(self, items: list[Item], res: Result, stream: Any) -> None:
        from s3encfs.progress import progress

        with progress(len(items), "rekey names", stream=stream) as bar, \
                ThreadPoolExecutor(self.jobs) as pool:
            for it, (_out, err) in zip(items, pool.map(lambda i: self._try(self.move, i), items),
                                       strict=True):
                if err:
                    res.failed.append((it.old, err))
                    log.error("%s: %s", it.old, err)
                else:
                    res.moved += 1
                bar.advance()

    # -- 5. the end -----------------------------------------------------------------------------
    def finish(self, plan: Plan, old_indexes: list[str]) -> None:
        # a marker above a key left alone stays (SeaweedFS may take a directory's contents
        # with its marker): the directories of undecodable keys
        keep = {k[: i + 1] for k in plan.undecodable for i, c in enumerate(k) if c == "/"}
        markers = sorted((it.old for it in plan.items if it.marker and it.old not in keep),
                         key=lambda k: (-k.count("/"), k))  # children before their parents
        self.raw.delete_many(markers)
        self.raw.delete_many(old_indexes)


def migrate(mig: NameMigration, keycheck: dict[str, Any], *, stream: Any = None) -> Result:
    """The whole migration (see the module docstring); `keycheck`: the record read from it."""
    from s3encfs import keycheck as kc

    plan = mig.scan()
    if plan.too_long:
        raise NamesRefused(
            f"{len(plan.too_long)} key(s) would exceed S3's 1,024-byte key limit under name "
            f"scheme 2 (first: {plan.too_long[0]}); shorten those paths (rename through a "
            "mount) first — nothing was changed")
    for key in plan.undecodable[:10]:
        log.warning("%s: the name decodes under neither scheme; left as it is", key)
    ready, bad = mig.indexes(plan)
    if bad:
        raise NamesRefused(
            f"{len(bad)} directory index(es) do not open (first: {bad[0][0]}: {bad[0][1]}); "
            "their directories' attributes would be lost: see `s3encfs check`, delete the "
            "damaged index if you accept that, and rerun"
            + ("" if keycheck.get("names") != kc.MIGRATING else
               " (the bucket stays unmountable until the migration finishes)"))
    res = Result(already=plan.done, indexes=len(ready))
    if mig.dry_run:
        mig.run_items(plan.items, res, stream)
        return res
    if keycheck.get("names") != kc.MIGRATING:
        kc.rewrite(mig.raw, mig.old, mig.prefix,
                   {**keycheck, "names": kc.MIGRATING, "names_from": 1, "names_to": 2})
    for idx in ready:
        for side, body in idx.sides:
            mig.raw.put(side, body, {})
        mig.raw.put(idx.new, idx.sealed, {})
    old_indexes = [idx.old for idx in ready if idx.old != idx.new]
    mig.run_items(plan.items, res, stream)
    if res.failed:
        return res
    mig.finish(plan, old_indexes)
    done = {k: v for k, v in keycheck.items() if k not in ("names_from", "names_to")}
    kc.rewrite(mig.raw, mig.old, mig.prefix, {**done, "names": 2})
    res.finished = True
    return res


def _record(store: Any, codec: Any, prefix: str) -> dict[str, Any]:
    """The keycheck's record, the master key proven by it and the naming key loaded; refuses
    a bucket this command cannot migrate."""
    from s3encfs import keycheck as kc

    where = f"s3://{store.bucket}/{prefix}"
    if getattr(codec, "name", "") != "client" or not codec.encrypts_names:
        raise NamesRefused(f"{where}: --names needs --encryption client with encrypted names")
    try:
        info = kc.verify(store, codec, prefix) or {}
    except kc.KeyCheckError as exc:
        raise NamesRefused(str(exc)) from None
    if "v" not in info:
        raise NamesRefused(f"{where} has no keycheck: mount it once (with --init if needed) "
                           "before migrating its names")
    if info.get("names", 1) not in (1, 2, kc.MIGRATING):
        raise NamesRefused(f"{where}: the keycheck records an unknown name scheme")
    codec.name_key_id = info.get("name_key_id") or codec.name_key_id
    try:
        codec.keys.get(codec.name_key_id)
    except IntegrityError:
        raise NamesRefused(f"names in {where} are encrypted with master key id "
                           f"{codec.name_key_id}, which is not in --key") from None
    return info


def command(store: Any, codec: Any, prefix: str, *, jobs: int, dry_run: bool,
            stream: Any) -> int:
    """`rekey --names 2` after the command built the store and codec: prove the key, run,
    print the summary; the exit status."""
    import time

    import click

    where = f"s3://{store.bucket}/{prefix}"
    info = _record(store, codec, prefix)
    if info.get("names") == 2:
        click.echo(f"rekey {where}: names are already in scheme 2; nothing to do")
        return 0
    t0 = time.monotonic()
    res = migrate(NameMigration(store, codec, prefix, jobs=jobs, dry_run=dry_run), info,
                  stream=stream)
    verb = "would move" if dry_run else "moved"
    click.echo(f"rekey {where}: names to scheme 2: {verb} {res.moved}, already moved "
               f"{res.already}, {res.indexes} directory indexes, failed {len(res.failed)} "
               f"({time.monotonic() - t0:.1f}s)"
               + ("; done, the keycheck records scheme 2" if res.finished else ""))
    for key, err in res.failed[:10]:
        click.echo(f"  failed: {key}: {err}", err=True)
    if res.failed:
        click.echo("  the bucket stays unmountable (half migrated): fix or delete those "
                   "objects, then rerun the same command", err=True)
        return 1
    return 0
