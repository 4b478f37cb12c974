"""`s3encfs rekey --from client|s3ec --encryption s3ec|client`: the command around `convert.py`.

Both sides are built from the same options: the target from ``--encryption`` / ``--key`` (as
for a mount), the source from ``--from`` / ``--from-key`` (client source without
``--from-key``: the keyring's master key the bucket's keycheck names). The ``--s3ec-*`` options
(KMS key, RSA PEM, V2) belong to whichever side is S3EC.

The client format's `.s3encfs/keycheck`: into the client format, it is written first (if the
prefix has none; an existing one must open with the target key), so a client mount can use
the prefix as soon as the conversion is done. Out of it, it is deleted last, after every
object and directory index converted without a failure — until then a re-run still finds the
master key it needs to decode the names. The source format's directory indexes left over
(of directories that no longer exist) go in the same final step.

Resumable: the walk converts only what is still in the source format; a state file
(``rekey-<bucket>-<hash>.json``, like every rekey) records that a conversion is under way, and
the final line says when the run finished it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from s3encfs.convert import Converter, Side, Tally


def _mode(spec: str) -> str:
    from s3encfs.config import is_s3ec, parse_encryption

    if is_s3ec(spec):
        return "s3ec"
    return "client" if parse_encryption(spec)[0] else "other"


def build_side(cfg: Any, bucket: str, prefix: str, spool: str, *, role: str) -> Side:
    """`role`: "source", "target" or "dry-target" (a dry run writes no keycheck)."""
    from s3encfs.mount import MountError, build_codec_and_policy
    from s3encfs.store.layout import Layout
    from s3encfs.store.s3 import ObjectStore

    codec, policy = build_codec_and_policy(cfg)
    args = dict(endpoint_url=cfg.endpoint_url, region=cfg.region, profile=cfg.profile,
                sse=policy)
    raw = ObjectStore(bucket, **args)
    raw.check_bucket()
    store: Any = raw
    if codec.name == "s3ec":
        from s3encfs.mount_codec import load_keys
        from s3encfs.s3ec_setup import S3ECSetupError, build_keys
        from s3encfs.store.s3ec import S3ECStore

        try:
            keys = build_keys(cfg, lambda name: load_keys(cfg, [name], role="s3ec")[0][2])
        except S3ECSetupError as exc:
            raise MountError(str(exc)) from None
        store = S3ECStore(bucket, s3ec=keys, spool_dir=spool, view_bytes=256 * 1024**2,
                          **args)
    else:
        codec = _client_keycheck(raw, codec, prefix, role)
        from s3encfs.store.longnames import with_long_names

        store = with_long_names(raw, codec, prefix)
    return Side(store, raw, codec, Layout(prefix, codec))


def _client_keycheck(raw: Any, codec: Any, prefix: str, role: str) -> Any:
    """The client side's codec, proven by the keycheck (written first for a target)."""
    from s3encfs import keycheck
    from s3encfs.mount import MountError, check_master_key
    from s3encfs.store.errors import NotFound, PreconditionFailed

    try:
        raw.head(prefix + keycheck.KEYCHECK)
    except NotFound:
        if role == "dry-target":
            return codec
        if role == "source":
            raise MountError(f"s3://{raw.bucket}/{prefix} has no keycheck: it is not (or no "
                             "longer) in our client format") from None
        try:
            raw.put(prefix + keycheck.KEYCHECK, keycheck.seal_new(codec), {},
                    if_none_match=True)
        except PreconditionFailed:
            pass  # written meanwhile: verified below like any other
    return check_master_key(raw, codec, prefix)


def cleanup(src: Side, dst: Side, prefix: str) -> int:
    """After a complete run: the source format's leftover indexes, then its keycheck. (S3EC
    indexes carry S3EC metadata; the client format's carry none.)"""
    from s3encfs import keycheck

    control = prefix + keycheck.CONTROL
    gone = 0
    for page in src.raw.list_pages(control + "idx/", delimiter=None):
        for o in page.objects:
            meta = src.raw.head(o.key).metadata
            if src.holds(meta) if src.s3ec else not dst.holds(meta):
                src.raw.delete(o.key)
                gone += 1
    if not src.s3ec:
        src.raw.delete(prefix + keycheck.KEYCHECK)
    return gone


def command(cfg: Any, bucket: str, prefix: str, from_mode: str, from_key: str | None,
            from_s3ec: dict[str, Any], *,
            jobs: int, dry_run: bool, state_file: Path, restart: bool,
            limit: int | None = None) -> int:
    from s3encfs.exitcodes import MountError
    from s3encfs.keypick import use_recorded_key

    to, frm = _mode(cfg.encryption or "client"), _mode(from_mode)
    if {to, frm} != {"client", "s3ec"}:
        raise MountError("--from converts between our client format and S3EC: give "
                         "--from client --encryption s3ec, or --from s3ec --encryption client")
    src_cfg = dataclasses.replace(cfg, encryption=from_mode, key=from_key, **from_s3ec)
    if frm == "client" and not from_key:
        src_cfg = use_recorded_key(src_cfg, bucket, prefix)
    if restart:
        state_file.unlink(missing_ok=True)
    if state_file.exists() and not dry_run:
        click.echo(f"rekey s3://{bucket}/{prefix}: resuming the conversion from {frm} to {to}",
                   err=True)
    spool = tempfile.mkdtemp(prefix="s3encfs-convert-")
    try:
        src = build_side(src_cfg, bucket, prefix, spool, role="source")
        dst = build_side(cfg, bucket, prefix, spool, role="dry-target" if dry_run else "target")
        if not dry_run:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps({"convert": f"{frm}->{to}", "at": time.time()}))
        t0 = time.monotonic()
        conv = Converter(src, dst, jobs=jobs, dry_run=dry_run, limit=limit)
        tally = conv.run()
        if conv.stopped():
            click.echo("rekey: stopped (--stop-after)", err=True)
            return 130
        if not tally.failed and not dry_run:
            cleanup(src, dst, prefix)
            state_file.unlink(missing_ok=True)
        _report(tally, bucket, prefix, frm, to, dry_run, time.monotonic() - t0)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return 1 if tally.failed else 0


def _report(t: Tally, bucket: str, prefix: str, frm: str, to: str, dry_run: bool,
            secs: float) -> None:
    verb = "would convert" if dry_run else "converted"
    click.echo(f"rekey s3://{bucket}/{prefix}: {verb} {t.converted} objects and "
               f"{t.directories} directories from {frm} to {to}, already converted "
               f"{t.skipped}, failed {len(t.failed)} ({secs:.1f}s)")
    for key, err in t.failed[:10]:
        click.echo(f"  failed: {key}: {err}", err=True)
    if t.failed:
        click.echo("  the failed objects are still in the source format; rerun the same "
                   "command to retry them (the conversion finishes only without failures)",
                   err=True)
