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

This module is the command; the per-object work is rekey_objects.py, the resume state, LIST
loop and refusals rekey_run.py.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from s3encfs import rekey_names
from s3encfs.cli_options import bucket_options
from s3encfs.rekey_objects import Rekeyer
from s3encfs.rekey_run import (
    active_mounts,
    default_state_dir,
    refuse_client_switch,
    run,
    state_path,
)
from s3encfs.s3ec_check import s3ec_options

log = logging.getLogger("s3encfs.rekey")


def _rekey_config(source: str | None, config_name: str | None, flags: dict[str, Any],
                  from_mode: str | None) -> tuple[Any, str, str, dict[str, Any]]:
    """The config (file, then the flags given): (cfg, bucket, prefix, the source's S3EC keys).

    With `--from s3ec` the `--s3ec-*` options name the source's keys, not the target's: they
    are taken out of the target config and handed back apart."""
    from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_source

    logging.basicConfig(level=logging.WARNING, format="s3encfs rekey: %(message)s")
    try:
        cfg = load_config(config_name) if config_name else MountConfig()
        given = {k: v for k, v in flags.items() if v is not None}
        from_s3ec = {k: given.pop(k) for k in list(given) if k.startswith("s3ec_")} \
            if from_mode and not from_mode.startswith("client") else {}
        cfg = merge(cfg, {"source": source, **given, "mountpoint": cfg.mountpoint or "/"})
        bucket, prefix = parse_source(cfg.source)
    except ConfigError as exc:
        raise exc from None  # one line + exit code: errors_cli
    if not cfg.source:
        raise click.UsageError("need s3://BUCKET[/PREFIX] (or --config NAME)")
    return cfg, bucket, prefix, from_s3ec


def _open_checked(cfg: Any, codec: Any, policy: Any, bucket: str, prefix: str, *, jobs: int,
                  dry_run: bool, names_scheme: str | None) -> tuple[Any, Any]:
    """The bucket, the refusals, the SSE canary, then (client mode) the master key: (store,
    codec).  `--names` is a command of its own (rekey_names.py): it exits here."""
    from s3encfs.mount import check_master_key
    from s3encfs.store.probe import canary
    from s3encfs.store.s3 import ObjectStore

    store = ObjectStore(bucket, endpoint_url=cfg.endpoint_url, region=cfg.region,
                        profile=cfg.profile, sse=policy)
    store.check_bucket()
    refuse_client_switch(store, prefix, getattr(codec, "name", "") == "client")
    if policy.mode != "none" and not cfg.allow_unverified_sse and not dry_run:
        canary(store, prefix)
    if names_scheme:
        raise SystemExit(rekey_names.command(store, codec, prefix, jobs=jobs,
                                             dry_run=dry_run, stream=sys.stderr))
    if getattr(codec, "name", "") == "client":
        codec = check_master_key(store, codec, prefix)
    return store, codec


def _rekeyer(cfg: Any, store: Any, codec: Any, policy: Any, bucket: str, prefix: str, *,
             dry_run: bool, new_data_keys: bool, s3ec_writer: str | None,
             state_dir: Path | None, restart: bool) -> tuple[Any, Path]:
    """The per-object worker (s3ec: a rewrap, s3ec_rekey.py) and its state file, named by the
    target settings (`restart`: removed first)."""
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
    return rk, sfile


def _run_or_resume_hint(rk: Any, sfile: Path, where: str, jobs: int, page_size: int) -> Any:
    try:
        return run(rk, sfile, jobs=jobs, stream=sys.stderr, page_size=page_size)
    except KeyboardInterrupt:
        click.echo(f"\nrekey {where}: interrupted; run the same command again to "
                   "resume from the last finished page (every object done so far stays done)",
                   err=True)
        raise SystemExit(130) from None


def _report(out: Any, rk: Any, codec: Any, policy: Any, where: str, dry_run: bool,
            seconds: float) -> None:
    from s3encfs.keynames import annotate, known, label

    verb = "would change" if dry_run else "re-encrypted"
    names = known()
    click.echo(f"rekey {where}: {verb} {out.changed}, already current "
               f"{out.skipped}, failed {len(out.failed)} "
               f"({seconds:.1f}s; target {annotate(policy.describe(), names)}"
               + (f", master key {label(getattr(codec, 'current', ''), names)}"
                  if getattr(codec, "name", "") == "client" else "")
               + (f", S3EC wrapping key {rk.keys.writer.name}; a rewrap is not a revocation"
                  if getattr(codec, "name", "") == "s3ec" else "") + ")")
    for key, err in out.failed[:10]:
        click.echo(f"  failed: {key}: {annotate(err, names)}", err=True)


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
@click.option("--names", "names_scheme", type=click.Choice(["2"]), default=None,
              help="Client mode: migrate file names to name scheme 2 (padded, up to 255 "
                   "bytes; every key changes; resumable). Nothing may mount the bucket until "
                   "it finishes (docs/ENCRYPTION.md).")
@click.option("--new-data-keys", is_flag=True,
              help="Client mode: re-encrypt every object under a fresh data key (downloads and "
                   "uploads every body). Without it, master-key rotation is a rewrap, which is "
                   "not a revocation.")
@click.option("--from", "from_mode", metavar="client|s3ec",
              help="Convert from this format to --encryption's: our client format to S3 "
                   "Encryption Client objects (--from client --encryption s3ec) or back "
                   "(--from s3ec --encryption client). Every body is re-encrypted and every "
                   "name changes (resumable; docs/ENCRYPTION.md).")
