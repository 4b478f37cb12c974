"""Loading one directory: one paginated LIST, the directory's index object, HEADs only for
objects whose ETag neither the index nor the local attribute cache knows (in parallel).

The index object (``.s3encfs/idx/…``, sealed by the codec) holds, per child, the ETag and the
metadata last written, plus the attributes of child directories — S3 keeps no metadata on
``dir/`` markers everywhere, and this makes a cold ``rsync``/``find`` one LIST + one GET per
directory instead of a HEAD per file.  The objects' own metadata stays the source of truth: an
index entry is only used while its ETag matches.
"""

from __future__ import annotations

import json
import logging
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from s3encfs.cache.journal import Journal
from s3encfs.codec import IntegrityError, LogSafe, UndecodableName
from s3encfs.fs.nodes import ObjectRef
from s3encfs.store.errors import DamagedLongName, NotFound
from s3encfs.store.layout import Attrs, Layout, meta_to_attrs
from s3encfs.store.s3 import ObjectInfo, ObjectStore

log = logging.getLogger("s3encfs.listing")

DIR_DEFAULT = stat.S_IFDIR | 0o755
FILE_DEFAULT = stat.S_IFREG | 0o644
# a codec that authenticates attributes never widens a permission it cannot verify: a directory
# whose attributes no readable index vouches for is 0700, owned by the mounting user
DIR_UNVERIFIED = stat.S_IFDIR | 0o700
FILE_UNVERIFIED = stat.S_IFREG | 0o600


@dataclass(slots=True)
class Entry:
    name: str
    attrs: Attrs
    obj: ObjectRef | None  # None for directories
    corrupt: str | None = None
    provisional: bool = False  # attributes from LIST only; a HEAD will tell the real ones


# Above this many unknown objects in one directory, listing does not wait for their HEADs:
# entries get LIST-derived attributes at once and the HEADs run in the background (a
# 100,000-object directory written by another tool lists in seconds, not minutes).
HEAD_INLINE_LIMIT = 2000
HEAD_CHUNK = 256


