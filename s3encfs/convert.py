"""`s3encfs rekey --from client|s3ec`: convert a bucket/prefix between our client format and
Amazon S3 Encryption Client objects, either way (the command and its setup: convert_setup.py).

The two formats share nothing a server-side copy could keep: every body is re-encrypted, and
every key changes, since client-format names are encrypted (AES-SIV) and S3EC names are plain.
So the conversion walks the *source* tree the way a mount sees it and, per directory:

1. writes the target's marker (``dir/``) — an empty directory survives;
2. per file (symlinks and special files are files whose body is the link target / empty):
   HEAD, open the sealed POSIX attributes, GET the whole body and authenticate all of it with
   the source codec (client: every segment; S3EC: the whole-object GCM tag, V3 commitment), then
   PUT it under a fresh data key with the target codec, attributes sealed the target's way, at
   the target's key (decrypted name for S3EC, encrypted name for the client format); then the
   source object is deleted, only if its ETag is still the one that was read;
3. recurses into subdirectories;
4. when the whole subtree is done: writes the directory's target index (the attributes of its
   subdirectories, and of the root itself: `fs.listing.DirIndex`), then deletes the source
   marker and index.

Nothing is lost to a kill: a source object goes only after its target is in S3, and a source
directory's index (the only record of its subdirectories' attributes) only after everything
below it is converted. A re-run walks what is left: converted objects are no longer in the
source listing (client → S3EC: plain names do not decode as client names; S3EC → client:
names that decode as the target's are skipped), a target written before the kill is simply
written again from the still-present source. Where both formats use the same keys (client mode
with ``--plain-names``), objects are rewritten in place, conditional on the source's ETag, and
those already in the target format are skipped.

Objects are converted whole, in memory (like `rekey --new-data-keys`), one PUT each.
"""

from __future__ import annotations

import logging
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from s3encfs.codec import IntegrityError, UndecodableName
from s3encfs.crypto.names import SIDE_SUFFIX

log = logging.getLogger("s3encfs.rekey")

MAX_BODY = 5 * 1024**3  # one PUT


@dataclass
class Side:
    """One format of the prefix: `store` reads/writes it (S3ECStore: plaintext in and out), `raw`
    is a plain ObjectStore (raw HEADs, deletes), `codec` and `layout` name and seal."""

    store: Any
    raw: Any
    codec: Any
    layout: Any

    @property
    def s3ec(self) -> bool:
        return bool(self.codec.name == "s3ec")

    def holds(self, meta: dict[str, str] | None) -> bool:
        """Whether raw object metadata is in this side's format."""
        from s3encfs.crypto import s3ec_format as fmt

        low = fmt.lower_keys(meta or {})
        if self.s3ec:
            return fmt.is_s3ec({k: v for k, v in low.items() if k in fmt.ALL_NAMES})
        return "s3encfs-kid" in low


@dataclass
class Tally:
    converted: int = 0
    skipped: int = 0
    directories: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, key: str = "", err: str = "") -> None:
        with self.lock:
            if what == "failed":
                self.failed.append((key, err))
            else:
                setattr(self, what, getattr(self, what) + 1)


