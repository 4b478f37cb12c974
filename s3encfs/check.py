"""`s3encfs check`: verify that everything under s3://BUCKET[/PREFIX] would read back.

For every object: a HEAD (the store verifies the SSE headers of the response against the policy,
so an object stored without — or with the wrong — server-side encryption is reported), and in
client mode the key metadata and the sealed attributes must open under the keyring's master keys
and the object size must be a valid encrypted size. With ``--data`` every body is downloaded (in
ranged chunks) and every segment decrypted and authenticated. Sealed directory indexes under
``.s3encfs/idx/`` are opened too; other ``.s3encfs/`` control objects are skipped.

Also problems (client mode): objects without (valid) sealed attributes — format v2 binds them to
the object's key, so a copied, moved or swapped object is caught here; a directory with children
but no index; two objects sharing one object id (a copy); names this codec cannot decode;
long-name side objects that are orphaned or do not authenticate, and long names without one
(check_longnames.py).

Also lists multipart uploads that were started and never completed or aborted (they cost storage
but are invisible); ``--abort-uploads`` aborts them. Read-only otherwise (except that, exactly as
a mount does, a bucket with no key-check blob gets one in client mode).

Exit status: 0 when every object reads back, 1 otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import click

from s3encfs.cli_options import bucket_options
from s3encfs.s3ec_check import s3ec_options

log = logging.getLogger("s3encfs.check")

CONTROL = ".s3encfs/"
CHUNK_SEGMENTS = 128  # segments per ranged GET with --data (8 MiB at the default segment size)


@dataclass
class Report:
    objects: int = 0  # files and directory markers checked
    markers: int = 0
    indexes: int = 0
    data_checked: int = 0  # objects whose bodies were read and authenticated
    bytes_read: int = 0
    skipped_names: int = 0  # undecodable names (not written by this codec)
    vanished: int = 0  # deleted between LIST and HEAD
    problems: list[tuple[str, str]] = field(default_factory=list)
    uploads: list[tuple[str, str, float]] = field(default_factory=list)
    aborted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class Checker:
    def __init__(self, store: Any, codec: Any, prefix: str, *, data: bool = False) -> None:
        from s3encfs.store.layout import Layout

        self.store = store
        self.codec = codec
        self.client = getattr(codec, "name", "") == "client"
        self.prefix = prefix
        self.layout = Layout(prefix, codec)
        self.data = data
        self.oids: dict[str, list[str]] = {}  # object id -> keys (client mode)
        self.old_format = 0  # client format v1 objects (readable; `rekey` migrates them)
        self.s3ec: Any = None  # s3ec mode: an s3ec_check.S3ECChecker (set by the command)
        self._lock = threading.Lock()

    # -- one object; returns (kind, problem or None, bytes read) ---------------------------------
    def one(self, key: str, size: int) -> tuple[str, str | None, int]:
        from s3encfs.codec import IntegrityError, UndecodableName
        from s3encfs.store.errors import NotFound, SseMismatch, StoreError

        rel = key[len(self.prefix):]
        if self.s3ec is not None and (not rel.startswith(CONTROL)
                                      or rel.startswith(CONTROL + "idx/")):  # S3EC too
            return self.s3ec.one(key)
        try:
            if rel.startswith(CONTROL):
                return self._control_one(key, rel)
            return self._object_one(key, rel, size)
        except UndecodableName:
            return "undecodable", "name does not decode under the naming key", 0
        except NotFound:
            return "vanished", None, 0
        except SseMismatch as exc:
            return "object", f"wrong or missing SSE: {exc}", 0
        except IntegrityError as exc:
            return "object", f"authentication failed: {exc}", 0
        except (StoreError, ValueError) as exc:
            return "object", f"{type(exc).__name__}: {exc}", 0
        except Exception as exc:  # one bad object must not stop the walk
            return "object", f"{type(exc).__name__}: {exc}", 0

    def _control_one(self, key: str, rel: str) -> tuple[str, str | None, int]:
        """A `.s3encfs/` object: sealed indexes must open; the rest is skipped."""
        if self.client and rel.startswith(CONTROL + "idx/"):
            body, _info = self.store.get(key)
            json.loads(self.codec.open_blob("idx:" + key, body))
            return "index", None, len(body)
        return "control", None, 0

    def _object_one(self, key: str, rel: str, size: int) -> tuple[str, str | None, int]:
        """A file or directory marker: its name, HEAD (SSE), client metadata and attributes,
        and with --data its body."""
        if not self._names_decode(rel):
            return "undecodable", "name does not decode under the naming key", 0
        marker = key.endswith("/")
        if marker and size == 0:
            # ENCRYPTION.md: empty dir/ markers may carry no SSE (SeaweedFS keeps them as
            # filer directories); they hold no data, so there is nothing to hold to SSE
            return "marker", None, 0
        info = self._head(key)
        if marker:
            return "marker", None, 0
        nread = 0
        if self.client:
            meta = info.metadata or {}
            cipher = self.codec.open_object(meta)
            with self._lock:
                self.oids.setdefault(meta.get("s3encfs-oid", ""), []).append(key)
                self.old_format += meta.get("s3encfs-v") == "1"
            self.codec.open_attrs(meta, rel)
            plain = self.codec.geometry.plain_size(info.size)
            if self.data:
                nread = self._read_segments(key, info.etag, cipher, plain, info.size)
        elif self.data:
            nread = self._read_plain(key, info.etag, info.size)
        return ("data" if self.data else "object"), None, nread

    def _head(self, key: str) -> Any:
        """HEAD (trying the keyring's SSE-C keys like every read does), then hold the response's
        SSE headers to the policy: reads accept an object without SSE, `check` must not."""
        from s3encfs.store.s3 import _info

        store = self.store

        def attempt(args: dict[str, Any]) -> dict[str, Any]:
            resp: dict[str, Any] = store._call("HeadObject", key, store.client.head_object,
                                               Key=key, **args)
            return resp

        resp = store._with_read_key(key, attempt)
        if store.sse.mode != "none":
            store.sse.verify(resp, "head", key)  # SseMismatch
        return _info(key, resp)

    def plain_path(self, key: str) -> str:
        """The file's path inside the mount (decoded names), '' when it does not decode."""
        from s3encfs.codec import IntegrityError, UndecodableName

        plain: list[str] = []
        for enc in [p for p in key[len(self.prefix):].split("/") if p]:
            try:
                plain.append(self.layout.decode_child(tuple(plain), enc))
            except (UndecodableName, IntegrityError):  # a long name from another directory
                return ""
        return "/".join(plain)

    def _names_decode(self, rel: str) -> bool:
        from s3encfs.codec import UndecodableName

        parts = [p for p in rel.split("/") if p]
        plain: list[str] = []
        for enc in parts:
            if enc in (".", ".."):
                return False
            try:
                plain.append(self.layout.decode_child(tuple(plain), enc))
            except UndecodableName:
                return False
        return True

    def _read_segments(self, key: str, etag: str, cipher: Any, plain: int, size: int) -> int:
        from s3encfs.codec import IntegrityError

        lay = self.codec.geometry
        n = lay.segment_count(plain)
        nread = 0
        for first in range(0, n, CHUNK_SEGMENTS):
            last_seg = min(n, first + CHUNK_SEGMENTS) - 1
            start = lay.segment_object_range(first, plain)[0]
            end = lay.segment_object_range(last_seg, plain)[1]
            chunk = self.store.get_range(key, start, end, if_match=etag or None)
            nread += len(chunk)
            if len(chunk) != end - start:
                raise IntegrityError(f"short read at {start}: {len(chunk)} of {end - start} bytes")
            for i in range(first, last_seg + 1):
                s, e = lay.segment_object_range(i, plain)
                cipher.decrypt_segment(i, chunk[s - start:e - start], i == n - 1)
        if nread != size:
            raise IntegrityError(f"read {nread} bytes of a {size}-byte object")
        return nread

    def _read_plain(self, key: str, etag: str, size: int) -> int:
        step = 8 * 1024 * 1024
        nread = 0
        for start in range(0, size, step):
            nread += len(self.store.get_range(key, start, min(size, start + step),
                                              if_match=etag or None))
        if nread != size:
            raise ValueError(f"short body: read {nread} of {size} bytes")
        return nread


def run(ck: Checker, *, jobs: int = 8, stream: Any = None, quiet: bool = False) -> Report:
    from s3encfs.check_longnames import is_side, long_name_problems
    from s3encfs.progress import progress

    rep = Report()
    listed = [(o.key, o.size) for page in ck.store.list_pages(ck.prefix, None)
              for o in page.objects]
    # side objects first: the long names they hold must be known before names are decoded
    found = long_name_problems(ck.store, ck.codec, ck.prefix, [k for k, _s in listed], jobs=jobs)
    items = [it for it in listed if not is_side(ck.prefix, it[0])]
    with progress(len(items), "check", stream=stream) as bar, ThreadPoolExecutor(jobs) as pool:
        for (key, _size), (kind, problem, nread) in zip(
                items, pool.map(lambda it: ck.one(*it), items), strict=True):
            rep.bytes_read += nread
            if kind == "index":
                rep.indexes += 1
            elif kind == "undecodable":
                rep.skipped_names += 1
            elif kind == "vanished":
                rep.vanished += 1
            elif kind == "instruction":
                pass  # X.instruction: checked with (and counted as part of) its object X
            elif kind in ("object", "data", "marker"):
                rep.objects += 1
                rep.markers += kind == "marker"
                rep.data_checked += kind == "data" and problem is None
            if problem is not None:
                rep.problems.append((key, problem))
                if not quiet:
                    log.error("%s: %s", key, problem)
            bar.advance()
    for key, problem in found + structural_problems(ck, [k for k, _s in items]):
        rep.problems.append((key, problem))
        if not quiet:
            log.error("%s: %s", key, problem)
    rep.uploads = ck.store.list_multipart_uploads(ck.prefix)
    return rep


def index_key_of(prefix: str, rel_dir: str) -> str:
    """The index object of the directory whose encoded path (relative, no slash) is `rel_dir`;
    the same digest as `Layout.index_key`."""
    return f"{prefix}{CONTROL}idx/{hashlib.sha256(rel_dir.encode()).hexdigest()[:40]}"


def structural_problems(ck: Checker, keys: list[str]) -> list[tuple[str, str]]:
    """Whole-bucket findings (client mode): shared object ids, directories without an index."""
    if not ck.client:
        return []
    out: list[tuple[str, str]] = []
    for oid, holders in sorted(ck.oids.items()):
        if oid and len(holders) > 1:
            for k in holders:
                others = ", ".join(h for h in holders if h != k)
                out.append((k, f"object id shared with {others} (a copy of another object)"))
    present = set(keys)
    parents: set[str] = set()
    for key in keys:
        rel = key[len(ck.prefix):]
        if rel.startswith(CONTROL):
            continue
        parts = [p for p in rel.split("/") if p]
        # a file a/b/f or a marker a/b/c/ is a child of "", "a" and "a/b" (each needs an index)
        parents.update("/".join(parts[:i]) for i in range(len(parts)))
    for rel_dir in sorted(parents):
        idx = index_key_of(ck.layout.prefix, rel_dir)
        if idx not in present:
            where = f"{ck.prefix}{rel_dir}/" if rel_dir else (ck.prefix or "/")
            out.append((where, f"directory has children but no index ({idx} missing)"))
    return out


def abort_all(store: Any, rep: Report) -> None:
    for key, upload_id, _t in rep.uploads:
        store.abort_multipart(key, upload_id)
        rep.aborted += 1


@click.command("check")
@bucket_options(
    encryption_help="As for mount: client (default) | none | sse-s3 | sse-kms[:KEY] | "
    "dsse-kms[:KEY] | sse-c:KEYNAME | client+<sse mode> | s3ec.",
    key_help="Client mode: master key name(s), newest first; s3ec: keyring key(s), as for mount.")
@s3ec_options
@click.option("--data", is_flag=True, help="Download every body and authenticate every segment.")
@click.option("--abort-uploads", is_flag=True, help="Abort incomplete multipart uploads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--jobs", default=8, show_default=True, help="Objects in flight.")
@click.option("--object-lock", help="Also report objects without this retention "
              "(governance:30d | compliance:30d; default: the config's object_lock).")
def check(source: str | None, config_name: str | None, data: bool, abort_uploads: bool,
          as_json: bool, jobs: int, **flags: Any) -> None:
    """Verify that every object under s3://BUCKET[/PREFIX] reads back (exit 1 if not)."""
    from s3encfs.check_report import print_json, print_text

    logging.basicConfig(level=logging.WARNING, format="s3encfs check: %(message)s")
    cfg, bucket, prefix = _check_config(source, config_name, flags)
    cfg, store, codec, policy = _open_checked(cfg, bucket, prefix)
    t0 = time.monotonic()
    ck = Checker(store, codec, prefix, data=data)  # raw: side objects are checked too
    if getattr(codec, "name", "") == "s3ec":
        from s3encfs.s3ec_check import build

        ck.s3ec = build(cfg, store, data=data)  # S3 Encryption Client objects: s3ec_check.py
    rep = _run_all(ck, cfg, jobs=jobs, quiet=as_json, abort=abort_uploads)
    elapsed = time.monotonic() - t0
    if as_json:
        print_json(rep, ck, f"s3://{bucket}/{prefix}", elapsed)
    else:
        print_text(rep, ck, f"s3://{bucket}/{prefix}", elapsed, data=data, abort=abort_uploads,
                   sse=policy.describe())
    if not rep.ok:
        raise SystemExit(1)


def _check_config(source: str | None, config_name: str | None,
                  flags: dict[str, Any]) -> tuple[Any, str, str]:
    """The config (file, then the flags given): (cfg, bucket, prefix)."""
    from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_source

    try:
        cfg = load_config(config_name) if config_name else MountConfig()
        given = {k: v for k, v in flags.items() if v is not None}
        cfg = merge(cfg, {"source": source, **given, "mountpoint": cfg.mountpoint or "/"})
        if not cfg.source:
            raise click.UsageError("need s3://BUCKET[/PREFIX] (or --config NAME)")
        bucket, prefix = parse_source(cfg.source)
    except ConfigError as exc:
        raise exc from None  # one line + exit code: errors_cli
    return cfg, bucket, prefix


def _open_checked(cfg: Any, bucket: str, prefix: str) -> tuple[Any, Any, Any, Any]:
    """The recorded key, the codec and policy, the bucket, the master key: (cfg with the
    recorded key, store, codec, policy)."""
    from s3encfs.keypick import use_recorded_key
    from s3encfs.mount import MountError, build_codec_and_policy, check_master_key
    from s3encfs.store import errors as se
    from s3encfs.store.s3 import ObjectStore

    try:
        cfg = use_recorded_key(cfg, bucket, prefix)
        codec, policy = build_codec_and_policy(cfg)
        store = ObjectStore(bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                            profile=cfg.profile, sse=policy)
        store.check_bucket()
        if getattr(codec, "name", "") == "client":
            codec = check_master_key(store, codec, prefix)
    except (MountError, se.StoreError) as exc:
        raise exc from None  # one line + exit code: errors_cli
    return cfg, store, codec, policy


def _run_all(ck: Checker, cfg: Any, *, jobs: int, quiet: bool, abort: bool) -> Report:
    """Every object, then retention (--object-lock), then aborting uploads (--abort-uploads)."""
    from s3encfs.store import errors as se

    store, prefix = ck.store, ck.prefix
    try:
        rep = run(ck, jobs=jobs, stream=sys.stderr, quiet=quiet)
        if cfg.object_lock:
            from s3encfs.objectlock import parse_object_lock, retention_problems

            keys = [o.key for page in store.list_pages(prefix, None) for o in page.objects]
            rep.problems += retention_problems(store, keys, parse_object_lock(cfg.object_lock),
                                               jobs)
        if abort:
            abort_all(store, rep)
    except se.StoreError as exc:
        raise exc from None  # one line + exit code: errors_cli
    return rep
