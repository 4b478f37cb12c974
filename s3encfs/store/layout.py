"""Where things live in the bucket: path ⇄ key, POSIX attributes ⇄ object metadata.

A file is one object at ``prefix + encoded path``; a directory is a ``dir/`` marker object.
POSIX attributes travel in ``x-amz-meta-mode|uid|gid|mtime|atime|ctime`` (the names s3fs-fuse
and rclone read; times are ``seconds.nanoseconds``), passed through the codec so an encrypting
codec can seal them.  Directory attributes also go into the parent directory's *index* object
under ``prefix + .s3encfs/idx/`` because some servers (SeaweedFS) drop metadata on ``dir/``
markers; the index doubles as a listing cache validated by ETag (see fs/listing.py).

"Layout" here is the bucket's: which key and metadata each path has.  The arithmetic of segments
inside one object body is `codec.SegmentGeometry` (a codec's ``geometry``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
import time
from dataclasses import dataclass, field

from s3encfs.codec import Codec, NameTooLong

CONTROL_DIR = ".s3encfs"
MAX_KEY_BYTES = 1024
log = logging.getLogger("s3encfs.store")
MAX_NAME_BYTES = 255
REL_CACHE = 4096  # relative keys memoized by Layout.encode_rel (~300 bytes each in client mode)
LONG_MARK = "gl-"  # crypto/names.py LONG_PREFIX: a hashed long-name component


@dataclass(slots=True)
class Attrs:
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    rdev: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def copy(self) -> Attrs:
        return Attrs(self.mode, self.uid, self.gid, self.size, self.mtime_ns, self.atime_ns,
                     self.ctime_ns, self.rdev, dict(self.xattrs))


def _fmt_ns(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}"


def _parse_ns(text: str) -> int:
    text = text.strip()
    if "." in text:
        sec, frac = text.split(".", 1)
        frac = (frac + "000000000")[:9]
        return int(sec) * 1_000_000_000 + int(frac)
    return int(text) * 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


def attrs_to_meta(a: Attrs) -> dict[str, str]:
    """POSIX attributes as plain ``x-amz-meta-*`` entries (before the codec seals them)."""
    meta = {
        "mode": str(a.mode),
        "uid": str(a.uid),
        "gid": str(a.gid),
        "mtime": _fmt_ns(a.mtime_ns),
        "atime": _fmt_ns(a.atime_ns),
        "ctime": _fmt_ns(a.ctime_ns),
    }
    if a.rdev:
        meta["rdev"] = str(a.rdev)
    if a.xattrs:
        encoded = {base64.b64encode(k).decode(): base64.b64encode(v).decode()
                   for k, v in a.xattrs.items()}
        meta["xattr"] = json.dumps(encoded, separators=(",", ":"), sort_keys=True)
    return meta


# Foreign metadata (objects written by other tools, or damaged) is clamped per value: a number
# outside what the kernel can take (uid/gid/rdev 32-bit, (uid_t)-1 excluded; timestamps whose
# seconds fit 64 bits; a mode of a known file type in 16 bits) is replaced by the default, as if
# absent — never an error for the directory, never a wider mode than the default.
_ID_LIMIT = (1 << 32) - 1
_NS_LIMIT = (1 << 62)
_FILE_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK,
               stat.S_IFCHR, stat.S_IFBLK}
_foreign_seen: set[tuple[str, str]] = set()


def _foreign(name: str, value: str) -> None:
    """Log an invalid metadata value once (per field and value; bounded)."""
    if (name, value[:40]) not in _foreign_seen and len(_foreign_seen) < 1000:
        _foreign_seen.add((name, value[:40]))
        log.warning("ignoring invalid %s=%r in object metadata (default used)", name, value[:40])


def meta_to_attrs(meta: dict[str, str], *, default_mode: int, size: int, last_modified: float,
                  uid: int = 0, gid: int = 0) -> Attrs:
    """Attributes from (unsealed) metadata; objects written by other tools get sane defaults."""
    lm = int(last_modified * 1_000_000_000)
    mtime = _meta_ns(meta, "mtime", lm)
    return Attrs(mode=_meta_mode(meta, default_mode), uid=_meta_int(meta, "uid", uid),
                 gid=_meta_int(meta, "gid", gid), size=size, mtime_ns=mtime,
                 atime_ns=_meta_ns(meta, "atime", mtime), ctime_ns=_meta_ns(meta, "ctime", mtime),
                 rdev=_meta_int(meta, "rdev", 0), xattrs=_meta_xattrs(meta))


def _meta_int(meta: dict[str, str], name: str, default: int, limit: int = _ID_LIMIT) -> int:
    try:
        value = int(meta[name])
    except (KeyError, ValueError):
        return default
    if 0 <= value < limit:
        return value
    _foreign(name, meta[name])
    return default


def _meta_ns(meta: dict[str, str], name: str, default: int) -> int:
    try:
        value = _parse_ns(meta[name])
    except (KeyError, ValueError):
        return default
    if -_NS_LIMIT < value < _NS_LIMIT:
        return value
    _foreign(name, meta[name])
    return default


def _meta_mode(meta: dict[str, str], default_mode: int) -> int:
    """The mode; a bare permission set takes the default's file type; a type we do not serve
    (or bits above 16) means the default."""
    mode = _meta_int(meta, "mode", default_mode, limit=1 << 32)
    if stat.S_IFMT(mode) == 0:
        mode |= stat.S_IFMT(default_mode)
    if stat.S_IFMT(mode) not in _FILE_TYPES or mode >> 16:
        _foreign("mode", meta.get("mode", ""))
        mode = default_mode
    return mode


def _meta_xattrs(meta: dict[str, str]) -> dict[bytes, bytes]:
    if "xattr" not in meta:
        return {}
    try:
        raw = json.loads(meta["xattr"])
        return {base64.b64decode(k): base64.b64decode(v) for k, v in raw.items()}
    except (ValueError, TypeError):
        return {}


class Layout:
    """Maps plaintext paths (tuples of str components) to keys under a prefix."""

    def __init__(self, prefix: str, codec: Codec):
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.codec = codec
        self._rel: dict[tuple[str, ...], str] = {}  # encode_rel's memo

    def encode_rel(self, parts: tuple[str, ...]) -> str:
        """The key of `parts` relative to the prefix (NameTooLong). Memoized by `parts`: one
        file's key is asked for at create, rename, upload and index time, and each miss joins
        and encodes every component again (13 µs a call in client mode, 3 in plain). Sound: the
        encoding is deterministic. Keys with a hashed long-name component are not kept, so
        their encoding still refreshes the name cipher's record of the side object's body."""
        hit = self._rel.get(parts)
        if hit is not None:
            return hit
        rel = self._encode_rel(parts)
        if LONG_MARK not in rel:
            if len(self._rel) >= REL_CACHE:
                self._rel.clear()
            self._rel[parts] = rel
        return rel

    def check_rel(self, parts: tuple[str, ...]) -> None:
        """Raise what `encode_rel(parts)` would (NameTooLong, ValueError), without encrypting
        the last component when the codec can tell its encoded length: a name checked at
        create is often a temporary one renamed before its upload (rsync's ``.name.XXXXXX``),
        whose key is never needed (one AES-SIV and base32 per file, ~16 us)."""
        n = self.codec.encoded_len(parts[-1]) if parts and parts not in self._rel and \
            len(parts[-1].encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES else None
        if n is None:
            self.encode_rel(parts)
            return
        head = self.encode_rel(parts[:-1]) + "/" if len(parts) > 1 else ""
        if len((self.prefix + head).encode()) + n + 1 > MAX_KEY_BYTES:
            raise NameTooLong("/".join(parts)[:60])

    def _encode_rel(self, parts: tuple[str, ...]) -> str:
        out = []
        for i, name in enumerate(parts):
            if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise NameTooLong(name[:40])
            parent = "/".join(parts[:i])
            enc = self.codec.encode_name(parent, name)
            try:
                enc.encode("utf-8")
            except UnicodeEncodeError as exc:  # non-UTF-8 name in plain-names mode
                raise ValueError(f"name is not valid UTF-8: {name!r}") from exc
            out.append(enc)
        rel = "/".join(out)
        if len((self.prefix + rel).encode()) + 1 > MAX_KEY_BYTES:
            raise NameTooLong("/".join(parts)[:60])
        return rel

    def file_key(self, parts: tuple[str, ...]) -> str:
        return self.prefix + self.encode_rel(parts)

    def dir_prefix(self, parts: tuple[str, ...]) -> str:
        """The key prefix of a directory's children ('' path = the mount root)."""
        if not parts:
            return self.prefix
        return self.prefix + self.encode_rel(parts) + "/"

    def index_key(self, parts: tuple[str, ...]) -> str:
        return self._index_key_of_rel(self.encode_rel(parts) if parts else "")

    def index_key_at(self, dir_prefix: str) -> str:
        """`index_key` of the directory whose `dir_prefix` this is (a listing's prefix, with
        no plaintext names at hand: the index read-ahead of fs/dirprefetch.py)."""
        if not dir_prefix.startswith(self.prefix):
            raise ValueError(f"prefix {dir_prefix[:60]!r} is not under the mount's prefix")
        return self._index_key_of_rel(dir_prefix[len(self.prefix):].removesuffix("/"))

    def _index_key_of_rel(self, rel: str) -> str:
        digest = hashlib.sha256(rel.encode()).hexdigest()[:40]
        return f"{self.prefix}{CONTROL_DIR}/idx/{digest}"

    def control_prefix(self) -> str:
        return f"{self.prefix}{CONTROL_DIR}/"

    def rel_key(self, key: str) -> str:
        """A key relative to the prefix: what a sealing codec binds an object's attrs to."""
        if not key.startswith(self.prefix):
            raise ValueError(f"key {key[:60]!r} is not under the prefix")
        return key[len(self.prefix):]

    def decode_child(self, parent: tuple[str, ...], encoded: str) -> str:
        return self.codec.decode_name("/".join(parent), encoded)
