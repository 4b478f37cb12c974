"""What `s3encfs check` prints: the JSON document (--json) or the human report."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from s3encfs.keynames import annotate, known


def print_json(rep: Any, ck: Any, source: str, elapsed: float) -> None:
    click.echo(json.dumps({
        "source": source, "ok": rep.ok, "objects": rep.objects,
        "directories": rep.markers, "indexes": rep.indexes, "data_checked": rep.data_checked,
        "bytes_read": rep.bytes_read, "skipped_names": rep.skipped_names,
        "vanished": rep.vanished, "format_v1_objects": ck.old_format,
        "problems": [{"key": k, "path": ck.plain_path(k), "error": e}
                     for k, e in rep.problems],
        "uploads": [{"key": k, "upload_id": u, "initiated": t} for k, u, t in rep.uploads],
        "aborted": rep.aborted, "seconds": round(elapsed, 3),
    }, indent=2))


def print_text(rep: Any, ck: Any, source: str, elapsed: float, *, data: bool, abort: bool,
               sse: str) -> None:
    """Uploads, then unreadable objects, then the one-line summary."""
    for key, upload_id, ini in rep.uploads:
        state = "aborted" if abort else "incomplete"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ini)) if ini else "?"
        click.echo(f"  {state} multipart upload: {key} (started {when}, id {upload_id})")
    if rep.uploads and not abort:
        click.echo("  rerun with --abort-uploads to abort them", err=True)
    names = known()
    for key, err in rep.problems:
        err = annotate(err, names)  # key ids as `name (id …)` where the keyring has them
        path = ck.plain_path(key)
        click.echo(f"  BAD {path} ({key}): {err}" if path and path != key[len(ck.prefix):]
                   else f"  BAD {key}: {err}")
    click.echo(
        f"check {source}: {rep.objects} objects "
        f"({rep.markers} directories, {rep.indexes} indexes"
        + (f", {rep.data_checked} bodies / {rep.bytes_read} bytes authenticated" if data
           else "")
        + f"), {len(rep.problems)} unreadable, {rep.skipped_names} undecodable names skipped, "
        f"{len(rep.uploads)} incomplete uploads"
        + (f" ({rep.aborted} aborted)" if abort else "")
        + (f", {ck.old_format} objects in client format v1 (run rekey to migrate)"
           if ck.old_format else "")
        + f" ({elapsed:.1f}s; {annotate(sse, names)})")
