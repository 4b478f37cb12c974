"""`python -m s3encfs.manpage`: the s3encfs(1) man page, from the CLI's own help texts and the
exit-code table (so it cannot drift from `--help`). `make install` writes it to man1/."""

from __future__ import annotations

import sys

import click

from s3encfs import __version__, exitcodes


def _esc(text: str) -> str:
    out = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in out.splitlines())


def render() -> str:
    from s3encfs.cli import main

    ctx = click.Context(main, info_name="s3encfs")
    lines = [f'.TH S3ENCFS 1 "" "s3encfs {__version__}" "User Commands"', ".SH NAME",
             "s3encfs \\- mount an S3 bucket as an encrypted directory", ".SH SYNOPSIS",
             ".B s3encfs", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] ...", ".SH COMMANDS"]
    for name in sorted(main.list_commands(ctx)):
        cmd = main.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        lines += [".SS " + _esc(f"s3encfs {name} " + " ".join(cmd.collect_usage_pieces(sub))),
                  _esc(cmd.help or cmd.short_help or "")]
        for param in cmd.get_params(sub):
            rec = param.get_help_record(sub) if isinstance(param, click.Option) else None
            if rec:
                lines += [".TP", f".B {_esc(rec[0])}", _esc(rec[1] or "")]
    lines += [".SH EXIT STATUS"]
    for code, meaning in exitcodes.TABLE:
        lines += [".TP", f".B {code}", _esc(meaning)]
    lines += [".SH FILES", ".TP", ".B /etc/s3encfs/NAME.toml",
              "mount configuration (see example.toml.sample there)", ".TP",
              ".B /etc/s3encfs/keys", "the key store of root and the services",
              ".SH SEE ALSO", "README.md, SERVICE.md, KEYS.md, SEMANTICS.md, ENCRYPTION.md in "
              "/usr/local/share/doc/s3encfs"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