class Converter:
    def __init__(self, src: Side, dst: Side, *, jobs: int = 8, dry_run: bool = False,
                 limit: int | None = None) -> None:
        self.src = src
        self.dst = dst
        self.jobs = jobs
        self.dry_run = dry_run
        self.limit = limit  # tests: stop (as if killed) after this many target writes
        self.tally = Tally()
        self._writes = 0

    def run(self) -> Tally:
        with ThreadPoolExecutor(self.jobs) as pool:
            self._pool = pool
            self._dir(())
        return self.tally

    # -- the walk --------------------------------------------------------------------------
    def _children(self, parts: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[str]]:
        """(name, source key) of the files and the names of the subdirectories still in the
        source format under `parts`."""
        lay = self.src.layout
        prefix, control = lay.dir_prefix(parts), lay.control_prefix()
        files: list[tuple[str, str]] = []
        dirs: list[str] = []
        for page in self.src.store.list_pages(prefix):
            for p in page.prefixes:
                name = self._decode(parts, p[len(prefix):-1]) if p != control else None
                if name is not None:
                    dirs.append(name)
            for o in page.objects:
                enc = o.key[len(prefix):]
                name = self._decode(parts, enc) if enc and not enc.endswith("/") else None
                if name is not None:
                    files.append((name, o.key))
        return files, dirs

    def _decode(self, parts: tuple[str, ...], enc: str) -> str | None:
        """The plaintext name of a source entry; None for what the source did not write, or
        (S3EC source, client target) for names the target wrote: converted already."""
        from s3encfs.crypto.names import is_long
        from s3encfs.store.longnames import is_side_key

        parent = "/".join(parts)
        if self.dst.codec.encrypts_names:
            if is_long(enc) or is_side_key(enc):
                return None  # the target's hashed long name (or its side object)
            try:
                self.dst.codec.decode_name(parent, enc)
                return None
            except UndecodableName:
                pass
        try:
            return str(self.src.layout.decode_child(parts, enc))
        except UndecodableName:
            return None

    def _dir(self, parts: tuple[str, ...]) -> bool:
        """Convert one directory and everything below it; True when all of it is done."""
        if self.stopped():
            return False
        index = self._read_index(parts)
        if parts and not self.dry_run:
            try:
                self.dst.store.put(self.dst.layout.dir_prefix(parts), b"", {})
            except Exception as exc:  # NameTooLong (the target's name), StoreError
                self._failed(self.src.layout.dir_prefix(parts), exc)
                return False
        files, dirs = self._children(parts)
        ok = all(list(self._pool.map(lambda f: self._file(parts, *f), files)))
        for name in dirs:
            ok = self._dir((*parts, name)) and ok
        if not ok or self.dry_run or self.stopped():
            return False
        self._finish_dir(parts, index)
        self.tally.add("directories")
        return True

    def _read_index(self, parts: tuple[str, ...]) -> Any:
        """The source index (its subdirectories' attributes); where both formats share its key,
        the target's once it was converted."""
        from s3encfs.fs.listing import read_index

        index = read_index(self.src.store, self.src.layout, parts)
        if index is None and self._same_index_key(parts):
            index = read_index(self.dst.store, self.dst.layout, parts)
        return index

    def _finish_dir(self, parts: tuple[str, ...], index: Any) -> None:
        from s3encfs.fs.listing import DirIndex, write_index

        attrs: dict[str, dict[str, str]] = {}
        for enc, meta in (index.dirs.items() if index is not None else ()):
            name = self._plain_dir_name(parts, enc)
            if name is not None and meta:
                attrs[self.dst.codec.encode_name("/".join(parts), name)] = meta
        self_attrs = index.self_attrs if index is not None and not parts else None
        write_index(self.dst.store, self.dst.layout, parts, DirIndex({}, attrs, self_attrs))
        self._sweep_orphan_sides(parts)
        if not self._same_index_key(parts):
            self.src.raw.delete(self.src.layout.index_key(parts))
        if parts and self.src.layout.dir_prefix(parts) != self.dst.layout.dir_prefix(parts):
            self.src.store.delete(self.src.layout.dir_prefix(parts))

    def _sweep_orphan_sides(self, parts: tuple[str, ...]) -> None:
        """Delete the source's long-name side objects in a converted directory whose name is
        gone: a kill between the DELETE of a hashed name and that of its side object
        (store/longnames.py deletes the name first, so a name never loses its record) leaves
        one, and the source listing hides side objects, so nothing else would ever remove it.
        Only a side object that authenticates under the source's name key goes (in the root,
        an S3EC target's plain names share the prefix), and only if neither an object, a
        marker nor anything below its name exists."""
        from s3encfs.store.errors import NotFound
        from s3encfs.store.longnames import is_side_key

        src = self.src
        if getattr(src.codec, "name_scheme", 1) != 2:
            return
        prefix = src.layout.dir_prefix(parts)
        for page in src.raw.list_pages(prefix):
            for o in page.objects:
                rel = o.key[len(prefix):]
                if "/" in rel or not is_side_key(rel):
                    continue
                name_key = o.key[: -len(SIDE_SUFFIX)]
                try:
                    body, _info = src.raw.get(o.key)
                except NotFound:
                    continue
                if not src.codec.learn_long(rel[: -len(SIDE_SUFFIX)], body):
                    continue  # not ours: left alone (`check` reports it)
                if self._name_in_use(name_key):
                    continue
                log.info("deleting an orphaned long-name side object %s", o.key)
                src.raw.delete(o.key)

    def _name_in_use(self, name_key: str) -> bool:
        from s3encfs.store.errors import NotFound

        for key in (name_key, name_key + "/"):
            try:
                self.src.raw.head(key)
                return True
            except NotFound:
                pass
        for page in self.src.raw.list_pages(name_key + "/", None):
            if page.objects or page.prefixes:
                return True
            break
        return False

    def _plain_dir_name(self, parts: tuple[str, ...], enc: str) -> str | None:
        for side in (self.src, self.dst):
            try:
                return str(side.layout.decode_child(parts, enc))
            except (UndecodableName, IntegrityError):
                continue
        return None

    def _same_index_key(self, parts: tuple[str, ...]) -> bool:
        """The root's index has one key in both formats (so has every index in place)."""
        return bool(self.src.layout.index_key(parts) == self.dst.layout.index_key(parts))

    def _same_keys(self) -> bool:
        return not self.src.codec.encrypts_names and not self.dst.codec.encrypts_names

    # -- one file --------------------------------------------------------------------------
    def _file(self, parts: tuple[str, ...], name: str, key: str) -> bool:
        from s3encfs.store.errors import NotFound

        if self.stopped():
            return False
        try:
            self._convert(parts, name, key)
            return True
        except NotFound:
            return True  # deleted meanwhile: nothing to convert
        except _Stop:
            return False
        except Exception as exc:  # IntegrityError, StoreError, NameTooLong, ...: left as is
            self._failed(key, exc)
            return False

    def _failed(self, key: str, exc: Exception) -> None:
        log.error("%s: %s", key, exc)
        self.tally.add("failed", key, f"{type(exc).__name__}: {exc}")

    def _convert(self, parts: tuple[str, ...], name: str, key: str) -> None:
        raw = self.src.raw.head(key)
        if self._same_keys() and self.dst.holds(raw.metadata):
            self.tally.add("skipped")
            return
        attrs, plain = self._read_source(key, raw.etag)
        dst_key = self.dst.layout.file_key((*parts, name))
        if self.dry_run:
            self.tally.add("converted")
            return
        if len(plain) > MAX_BODY:
            raise ValueError(f"{len(plain)} bytes: larger than one PUT (5 GiB)")
        in_place = dst_key == key
        self._put_target(dst_key, plain, attrs, raw.etag if in_place else None)
        with self.tally.lock:
            self._writes += 1
            if self.limit is not None and self._writes >= self.limit:
                raise _Stop()  # as if killed here: the target is written, the source still there
        if not in_place:
            self._delete_source(key, raw.etag)
        self.tally.add("converted")

    def _read_source(self, key: str, etag: str) -> tuple[dict[str, str], bytes]:
        """The sealed attributes and the whole plaintext, all of it authenticated."""
        src = self.src
        if src.s3ec:
            body, info = src.store.get(key, if_match=etag)  # whole-object tag (and V3 commitment)
            attrs = src.codec.open_attrs(info.metadata or {})
            if "mode" not in attrs:  # an SDK's object: what an s3ec mount shows for it
                ns = int(info.last_modified * 1e9)
                attrs = {"mode": str(stat.S_IFREG | 0o644),
                         "mtime": f"{ns // 10**9}.{ns % 10**9:09d}", **attrs}
            return attrs, body
        from s3encfs.crypto.envelope import decrypt_object

        body, info = src.store.get(key, if_match=etag)
        meta = dict(info.metadata or {})
        attrs = src.codec.open_attrs(meta, src.layout.rel_key(key))
        return attrs, decrypt_object(src.codec.open_object(meta), body)

    def _put_target(self, key: str, plain: bytes, attrs: dict[str, str],
                    if_match: str | None) -> str:
        dst = self.dst
        if dst.s3ec:
            return str(dst.store.put(key, plain, attrs, if_match=if_match))
        from s3encfs.crypto.envelope import encrypt_object
        from s3encfs.fs.sealing import cipher_meta

        cipher, fresh = dst.codec.new_object()
        meta = {**cipher_meta(fresh),
                **dst.codec.seal_attrs(fresh, attrs, dst.layout.rel_key(key))}
        return str(dst.store.put(key, encrypt_object(cipher, plain), meta, if_match=if_match))

    def _delete_source(self, key: str, etag: str) -> None:
        """Only the version that was converted: a changed source stays (and is reported)."""
        now = self.src.raw.head(key)
        if now.etag != etag:
            raise ValueError(f"changed while converting (ETag {etag} -> {now.etag}); its "
                             "converted copy holds the old contents: run again")
        self.src.store.delete(key)

    def stopped(self) -> bool:
        return self.limit is not None and self._writes >= self.limit


class _Stop(OSError):
    """The test limit was reached (an interruption at a chosen point)."""
