"""``s3encfs restore PATH --as-of TIME [--to DIR]``: bring a file or a tree back as it was.

In place (no ``--to``): for every key of the file or subtree, the version current at TIME is
copied server-side onto its own key — a new current version, so the history (including what
is being undone) is kept — and keys that did not exist at TIME get a delete marker.  Copying a
version onto its *own* key keeps every encryption mode valid: in client mode the ciphertext,
wrapped data key and sealed attributes are the same bytes that were valid under that key
(and path) before; under SSE-C the source version's key opens it and the mount's current key
seals the copy.  The directory indexes of the subtree (``.s3encfs/idx/…``, holding directory
attributes) are restored the same way; directory markers are re-created empty (SeaweedFS
keeps no metadata on them, and the index carries their attributes).

Idempotent and so resumable: each copy carries ``x-amz-meta-s3encfs-restored-from: <version>``
and a key whose current version already is (or was restored from) the wanted version is left
alone, so an interrupted run is finished by running it again, and a second run does nothing.

``--to DIR`` copies instead, through a temporary read-only ``--as-of`` mount and ``rsync -a``
(decryption, attributes and symlinks exactly as a mount shows them).  DIR may be inside
another s3encfs mount: that is how a tree is restored into another prefix, re-sealed under
its new path by the normal write path.

Run it with the bucket's mounts stopped, or expect them to notice the change after
``--dir-ttl`` like any other writer's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import click

from s3encfs.pathref import Target, path_options, resolve
from s3encfs.store.asof import Version, iter_versions, visible_at

RESTORED = "s3encfs-restored-from"
MAX_COPY = 5 * 1024**3


@dataclass
class Action:
    kind: str  # "copy" | "marker" | "delete"
    key: str
    target: Version | None
    current: Version | None


@dataclass
class Summary:
    restored: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0


def _groups(versions: Any) -> dict[str, list[Version]]:
    out: dict[str, list[Version]] = {}
    for v in versions:
        out.setdefault(v.key, []).append(v)
    return out


def _current(group: list[Version]) -> Version | None:
    latest = next((v for v in group if v.is_latest), group[0])
    return None if latest.deleted else latest


def _decide(key: str, group: list[Version], as_of: float, actions: list[Action]) -> bool:
    """Append what `key` needs; True when it already is as it was."""
    target, current = visible_at(group, as_of), _current(group)
    if target is None and current is None:
        return True
    if target is None:
        actions.append(Action("delete", key, None, current))
        return False
    if current is not None and current.version_id == target.version_id:
        return True
    actions.append(Action("marker" if key.endswith("/") else "copy", key, target, current))
    return False


def plan(t: Target, as_of: float) -> tuple[list[Action], int]:
    """(actions in the order to run them, keys already as they were)."""
    layout, store = t.layout, t.store
    control = layout.control_prefix()
    single = layout.file_key(t.parts) if t.parts else None
    groups: dict[str, list[Version]] = {}
    if single is not None:
        groups = {k: g for k, g in _groups(iter_versions(store, single)).items() if k == single}
    if not groups:  # a directory (or nothing)
        single = None
        groups = {k: g for k, g in _groups(iter_versions(store, layout.dir_prefix(t.parts)))
                  .items() if not k.startswith(control)}
    actions: list[Action] = []
    unchanged = sum(_decide(k, g, as_of, actions) for k, g in sorted(groups.items()))
    # the directory indexes of every directory the subtree has, or had, at TIME or now
    if single is None:
        base = layout.encode_rel(t.parts) if t.parts else ""
        dirs = {base}
        for key in groups:
            rel = key[len(layout.prefix):].rstrip("/")
            if key.endswith("/"):
                dirs.add(rel)  # a directory marker: the directory itself
            comps = rel.split("/")
            for i in range(len(base.split("/")) if base else 0, len(comps)):
                dirs.add("/".join(comps[:i]))
        wanted = {f"{control}idx/{hashlib.sha256(d.encode()).hexdigest()[:40]}" for d in dirs}
        idx = {k: g for k, g in _groups(iter_versions(store, f"{control}idx/")).items()
               if k in wanted}
        unchanged += sum(_decide(k, g, as_of, actions) for k, g in sorted(idx.items()))
    order = {"marker": 0, "copy": 1, "delete": 2}
    # markers before what is under them (SeaweedFS drops a marker PUT racing a child PUT),
    # indexes (under .s3encfs/) after the files; deletes last, deepest first
    actions.sort(key=lambda a: (order[a.kind], a.key.startswith(control),
                                a.key.count("/") * (-1 if a.kind == "delete" else 1), a.key))
    return actions, unchanged


def head_version(store: Any, key: str, vid: str) -> dict[str, Any]:
    return store._with_read_key(key, lambda a: store._call(
        "HeadObject", key, store.client.head_object, Key=key, VersionId=vid, **a))


def copy_version(store: Any, key: str, v: Version) -> None:
    """CopyObject of version `v` of `key` onto `key`, metadata kept (REPLACE, re-sent) and
    tagged with the version it restores."""
    from s3encfs.store.sse import SSEC_META

    head = head_version(store, key, v.version_id)
    if int(head.get("ContentLength", 0)) > MAX_COPY:
        raise RuntimeError("larger than 5 GiB: restore it with --to DIR")
    meta = {k.lower(): val for k, val in (head.get("Metadata") or {}).items()}
    src_kid = meta.get(SSEC_META)
    params: dict[str, Any] = {
        "Key": key, "CopySource": {"Bucket": store.bucket, "Key": key, "VersionId": v.version_id},
        "MetadataDirective": "REPLACE",
        "Metadata": {**meta, **store.sse.write_metadata(), RESTORED: v.version_id},
    }
    if head.get("ContentType"):
        params["ContentType"] = head["ContentType"]
    params.update(store._write_args())
    params.update(store.sse.copy_source_args(src_kid) if src_kid else {})
    resp = store._call("CopyObject", key, store.client.copy_object, **params)
    store._after_write(key)
    store._verify_written(resp, "copy", key)


def run_one(store: Any, a: Action) -> tuple[str, int]:
    """("restored" | "deleted" | "unchanged", bytes copied)."""
    if a.kind == "delete":
        store.delete(a.key)
        return "deleted", 0
    assert a.target is not None
    if a.current is not None and a.kind == "copy":
        info = store.head(a.key)
        if (info.metadata or {}).get(RESTORED) == a.target.version_id:
            return "unchanged", 0  # restored by an earlier run
    if a.kind == "marker":
        store.put(a.key, b"", {})
        return "restored", 0
    copy_version(store, a.key, a.target)
    return "restored", a.target.size


def execute(store: Any, actions: list[Action], summary: Summary, jobs: int,
            advance: Callable[[int], None]) -> None:
    lock = threading.Lock()

    def one(a: Action) -> None:
        try:
            what, n = run_one(store, a)
        except Exception as exc:  # reported per key; a re-run retries it
            with lock:
                summary.failed.append((a.key, str(exc)))
        else:
            with lock:
                setattr(summary, what, getattr(summary, what) + 1)
                summary.bytes += n
        advance(1)

    # phases in order: markers (parents first), files and indexes, deletes (deepest first)
    for kind in ("marker", "copy", "delete"):
        batch = [a for a in actions if a.kind == kind]
        if kind == "copy":
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(one, batch))
        else:
            for a in batch:
                one(a)


def describe(t: Target, a: Action) -> str:
    rel = a.key[len(t.layout.prefix):]
    if rel.startswith(".s3encfs/"):
        return f"directory index {rel}"
    try:
        names: list[str] = []
        comps = rel.rstrip("/").split("/")
        for i, enc in enumerate(comps):
            names.append(t.layout.decode_child(tuple(names[:i]), enc))
        return "/" + "/".join(names) + ("/" if rel.endswith("/") else "")
    except Exception:
        return rel


def restore_to_dir(t: Target, as_of: float, dest: str, dry_run: bool) -> int:
    """rsync the path out of a temporary read-only --as-of mount into `dest`."""
    from s3encfs.timespec import format_time

    cfg = t.cfg
    tmp = tempfile.mkdtemp(prefix="s3encfs-restore-")
    mnt, cache = os.path.join(tmp, "mnt"), os.path.join(tmp, "cache")
    os.mkdir(mnt)
    argv = [sys.executable, "-m", "s3encfs.cli", "mount", cfg.source, mnt, "--as-of",
            f"@{as_of}", "--encryption", cfg.encryption, "--cache-dir", cache]
    for opt, val in (("--key", cfg.key), ("--keyring", cfg.keyring),
                     ("--endpoint-url", cfg.endpoint_url), ("--region", cfg.region),
                     ("--profile", cfg.profile)):
        if val:
            argv += [opt, val]
    if cfg.plain_names:
        argv.append("--plain-names")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f"could not mount the view as of {format_time(as_of)}: "
                                   f"{proc.stderr.strip()}")
    try:
        src = os.path.join(mnt, *t.parts)
        if os.path.isdir(src):
            src += "/"
            os.makedirs(dest, exist_ok=True)
        elif not os.path.lexists(src):
            raise click.ClickException(f"{t.display} did not exist at {format_time(as_of)}")
        rs = ["rsync", "-a", "--info=progress2" if sys.stdout.isatty() else "--stats"]
        if dry_run:
            rs.append("--dry-run")
        target = dest.rstrip("/") + "/" if os.path.isdir(dest) else dest
        code = subprocess.run([*rs, src, target]).returncode
    finally:
        subprocess.run([sys.executable, "-m", "s3encfs.cli", "umount", mnt], capture_output=True)
        subprocess.run(["rm", "-rf", tmp], capture_output=True)
    return code


@click.command("restore")
@path_options
@click.option("--as-of", "as_of_spec", required=True,
              help="The time to go back to (as for mount --as-of).")
@click.option("--to", "dest", help="Copy into this local directory (or a directory of another "
              "mount) instead of restoring in place.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--jobs", default=8, show_default=True, help="Copies in flight.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def restore(source: str | None, sub: str | None, config_name: str | None, as_of_spec: str,
            dest: str | None, dry_run: bool, jobs: int, as_json: bool, **flags: Any) -> None:
    """Bring a file or a tree back as it was at --as-of (PATH in a mount, or s3://…)."""
    from s3encfs.progress import progress
    from s3encfs.timespec import TimeSpecError, format_time, parse_time

    if not source:
        raise click.UsageError("need PATH (in a mount) or s3://BUCKET[/PREFIX]")
    try:
        as_of = parse_time(as_of_spec)
    except TimeSpecError as exc:
        raise click.ClickException(str(exc)) from None
    t = resolve(source, sub, config_name, flags)
    when = format_time(as_of)
    if dest:
        raise SystemExit(restore_to_dir(t, as_of, os.path.abspath(dest), dry_run))
    if t.mountpoint and not dry_run:
        click.echo(f"note: the mount at {t.mountpoint} shows the restored files after its "
                   "--dir-ttl (30 s by default), like any other writer's", err=True)
    t0 = time.monotonic()
    actions, unchanged = plan(t, as_of)
    summary = Summary(unchanged=unchanged)
    if dry_run:
        _show_plan(t, actions)
    else:
        with progress(len(actions), f"restoring {t.display}", stream=sys.stderr) as bar:
            execute(t.store, actions, summary, jobs, bar.advance)
    result = _result(t.display, when, dry_run, actions, summary, time.monotonic() - t0)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_result(result, summary)
    if summary.failed:
        click.echo("  run the same command again to retry the failures", err=True)
        raise SystemExit(1)


def _show_plan(t: Any, actions: list[Any]) -> None:
    """--dry-run: the first 50 actions."""
    for a in actions[:50]:
        verb = {"copy": "restore", "marker": "re-create", "delete": "delete"}[a.kind]
        click.echo(f"  would {verb} {describe(t, a)}")
    if len(actions) > 50:
        click.echo(f"  … and {len(actions) - 50} more")


def _result(display: str, when: str, dry_run: bool, actions: list[Any], summary: Any,
            seconds: float) -> dict[str, Any]:
    copies = sum(a.kind != "delete" for a in actions)
    deletes = len(actions) - copies
    return {"path": display, "as_of": when, "dry_run": dry_run,
            "restored": copies if dry_run else summary.restored,
            "deleted": deletes if dry_run else summary.deleted,
            "unchanged": summary.unchanged, "bytes": summary.bytes,
            "failed": [{"key": k, "error": e} for k, e in summary.failed],
            "seconds": round(seconds, 3)}


def _print_result(result: dict[str, Any], summary: Any) -> None:
    dry_run = result["dry_run"]
    verb = "would restore" if dry_run else "restored"
    click.echo(f"restore {result['path']} as of {result['as_of']}: {verb} {result['restored']}, "
               f"{'would delete' if dry_run else 'deleted'} {result['deleted']}, "
               f"unchanged {result['unchanged']}, failed {len(summary.failed)} "
               f"({result['seconds']:.1f}s)")
    for k, e in summary.failed[:10]:
        click.echo(f"  failed: {k}: {e}", err=True)
