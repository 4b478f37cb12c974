"""`s3encfs status` and `s3encfs flush`: the control socket's commands for an operator.

Kept apart from `control.py` (the socket protocol, which the mount itself uses) so that the
progress display (`waitprogress`, which polls the socket) sits between the two.
"""

from __future__ import annotations

import json
import sys

import click

from s3encfs import control  # through the module: tests point control_socket_path elsewhere
from s3encfs.control import ControlError, render_status


@click.command("status")
@click.argument("mountpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the mount.")
def status(mountpoint: str, as_json: bool, timeout: float) -> None:
    """Show pending uploads, dirty bytes, cache use, errors of the mount at MOUNTPOINT."""
    try:
        data = control.query(control.control_socket_path(mountpoint), "status", timeout=timeout)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None  # "s3encfs: …", exit 1
    data.pop("ok", None)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=control._json_default))
    else:
        click.echo(render_status(data, tty=sys.stdout.isatty()))


@click.command("flush")
@click.argument("mountpoint", type=click.Path())
@click.option("--timeout", type=float, default=0, show_default=True,
              help="Give up after this many seconds, exiting 1 with the pending count "
                   "(0: wait as long as it takes).")
def flush(mountpoint: str, timeout: float) -> None:
    """Wait until everything written to MOUNTPOINT so far is stored in S3."""
    try:
        from s3encfs.waitprogress import watching

        with watching(mountpoint, "flush"):  # progress/ETA only; the wait is in the mount
            answer = control.flush_request(mountpoint, timeout)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None  # "s3encfs: …", exit 1
    click.echo(f"flushed in {answer.get('seconds', 0):.1f}s")