@click.option("--stop-after", type=int, default=None, hidden=True,
              help="Tests: stop a conversion after N objects, as if killed right there.")
@click.option("--from-key", help="With --from: the source's keys (client: master keys, default "
              "the one the keycheck names; s3ec: raw AES key names, as --key for a mount).")
def rekey(source: str | None, config_name: str | None, jobs: int, dry_run: bool,
          state_dir: Path | None, restart: bool, page_size: int, new_data_keys: bool,
          s3ec_writer: str | None, names_scheme: str | None, from_mode: str | None,
          from_key: str | None, stop_after: int | None, **flags: Any) -> None:
    """Re-encrypt every object under s3://BUCKET[/PREFIX] to the current settings, server-side.

    SSE-C key rotation: `--encryption sse-c:NEW,OLD` (newest first; the old keys open the
    sources). Client master-key rotation: `--encryption client --key NEW,OLD` rewraps data keys
    only (not a revocation); objects in client format v1 are re-encrypted to v2, and
    `--new-data-keys` re-encrypts every object under a fresh data key. S3 Encryption Client
    wrapping-key rotation: `--encryption s3ec` with the new key first (`--key NEW,OLD`, or a
    KMS/RSA key before the old ones) rewraps data keys (also not a revocation). File names
    from scheme 1 to 2: `--encryption client --names 2` (every key changes).
    Stop every mount of this bucket first (on all machines); a running local mount is
    detected and refused. Interrupted runs resume where they stopped.
    """
    cfg, bucket, prefix, from_s3ec = _rekey_config(source, config_name, flags, from_mode)
    _refuse_if_mounted(bucket, prefix)
    if from_mode:
        raise SystemExit(_convert(cfg, bucket, prefix, from_mode, from_key, from_s3ec, jobs=jobs,
                                  dry_run=dry_run, state_dir=state_dir, restart=restart,
                                  limit=stop_after))
    cfg, store, codec, policy = _open_for_rekey(cfg, bucket, prefix, jobs=jobs, dry_run=dry_run,
                                                names_scheme=names_scheme)
    rk, sfile = _rekeyer(cfg, store, codec, policy, bucket, prefix, dry_run=dry_run,
                         new_data_keys=new_data_keys, s3ec_writer=s3ec_writer,
                         state_dir=state_dir, restart=restart)
    t0 = time.monotonic()
    out = _run_or_resume_hint(rk, sfile, f"s3://{bucket}/{prefix}", jobs, page_size)
    _report(out, rk, codec, policy, f"s3://{bucket}/{prefix}", dry_run, time.monotonic() - t0)
    if out.failed:
        click.echo("  rerun the same command to retry the failures", err=True)
        raise SystemExit(1)


def _refuse_if_mounted(bucket: str, prefix: str) -> None:
    busy = active_mounts(bucket, prefix)
    if busy:
        raise click.ClickException(
            f"s3://{bucket}/{prefix} is mounted at {', '.join(busy)}; unmount it first "
            "(rekey changes ETags and metadata under a running mount)")


def _open_for_rekey(cfg: Any, bucket: str, prefix: str, *, jobs: int, dry_run: bool,
                    names_scheme: str | None) -> tuple[Any, Any, Any, Any]:
    """The config with the bucket's recorded key, and the store, codec and SSE policy a rekey
    runs with (the keycheck and the names-scheme change already verified)."""
    from s3encfs.keypick import use_recorded_key
    from s3encfs.mount import MountError, build_codec_and_policy
    from s3encfs.store import errors as se

    try:
        cfg = use_recorded_key(cfg, bucket, prefix)
        codec, policy = build_codec_and_policy(cfg)
        store, codec = _open_checked(cfg, codec, policy, bucket, prefix, jobs=jobs,
                                     dry_run=dry_run, names_scheme=names_scheme)
    except rekey_names.NamesRefused as exc:
        raise MountError(str(exc)) from None  # one line + exit code: errors_cli
    except MountError as exc:
        raise exc from None  # one line + exit code: errors_cli
    except se.StoreError as exc:
        raise exc from None  # one line + exit code: errors_cli
    return cfg, store, codec, policy


def _convert(cfg: Any, bucket: str, prefix: str, from_mode: str, from_key: str | None,
             from_s3ec: dict[str, Any], *,
             jobs: int, dry_run: bool, state_dir: Path | None, restart: bool,
             limit: int | None) -> int:
    """`--from`: between our client format and S3EC (convert_setup.py, convert.py)."""
    from s3encfs import convert_setup
    from s3encfs.mount import MountError
    from s3encfs.store import errors as se

    endpoint = (cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    sfile = state_path(state_dir or default_state_dir(), endpoint, bucket, prefix,
                       f"convert:{from_mode}->{cfg.encryption}")
    try:
        return convert_setup.command(cfg, bucket, prefix, from_mode, from_key, from_s3ec, jobs=jobs,
                                     dry_run=dry_run, state_file=sfile, restart=restart,
                                     limit=limit)
    except (MountError, se.StoreError) as exc:
        raise exc from None  # one line + exit code: errors_cli
    except KeyboardInterrupt:
        click.echo(f"\nrekey s3://{bucket}/{prefix}: interrupted; run the same command again "
                   "to finish the conversion (nothing converted so far is lost)", err=True)
        raise SystemExit(130) from None
