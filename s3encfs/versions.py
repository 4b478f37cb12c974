"""``s3encfs versions PATH``: every version of a file, or of a directory's entries, in a
versioned bucket — time, size, current or not — as a table or ``--json``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from s3encfs.pathref import Target, path_options, resolve


def _row(t: Target, name: str, v: Any, kind: str) -> dict[str, Any]:
    from s3encfs.codec import IntegrityError

    size: int | None = None
    if not v.deleted and kind == "file":
        try:
            stored = v.size
            if getattr(t.codec, "name", "") == "s3ec":  # versions are listed as stored
                from s3encfs.crypto.s3ec_format import plain_size

                stored = plain_size(stored)  # (the GCM tag off, as the mount's LIST does)
            size = t.codec.geometry.plain_size(stored)
        except IntegrityError:
            size = v.size
    state = "deleted" if v.deleted else ("current" if v.is_latest else "noncurrent")
    return {"name": name, "kind": kind, "time": datetime.fromtimestamp(v.last_modified)
            .astimezone().isoformat(timespec="seconds"), "size": size,
            "state": state + (" (delete marker)" if v.deleted and v.is_latest else ""),
            "current": v.is_latest and not v.deleted, "version_id": v.version_id}


def collect(t: Target) -> tuple[str, list[dict[str, Any]]]:
    """("file" | "directory", rows) for the target, newest first per name."""
    from s3encfs.codec import UndecodableName
    from s3encfs.store.asof import iter_versions

    rows: list[dict[str, Any]] = []
    if t.parts:
        key = t.layout.file_key(t.parts)
        for v in iter_versions(t.store, key):
            if v.key != key:
                break
            rows.append(_row(t, t.parts[-1], v, "file"))
        if rows:
            return "file", rows
    prefix = t.layout.dir_prefix(t.parts)
    control = t.layout.control_prefix()
    subdirs: list[str] = []
    for v in iter_versions(t.store, prefix, "/", subdirs):
        enc = v.key[len(prefix):]
        if not enc or v.key.startswith(control):
            continue
        try:
            name = t.layout.decode_child(t.parts, enc)
        except (UndecodableName, ValueError):
            continue
        rows.append(_row(t, name, v, "file"))
    for p in subdirs:  # a directory's versions are its marker's (if it has one)
        if p == control:
            continue
        try:
            name = t.layout.decode_child(t.parts, p[len(prefix):-1])
        except (UndecodableName, ValueError):
            continue
        marks = [v for v in iter_versions(t.store, p, "/") if v.key == p]
        rows += [_row(t, name + "/", v, "directory") for v in marks] or \
            [{"name": name + "/", "kind": "directory", "time": None, "size": None,
              "state": "prefix (no marker)", "current": True, "version_id": None}]
    rows.sort(key=lambda r: r["name"])  # stable: newest first within a name
    return "directory", rows


@click.command("versions")
@path_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def versions(source: str | None, sub: str | None, config_name: str | None, as_json: bool,
             **flags: Any) -> None:
    """Every version of a file, or of a directory's entries (PATH in a mount, or s3://…)."""
    if not source:
        raise click.UsageError("need PATH (in a mount) or s3://BUCKET[/PREFIX]")
    t = resolve(source, sub, config_name, flags)
    kind, rows = collect(t)
    if as_json:
        click.echo(json.dumps({"path": t.display, "kind": kind, "versions": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"versions of {t.display} ({kind})")
    for col in ("name", "time", "size", "state", "version id"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for r in rows:
        table.add_row(r["name"], r["time"] or "-", "-" if r["size"] is None else str(r["size"]),
                      r["state"], r["version_id"] or "-")
    Console(width=160).print(table)
