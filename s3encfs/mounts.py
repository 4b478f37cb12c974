"""`s3encfs mounts`: what is mounted where, in which mode, and how much is not in S3 yet.

Reads the mount table (so a dead mount left by a crash shows up too) and asks each live mount's
control socket for its status (the derived fields come from `statusinfo.enrich`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from s3encfs.statusinfo import human_duration


def collect(timeout: float = 3.0) -> list[dict[str, Any]]:
    from s3encfs.control import ControlError, control_socket_path, query
    from s3encfs.mountpoint import FSTYPE, is_dead, mounts

    rows = []
    for entry in mounts():
        if entry.fstype != FSTYPE:
            continue
        row: dict[str, Any] = {"mountpoint": entry.mountpoint, "source": entry.source}
        if is_dead(entry.mountpoint):
            row["state"] = "dead (process gone; the next mount detaches it and replays)"
        else:
            try:
                st = query(control_socket_path(entry.mountpoint), "status", timeout=timeout)
                row.update(state="mounted", mode=st.get("mode"), pid=st.get("pid"),
                           pending_uploads=st.get("pending_uploads"),
                           dirty_bytes=st.get("dirty_bytes"), version=st.get("version"),
                           uptime_seconds=st.get("uptime_seconds"))
            except (ControlError, OSError) as exc:
                row["state"] = f"not answering ({exc})"
        rows.append(row)
    return rows


@click.command("mounts")
@click.option("--json", "as_json", is_flag=True, help="One JSON list, for scripts.")
def mounts_cmd(as_json: bool) -> None:
    """List s3encfs mounts: where, what, which mode, pending uploads (exit 1 if one is dead)."""
    from s3encfs.control import render_value

    rows = collect()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no s3encfs mounts")
    for row in rows if not as_json else []:
        line = f"{row['mountpoint']}  {row['source']}  {row['state']}"
        if row["state"] == "mounted":
            line += (f"  mode={row.get('mode') or '?'} pending={row.get('pending_uploads')}"
                     f" dirty={render_value('dirty_bytes', row.get('dirty_bytes') or 0)}"
                     f" pid={row.get('pid')}")
            if row.get("uptime_seconds") is not None:
                line += f" up {human_duration(float(row['uptime_seconds']))}"
        click.echo(line)
    if any(r["state"].startswith("dead") for r in rows):
        raise SystemExit(1)
