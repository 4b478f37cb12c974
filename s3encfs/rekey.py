"""`s3encfs rekey`: bring every object under a bucket/prefix to the current encryption settings,
server-side, without downloading file contents.

- SSE changes (SSE-C key rotation, switching between SSE-S3 / SSE-KMS / SSE-C / none): each object
  is copied onto itself (CopyObject, MetadataDirective=REPLACE) with the new SSE headers; the source
  side carries the SSE-C key recorded in the object's ``s3encfs-ssec`` metadata. Objects over
  5 GiB go through a multipart UploadPartCopy (``ObjectStore.copy``).
- Client master-key rotation: only the wrapped data keys in the metadata change
  (``ClientCodec.rewrap``), carried by the same CopyObject; bodies are not rewritten. A rewrap is
  not a revocation: the old master key still opens every data key it ever wrapped (copies,
  backups, old versions). Objects in an older client format (v1) are re-encrypted to the current
  one (s3encfs/reencrypt.py: GET, authenticate, PUT under a fresh data key); with
  ``--new-data-keys`` every object is. Sealed
  blobs under ``.s3encfs/`` (directory indexes, keycheck) are re-sealed with the current key.
  File *names* stay encrypted under the bucket's naming key (docs/FORMAT.md), so that key must stay
  in the mount's ``--key`` list.

Resumable: objects already at the target settings are skipped (a HEAD decides), and the last key
of every fully finished LIST page is kept in a state file, so a killed run restarts close to where
it stopped. Refuses to run while a mount of an overlapping bucket/prefix is active on this machine;
mounts on other machines must be stopped by the operator (see docs/ENCRYPTION.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from s3encfs.cli_options import bucket_options
from s3encfs.reencrypt import needs_reencryption, reencrypt
from s3encfs.s3ec_check import s3ec_options

log = logging.getLogger("s3encfs.rekey")

SSEC_META = "s3encfs-ssec"
CONTROL = ".s3encfs/"
KIND_OBJECT, KIND_MARKER, KIND_BLOB = "object", "marker", "blob"


class RekeyError(Exception):
    pass


@dataclass
class Outcome:
    changed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s3encfs"


def state_path(state_dir: Path, endpoint: str | None, bucket: str, prefix: str,
               target: str) -> Path:
    digest = hashlib.sha256(f"{endpoint or 'aws'}|{bucket}|{prefix}|{target}".encode())
    return state_dir / f"rekey-{bucket}-{digest.hexdigest()[:12]}.json"


# -- concurrent mounts --------------------------------------------------------------------------


def _overlaps(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def active_mounts(bucket: str, prefix: str) -> list[str]:
    """Mountpoints of running mounts on this machine whose source overlaps bucket/prefix."""
    from s3encfs.config import parse_source
    from s3encfs.control import ControlError, query, socket_dir

    out: list[str] = []
    try:
        names = sorted(os.listdir(socket_dir()))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".sock"):
            continue
        try:
            st = query(os.path.join(socket_dir(), name), "status", timeout=3)
            b, p = parse_source(str(st.get("source", "")))
        except (ControlError, OSError, ValueError):
            continue  # stale socket of a dead mount
        if b == bucket and _overlaps(p, prefix):
            out.append(str(st.get("mountpoint", name)))
    return out


# -- the work -----------------------------------------------------------------------------------


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


def list_pages(store: Any, prefix: str, start_after: str | None,
               page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
    params: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix,
                              "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        params["StartAfter"] = start_after
    for page in store.client.get_paginator("list_objects_v2").paginate(**params):
        yield [(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", []) or []]


def run(rk: Rekeyer, state_file: Path | None, *, jobs: int = 8, stream: Any = None,
        limit: int | None = None, page_size: int = 1000) -> Outcome:
    """Process everything after the saved position; `limit` stops after that many objects
    (tests use it to simulate an interruption)."""
    from s3encfs.progress import progress
    from s3encfs.store.errors import StoreError

    state: dict[str, Any] = {}
    if state_file is not None and state_file.exists():
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
    start_after = state.get("last_key")
    total = sum(len(p) for p in list_pages(rk.store, rk.prefix, start_after))
    out = Outcome()
    done = 0

    def work(item: tuple[str, int]) -> tuple[str, bool | None, str]:
        try:
            return item[0], rk.one(*item), ""
        except (StoreError, ValueError) as exc:
            return item[0], None, str(exc)
        except Exception as exc:  # IntegrityError, MissingMasterKey, ...
            return item[0], None, f"{type(exc).__name__}: {exc}"

    with progress(total, "rekey", stream=stream) as bar, ThreadPoolExecutor(jobs) as pool:
        for page in list_pages(rk.store, rk.prefix, start_after, page_size):
            if limit is not None:
                page = page[: max(0, limit - done)]
            for key, changed, err in pool.map(work, page):
                if changed is None:
                    out.failed.append((key, err))
                    log.error("%s: %s", key, err)
                elif changed:
                    out.changed += 1
                else:
                    out.skipped += 1
                bar.advance()
            done += len(page)
            if page and not out.failed and state_file is not None and not rk.dry_run:
                state.update(last_key=page[-1][0], updated=time.time())
                state_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, state_file)
            if limit is not None and done >= limit:
                return out
    if state_file is not None and not out.failed and not rk.dry_run:
        state_file.unlink(missing_ok=True)  # finished: the next rekey starts from the top
    return out


def refuse_client_switch(store: Any, prefix: str, client: bool) -> None:
    """Rekey copies objects server-side; it can neither encrypt plain contents on the client
    nor decrypt client-encrypted ones. Say so before anything is written (a keycheck written
    into a plain prefix would make the next plain mount look encrypted)."""
    from s3encfs.mount import MountError
    from s3encfs.store.errors import NotFound

    try:
        store.head(f"{prefix}{CONTROL}keycheck")
        encrypted = True
    except NotFound:
        encrypted = False
    if client and not encrypted:
        page = next(list_pages(store, prefix, None, page_size=5), [])
        if [k for k, _ in page if not k[len(prefix):].startswith(CONTROL)]:
            raise MountError(
                f"s3://{store.bucket}/{prefix} holds plain (not client-encrypted) objects; "
                "rekey cannot encrypt contents on the client: mount a new prefix with "
                "--encryption client and copy the files in (rsync)")
    if not client and encrypted:
        raise MountError(
            f"s3://{store.bucket}/{prefix} is client-encrypted; rekey cannot decrypt it: to "
            "change only the server-side mode use --encryption client+<sse mode>, to decrypt "
            "(or convert to S3 Encryption Client objects) copy the files out through a "
            "client-mode mount (into an s3ec-mode mount of another prefix)")


# -- command ------------------------------------------------------------------------------------


@click.command("rekey")
@bucket_options(
    encryption_help="Target: none | sse-s3 | sse-kms[:KEY] | dsse-kms[:KEY] | "
    "sse-c:NEWKEY,OLDKEY... | client[+<sse mode>] | s3ec (as for mount).",
    key_help="Client and s3ec mode: keys, newest (target) first, then the old ones.")
@s3ec_options
@click.option("--allow-unverified-sse", is_flag=True, default=None,
              help="Skip the proof that the server enforces the target SSE mode.")
@click.option("--jobs", default=8, show_default=True, help="Objects in flight.")
@click.option("--dry-run", is_flag=True, help="Only count what would change.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Where the resume position is kept (default ~/.cache/s3encfs).")
@click.option("--restart", is_flag=True, help="Ignore a saved resume position.")
@click.option("--page-size", default=1000, hidden=True, help="LIST page (= resume step) size.")
@click.option("--s3ec-writer", help="s3ec mode: the target key (a --key name, 'kms', a PEM "
              "path) when it is not the first one (e.g. from a raw AES key to KMS).")
@click.option("--new-data-keys", is_flag=True,
              help="Client mode: re-encrypt every object under a fresh data key (downloads and "
                   "uploads every body). Without it, master-key rotation is a rewrap, which is "
                   "not a revocation.")
def rekey(source: str | None, config_name: str | None, jobs: int, dry_run: bool,
          state_dir: Path | None, restart: bool, page_size: int, new_data_keys: bool,
          s3ec_writer: str | None, **flags: Any) -> None:
    """Re-encrypt every object under s3://BUCKET[/PREFIX] to the current settings, server-side.

    SSE-C key rotation: `--encryption sse-c:NEW,OLD` (newest first; the old keys open the
    sources). Client master-key rotation: `--encryption client --key NEW,OLD` rewraps data keys
    only (not a revocation); objects in client format v1 are re-encrypted to v2, and
    `--new-data-keys` re-encrypts every object under a fresh data key. S3 Encryption Client
    wrapping-key rotation: `--encryption s3ec` with the new key first (`--key NEW,OLD`, or a
    KMS/RSA key before the old ones) rewraps data keys (also not a revocation).
    Stop every mount of this bucket first (on all machines); a running local mount is
    detected and refused. Interrupted runs resume where they stopped.
    """
    from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_source
    from s3encfs.keynames import annotate, known, label
    from s3encfs.keypick import use_recorded_key
    from s3encfs.mount import MountError, build_codec_and_policy, check_master_key
    from s3encfs.store import errors as se
    from s3encfs.store.probe import canary
    from s3encfs.store.s3 import ObjectStore

    logging.basicConfig(level=logging.WARNING, format="s3encfs rekey: %(message)s")
    try:
        cfg = load_config(config_name) if config_name else MountConfig()
        given = {k: v for k, v in flags.items() if v is not None}
        cfg = merge(cfg, {"source": source, **given, "mountpoint": cfg.mountpoint or "/"})
        bucket, prefix = parse_source(cfg.source)
    except ConfigError as exc:
        raise exc from None  # one line + exit code: errors_cli
    if not cfg.source:
        raise click.UsageError("need s3://BUCKET[/PREFIX] (or --config NAME)")
    busy = active_mounts(bucket, prefix)
    if busy:
        raise click.ClickException(
            f"s3://{bucket}/{prefix} is mounted at {', '.join(busy)}; unmount it first "
            "(rekey changes ETags and metadata under a running mount)")
    try:
        cfg = use_recorded_key(cfg, bucket, prefix)
        codec, policy = build_codec_and_policy(cfg)
        store = ObjectStore(bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                            profile=cfg.profile, sse=policy)
        store.check_bucket()
        refuse_client_switch(store, prefix, getattr(codec, "name", "") == "client")
        if policy.mode != "none" and not cfg.allow_unverified_sse and not dry_run:
            canary(store, prefix)
        if getattr(codec, "name", "") == "client":
            codec = check_master_key(store, codec, prefix)
    except MountError as exc:
        raise exc from None  # one line + exit code: errors_cli
    except se.StoreError as exc:
        raise exc from None  # one line + exit code: errors_cli
    rk: Any = Rekeyer(store, codec, prefix, dry_run=dry_run, new_data_keys=new_data_keys)
    if getattr(codec, "name", "") == "s3ec":
        from s3encfs import s3ec_rekey

        rk = s3ec_rekey.build(cfg, store, prefix, dry_run=dry_run,  # rewrap: s3ec_rekey.py
                              writer=s3ec_writer)
    target = f"{cfg.encryption}|{policy.describe()}|{getattr(codec, 'current', '')}" + \
        ("|new-data-keys" if new_data_keys else "") + getattr(rk, "target", "")
    endpoint = (cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))  # what boto3 talks to, as the mount
    sfile = state_path(state_dir or default_state_dir(), endpoint, bucket, prefix,
                       target)
    if restart:
        sfile.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        out = run(rk, sfile, jobs=jobs, stream=sys.stderr, page_size=page_size)
    except KeyboardInterrupt:
        click.echo(f"\nrekey s3://{bucket}/{prefix}: interrupted; run the same command again to "
                   "resume from the last finished page (every object done so far stays done)",
                   err=True)
        raise SystemExit(130) from None
    verb = "would change" if dry_run else "re-encrypted"
    names = known()
    click.echo(f"rekey s3://{bucket}/{prefix}: {verb} {out.changed}, already current "
               f"{out.skipped}, failed {len(out.failed)} "
               f"({time.monotonic() - t0:.1f}s; target {annotate(policy.describe(), names)}"
               + (f", master key {label(getattr(codec, 'current', ''), names)}"
                  if getattr(codec, "name", "") == "client" else "")
               + (f", S3EC wrapping key {rk.keys.writer.name}; a rewrap is not a revocation"
                  if getattr(codec, "name", "") == "s3ec" else "") + ")")
    for key, err in out.failed[:10]:
        click.echo(f"  failed: {key}: {annotate(err, names)}", err=True)
    if out.failed:
        click.echo("  rerun the same command to retry the failures", err=True)
        raise SystemExit(1)

