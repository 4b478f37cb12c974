"""One line and a documented exit code for every failure of an `s3encfs` command.

A traceback on a terminal (or in the journal) tells an operator less than one sentence; and
exit 1 for a configuration mistake makes systemd restart a unit that cannot work. `describe`
turns any exception into (message, exit code); `OneLineGroup` applies it to the whole CLI.
S3ENCFS_TRACEBACK=1 prints the traceback as well (for bug reports).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

import click

from s3encfs import exitcodes as ex

PREFIX = "s3encfs: "


def describe(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception raised by any command."""
    found = _ours(exc) or _client_or_os(exc)
    if found is not None:
        return found
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", ex.INTERRUPTED
    return (f"internal error: {type(exc).__name__}: {exc} (S3ENCFS_TRACEBACK=1 shows where; "
            "please report it)"), ex.SOFTWARE


def _ours(exc: BaseException) -> tuple[str, int] | None:
    """s3encfs's own errors: integrity, mount, config, keyring, store."""
    from s3encfs.codec import IntegrityError
    from s3encfs.config import ConfigError
    from s3encfs.keys.filestore import KeyringError, WrongPassphrase
    from s3encfs.keys.passphrase import PassphraseError
    from s3encfs.store.errors import StoreError

    if isinstance(exc, IntegrityError):
        return f"authentication failed (wrong key or damaged data): {exc}", ex.DATAERR
    mount_error = _mount_error_class()
    if mount_error is not None and isinstance(exc, mount_error):
        return str(exc), int(getattr(exc, "code", ex.CONFIG))
    if isinstance(exc, ConfigError):
        return str(exc), ex.CONFIG
    if isinstance(exc, WrongPassphrase):
        return str(exc), ex.NOPERM
    if isinstance(exc, (KeyringError, PassphraseError)):
        return str(exc), ex.CONFIG
    if isinstance(exc, StoreError):
        return str(exc), ex.for_store_error(exc)
    return None


def _client_or_os(exc: BaseException) -> tuple[str, int] | None:
    """botocore's errors (profile, credentials, endpoint) and the OS's."""
    from botocore import exceptions as be

    if isinstance(exc, be.ProfileNotFound):
        return (f"AWS profile {exc.kwargs.get('profile')!r} not found in ~/.aws/config or "
                "~/.aws/credentials (check --profile / profile =)"), ex.CONFIG
    if isinstance(exc, (be.NoCredentialsError, be.PartialCredentialsError)):
        return (f"no usable AWS credentials ({exc}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile"), ex.NOPERM
    if isinstance(exc, be.BotoCoreError):
        return f"S3 client: {exc}", ex.CONFIG
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint"):
        return (f"{exc}: an endpoint URL needs a scheme, e.g. https://s3.example.net or "
                "http://127.0.0.1:8333"), ex.CONFIG
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        code = ex.CANTCREAT if exc.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC,
                                              errno.ENOTDIR, errno.EEXIST, errno.EPERM) \
            else ex.FAILED
        return f"cannot use{where}: {reason}", code
    return None


def _mount_error_class() -> Any:
    from s3encfs.exitcodes import MountError  # (mount.py re-exports it; importing the mount
    return MountError                          # would make this module import its caller)


def echo_error(message: str) -> None:
    """One line on stderr; with journald's priority prefix when stderr is the journal."""
    from s3encfs.keynames import annotate
    from s3encfs.logsetup import redact, under_journal

    line = PREFIX + redact(annotate(message.strip().splitlines()[0]) if message.strip()
                           else "error")  # key ids as `name (id …)` where the keyring has them
    click.echo(("<3>" + line) if under_journal() else line, err=True)


def fail(exc: BaseException) -> int:
    message, code = describe(exc)
    if os.environ.get("S3ENCFS_TRACEBACK") == "1":
        traceback.print_exception(exc, file=sys.stderr)
    echo_error(message)
    return code


class OneLineGroup(click.Group):
    """A click group whose failures are one `s3encfs: …` line and an exit code from
    s3encfs/exitcodes.py, never a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.UsageError as e:
            e.show()
            sys.exit(ex.USAGE)
        except click.ClickException as e:
            echo_error(e.format_message())
            sys.exit(e.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            echo_error("interrupted")
            sys.exit(ex.INTERRUPTED)
        except SystemExit:
            raise
        except Exception as e:  # the one place every error becomes one line
            sys.exit(fail(e))
        sys.exit(rv if isinstance(rv, int) else 0)