@dataclass
class DirIndex:
    files: dict[str, tuple[str, dict[str, str]]]  # encoded name -> (etag, metadata)
    dirs: dict[str, dict[str, str]]  # encoded name -> attrs metadata
    self_attrs: dict[str, str] | None

    def to_bytes(self) -> bytes:
        return json.dumps({"v": 1, "files": self.files, "dirs": self.dirs,
                           "self": self.self_attrs}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DirIndex:
        raw: dict[str, Any] = json.loads(data)
        return cls({k: (v[0], v[1]) for k, v in raw.get("files", {}).items()},
                   raw.get("dirs", {}), raw.get("self"))


def unverified_dir_attrs(uid: int, gid: int, when: float) -> Attrs:
    """Attributes of a directory no authenticated source vouches for (fail closed)."""
    return meta_to_attrs({}, default_mode=DIR_UNVERIFIED, size=0, last_modified=when,
                         uid=uid, gid=gid)


def read_index(store: ObjectStore, layout: Layout, parts: tuple[str, ...]) -> DirIndex | None:
    return read_index_at(store, layout, layout.index_key(parts))


def read_index_at(store: ObjectStore, layout: Layout, key: str) -> DirIndex | None:
    """The directory index at `key`; None when there is none or it does not open."""
    try:
        body, _info = store.get(key)
    except NotFound:
        return None
    except IntegrityError as exc:  # s3ec: the store decrypts (e.g. a public-key-only host)
        log.warning("ignoring unreadable directory index %s: %s", key, exc)
        return None
    return open_index(layout, key, body)


async def aread_index_at(store: ObjectStore, layout: Layout, key: str) -> DirIndex | None:
    """`read_index_at` awaited on the CRT with no worker thread (`store.awaitable_gets`)."""
    try:
        body, _info = await store.aget(key)
    except NotFound:
        return None
    return open_index(layout, key, body)


def open_index(layout: Layout, key: str, body: bytes) -> DirIndex | None:
    """The index in `body` (as read from `key`); None when it does not open."""
    try:
        return DirIndex.from_bytes(layout.codec.open_blob("idx:" + key, body))
    except (IntegrityError, ValueError, KeyError, IndexError) as exc:
        log.warning("ignoring unreadable directory index %s: %s", key, exc)
        return None


def write_index(store: ObjectStore, layout: Layout, parts: tuple[str, ...],
                index: DirIndex) -> None:
    store.put(*index_object(layout, parts, index), {})


def index_object(layout: Layout, parts: tuple[str, ...], index: DirIndex) -> tuple[str, bytes]:
    """(key, body) of the index object of the directory at `parts`."""
    key = layout.index_key(parts)
    return key, layout.codec.seal_blob("idx:" + key, index.to_bytes())


def metadata_rewritten(store: ObjectStore, layout: Layout, journal: Journal,
                       parts: tuple[str, ...], etag: str, meta: dict[str, str]) -> None:
    """After a metadata-only self-copy of the file at `parts` (a replayed chmod/utime): the
    object's ETag is usually unchanged (the MD5 of the same body), so the parent's index entry
    and the attribute cache, both trusted while the ETag matches, would go on serving the old
    mode and mtime for ever.  Replace the index entry (if any) and forget the cached meta."""
    journal.forget_meta(layout.file_key(parts))
    index = read_index(store, layout, parts[:-1])
    if index is None:
        return
    enc = layout.codec.encode_name("/".join(parts[:-1]), parts[-1])
    if enc in index.files:
        index.files[enc] = (etag, meta)
        write_index(store, layout, parts[:-1], index)


def attrs_from_object(layout: Layout, info: ObjectInfo, meta: dict[str, str],
                      uid: int, gid: int) -> tuple[Attrs, str | None]:
    """Attributes of a file object; a reason string when it cannot be read back."""
    corrupt = None
    try:
        plain = layout.codec.geometry.plain_size(info.size)
    except IntegrityError as exc:
        plain, corrupt = info.size, LogSafe(exc)
    try:
        attr_meta = layout.codec.open_attrs(meta, layout.rel_key(info.key))
    except IntegrityError as exc:
        attr_meta, corrupt = {}, corrupt or LogSafe(exc)
    sealed = layout.codec.authenticates_attrs
    attrs = meta_to_attrs(attr_meta, default_mode=FILE_UNVERIFIED if sealed else FILE_DEFAULT,
                          size=plain,
                          last_modified=info.last_modified, uid=uid, gid=gid)
    if stat.S_ISDIR(attrs.mode):
        attrs.mode = FILE_DEFAULT
    return attrs, corrupt


def load_directory(store: ObjectStore, layout: Layout, journal: Journal, pool: ThreadPoolExecutor,
                   parts: tuple[str, ...], uid: int, gid: int, default_time: float,
                   known_objects: dict[str, tuple[str, dict[str, str]]] | None = None,
                   listed: tuple[list[ObjectInfo], list[str]] | None = None,
                   index_ahead: tuple[DirIndex | None] | None = None,
                   ) -> tuple[list[Entry], DirIndex | None]:
    """One LIST (+ the directory's index object) → entries.  Metadata comes, without a HEAD,
    from the index, `known_objects` (key → (ETag, metadata) the mount already holds, e.g. what
    it uploaded itself) or the persistent attribute cache, each only while the ETag matches.
    `listed` and `index_ahead` (a 1-tuple: None = no index) were read ahead of this call by a
    cold tree walk (fs/dirprefetch.py); then this makes no request for them."""
    prefix = layout.dir_prefix(parts)
    index_future = None if index_ahead else pool.submit(read_index, store, layout, parts)
    if listed is not None:  # split out of a subtree LIST (treelist.py)
        files, prefixes = listed
    else:
        files, prefixes = _list_one_level(store, prefix)
    index = index_future.result() if index_future is not None else \
        index_ahead[0] if index_ahead else None
    parent = "/".join(parts)
    entries = _dir_entries(layout, prefix, parent, prefixes, index, uid, gid, default_time)
    known, need_head = _sort_files(layout, journal, prefix, parent, files, index,
                                   known_objects or {}, entries)
    inline = need_head if len(need_head) <= HEAD_INLINE_LIMIT else []
    known.extend(_head_inline(store, journal, pool, inline))
    _add_files(layout, entries, known, uid, gid)
    if not inline:
        for name, info in need_head:
            entries[name] = _provisional_entry(layout, name, info, uid, gid)
    return list(entries.values()), index


def entries_read_ahead(layout: Layout, parts: tuple[str, ...], uid: int, gid: int,
                       default_time: float,
                       known_objects: dict[str, tuple[str, dict[str, str]]],
                       listed: tuple[list[ObjectInfo], list[str]], index: DirIndex | None,
                       ) -> list[Entry] | None:
    """`load_directory`'s entries from a listing and index read ahead, when every file's
    metadata is known at its ETag from the index or `known_objects`: no request and no
    attribute cache (whose lock a worker thread may hold), so the caller needs no worker
    thread.  None when some file would need either: `load_directory` then does it all."""
    prefix = layout.dir_prefix(parts)
    parent = "/".join(parts)
    files, prefixes = listed
    entries = _dir_entries(layout, prefix, parent, prefixes, index, uid, gid, default_time)
    known, need_head = _sort_files(layout, None, prefix, parent, files, index, known_objects,
                                   entries)
    if need_head:
        return None
    _add_files(layout, entries, known, uid, gid)
    return list(entries.values())


def _add_files(layout: Layout, entries: dict[str, Entry],
               known: list[tuple[str, ObjectInfo, dict[str, str]]], uid: int, gid: int) -> None:
    for name, info, meta in known:
        attrs, corrupt = attrs_from_object(layout, info, meta, uid, gid)
        obj = ObjectRef(info.key, info.etag, info.size, attrs.size, meta)
        entries[name] = Entry(name, attrs, obj, corrupt)


def _list_one_level(store: ObjectStore, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
    files: list[ObjectInfo] = []
    prefixes: list[str] = []
    for page in store.list_pages(prefix, "/"):
        files.extend(page.objects)
        prefixes.extend(page.prefixes)
    return files, prefixes


def _decode(layout: Layout, parent: str, enc: str, key: str, what: str) -> str | None:
    """The plaintext name of `enc` in `parent`; None (logged) when it is not one of ours; a
    long name's record that belongs elsewhere fails the whole listing (`DamagedLongName`)."""
    try:
        return layout.codec.decode_name(parent, enc)
    except UndecodableName:
        log.debug("skipping undecodable %s %r", what, key)
        return None
    except IntegrityError as exc:  # a long name's record from another directory
        raise DamagedLongName(str(exc), key) from None


def _dir_entries(layout: Layout, prefix: str, parent: str, prefixes: list[str],
                 index: DirIndex | None, uid: int, gid: int,
                 default_time: float) -> dict[str, Entry]:
    """The subdirectories (common prefixes); their attributes come from this index."""
    entries: dict[str, Entry] = {}
    control = layout.control_prefix()
    for p in prefixes:
        if p == control:
            continue
        enc = p[len(prefix):-1]
        if not enc or enc in (".", ".."):
            log.warning("skipping unrepresentable prefix %r", p)
            continue
        name = _decode(layout, parent, enc, p, "directory name")
        if name is None:
            continue
        dmeta = (index.dirs.get(enc) if index else None) or {}
        if not dmeta and layout.codec.authenticates_attrs:
            log.warning("no authenticated attributes for directory %s (index %s); showing it "
                        "as 0700", p, "missing or unreadable" if index is None else "stale")
            attrs = unverified_dir_attrs(uid, gid, default_time)
        else:
            attrs = meta_to_attrs(dmeta, default_mode=DIR_DEFAULT, size=0,
                                  last_modified=default_time, uid=uid, gid=gid)
        attrs.mode = stat.S_IFDIR | stat.S_IMODE(attrs.mode)
        entries[name] = Entry(name, attrs, None)
    return entries


def _sort_files(layout: Layout, journal: Journal | None, prefix: str, parent: str,
                files: list[ObjectInfo], index: DirIndex | None,
                known_objects: dict[str, tuple[str, dict[str, str]]],
                entries: dict[str, Entry],
                ) -> tuple[list[tuple[str, ObjectInfo, dict[str, str]]],
                           list[tuple[str, ObjectInfo]]]:
    """Files whose metadata is known at this ETag (index, `known_objects`, attribute cache),
    and the rest, which need a HEAD (with no `journal`: the cache is not asked).  A name that
    is also a directory shows the directory."""
    need_head: list[tuple[str, ObjectInfo]] = []
    known: list[tuple[str, ObjectInfo, dict[str, str]]] = []
    for info in files:
        enc = info.key[len(prefix):]
        if not enc or enc.endswith("/") or enc in (".", ".."):
            continue  # the directory's own marker, or a marker-like object we cannot represent
        name = _decode(layout, parent, enc, info.key, "name")
        if name is None:
            continue
        if name in entries:
            log.warning("%s is both a file and a directory; showing the directory", info.key)
            continue
        hit = index.files.get(enc) if index else None
        if hit is None or hit[0] != info.etag:
            hit = known_objects.get(info.key)
        if hit is not None and hit[0] == info.etag:
            known.append((name, info, hit[1]))
            continue
        cached = journal.cached_meta(info.key, info.etag) if journal is not None else None
        if cached is not None:
            known.append((name, info, cached))
        else:
            need_head.append((name, info))
    return known, need_head


def _head_inline(store: ObjectStore, journal: Journal, pool: ThreadPoolExecutor,
                 inline: list[tuple[str, ObjectInfo]],
                 ) -> list[tuple[str, ObjectInfo, dict[str, str]]]:
    """HEAD each file of a small listing now (in chunks); the metadata goes to the attribute
    cache.  A file gone since the LIST is left out; one whose HEAD failed shows with none."""
    def head(item: tuple[str, ObjectInfo]) -> tuple[str, ObjectInfo, dict[str, str] | None]:
        name, info = item
        try:
            full = store.head(info.key)
        except NotFound:
            return name, info, None
        except Exception as exc:  # unreadable object: show it, reads will fail clearly
            log.warning("HEAD %s failed: %s", info.key, exc)
            return name, info, {}
        if full.etag != info.etag:
            info = full
        return name, info, full.metadata or {}

    out: list[tuple[str, ObjectInfo, dict[str, str]]] = []
    for i in range(0, len(inline), HEAD_CHUNK):  # chunks bound the futures held at once
        fresh: list[tuple[str, str, dict[str, str]]] = []
        for name, info, meta in pool.map(head, inline[i:i + HEAD_CHUNK]):
            if meta is None:
                continue
            out.append((name, info, meta))
            fresh.append((info.key, info.etag, meta))
        journal.cache_meta_many(fresh)
    return out


def _provisional_entry(layout: Layout, name: str, info: ObjectInfo, uid: int,
                       gid: int) -> Entry:
    """A file of a big listing, with LIST-only attributes until a HEAD resolves it."""
    attrs, corrupt = attrs_from_object(layout, info, {}, uid, gid)
    obj = ObjectRef(info.key, info.etag, info.size, attrs.size, {})
    # no metadata yet (not "stripped"): the HEAD that resolves it decides
    corrupt = None if layout.codec.authenticates_attrs else corrupt
    return Entry(name, attrs, obj, corrupt, provisional=True)


def head_many(store: ObjectStore, journal: Journal, pool: ThreadPoolExecutor,
              keys: list[str]) -> dict[str, ObjectInfo]:
    """HEAD `keys` in parallel (chunked); missing objects are left out."""
    out: dict[str, ObjectInfo] = {}

    def one(key: str) -> ObjectInfo | None:
        try:
            return store.head(key)
        except NotFound:
            return None
        except Exception as exc:
            log.warning("HEAD %s failed: %s", key, exc)
            return None

    for i in range(0, len(keys), HEAD_CHUNK):
        infos = [info for info in pool.map(one, keys[i:i + HEAD_CHUNK]) if info is not None]
        journal.cache_meta_many([(x.key, x.etag, x.metadata or {}) for x in infos])
        out.update((x.key, x) for x in infos)
    return out

