"""`s3encfs umount` is light: every durable unmount waits for it, and it used to import every
subcommand's module (boto3, the keyring, ...) before doing anything: 0.8 s of CPU.  The
subcommands are imported when asked for (cli.LazyGroup); `--help` still lists them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_the_cli_module_imports_no_subcommand_module() -> None:
    out = _run("import sys, s3encfs.cli; print(sorted(m for m in ('boto3', 'botocore', "
               "'keyring', 's3encfs.rekey', 's3encfs.keys.cli') if m in sys.modules))")
    assert out.strip() == "[]"


def test_every_subcommand_is_still_there() -> None:
    from click.testing import CliRunner

    from s3encfs.cli import LAZY_COMMANDS, main

    out = CliRunner().invoke(main, ["--help"]).output
    for name in [*LAZY_COMMANDS, "mount", "umount"]:
        assert f"  {name} " in out or f"  {name}\n" in out, name
    key = CliRunner().invoke(main, ["key", "--help"]).output
    assert "change-passphrase" in key
