"""Where the keyring passphrase comes from (borg conventions).

Order: ``{prefix}PASSPHRASE`` (env, may be explicitly empty), ``{prefix}PASSPHRASE_FD`` (read that
file descriptor to EOF, then close it), ``{prefix}PASSCOMMAND`` (run it without a shell, use its
stdout), else an interactive prompt when stdin is a tty, else `PassphraseError`.

The default prefix is ``S3ENCFS_``; ``S3ENCFS_EXPORT_`` is used for a separate export passphrase.
An empty passphrase is only ever accepted from the env variable set to "" *and* with
``S3ENCFS_ALLOW_EMPTY_PASSPHRASE=1`` (two explicit choices: an unset-looking variable alone is
more likely a mistake); an empty prompt answer, fd or command output is always refused.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping

PASS_ENV_VARS = ("PASSPHRASE", "PASSPHRASE_FD", "PASSCOMMAND")
ALLOW_EMPTY_VAR = "S3ENCFS_ALLOW_EMPTY_PASSPHRASE"


class PassphraseError(Exception):
    """No usable passphrase (none configured, command failed, prompt mismatch...)."""


def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` without any passphrase variable (for every child process we start)."""
    return {
        k: v
        for k, v in environ.items()
        if not (k.startswith("S3ENCFS_") and k.endswith(("PASSPHRASE", "PASSPHRASE_FD",
                                                         "PASSCOMMAND")))
    }


class PassphraseSource:
    """Yields the passphrase as bytes; the value is cached after the first successful `get`."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        prefix: str = "S3ENCFS_",
        passphrase: bytes | None = None,
        prompt: str = "Keyring passphrase: ",
        isatty: Callable[[], bool] | None = None,
    ) -> None:
        self._env = env
        self._prefix = prefix
        self._cached = passphrase
        self._prompt = prompt
        self._isatty = isatty or (lambda: sys.stdin is not None and sys.stdin.isatty())

    @classmethod
    def fixed(cls, passphrase: bytes) -> PassphraseSource:
        """A source that always returns `passphrase` (programmatic use, tests)."""
        return cls(env={}, passphrase=passphrase)

    def __repr__(self) -> str:
        return f"PassphraseSource(prefix={self._prefix!r})"

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def describe(self) -> str:
        """Which source would be used (for error messages; never the value)."""
        env = self.environ
        for var in PASS_ENV_VARS:
            if self._prefix + var in env:
                return "$" + self._prefix + var
        return "interactive prompt" if self._isatty() else "no passphrase source"

    def get(self, *, confirm: bool = False) -> bytes:
        if self._cached is not None:
            return self._cached
        env = self.environ
        p = self._prefix
        if p + "PASSPHRASE" in env:
            value = env[p + "PASSPHRASE"].encode()
            if not value and env.get(ALLOW_EMPTY_VAR) != "1":
                raise PassphraseError(
                    f"${p}PASSPHRASE is empty: an empty passphrase leaves the keys readable by "
                    f"anyone who can read the key files; to really use none, also set "
                    f"{ALLOW_EMPTY_VAR}=1")
        elif p + "PASSPHRASE_FD" in env:
            value = self._from_fd(env[p + "PASSPHRASE_FD"])
        elif p + "PASSCOMMAND" in env:
            value = self._from_command(env[p + "PASSCOMMAND"], env)
        elif self._isatty():
            value = self._from_prompt(confirm)
        else:
            raise PassphraseError(
                f"no passphrase: set {p}PASSPHRASE, {p}PASSPHRASE_FD or {p}PASSCOMMAND "
                "(stdin is not a terminal, so cannot prompt)"
            )
        self._cached = value
        return value

    def _from_fd(self, spec: str) -> bytes:
        var = self._prefix + "PASSPHRASE_FD"
        try:
            fd = int(spec)
        except ValueError:
            raise PassphraseError(f"${var} must be a file descriptor number") from None
        try:
            with os.fdopen(fd, "rb") as f:
                data = _strip_newline(f.read())
        except OSError as e:
            raise PassphraseError(
                f"cannot read passphrase from fd {fd} (${var}): {e.strerror}"
            ) from None
        if not data:
            raise PassphraseError(f"empty passphrase read from fd {fd} (${var})")
        return data

    def _from_command(self, command: str, env: Mapping[str, str]) -> bytes:
        var = self._prefix + "PASSCOMMAND"
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise PassphraseError(f"cannot parse ${var}: {e}") from None
        if not argv:
            raise PassphraseError(f"${var} is empty")
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, env=child_env(env), check=False)
        except OSError as e:
            raise PassphraseError(f"cannot run ${var} ({argv[0]}): {e.strerror}") from None
        if proc.returncode != 0:
            raise PassphraseError(f"${var} ({argv[0]}) exited with status {proc.returncode}")
        data = _strip_newline(proc.stdout)
        if not data:
            raise PassphraseError(f"${var} ({argv[0]}) printed an empty passphrase")
        return data

    def _from_prompt(self, confirm: bool) -> bytes:
        value = getpass.getpass(self._prompt).encode()
        if not value:
            raise PassphraseError(
                f"empty passphrase refused; to really use none, set {self._prefix}PASSPHRASE='' "
                f"and {ALLOW_EMPTY_VAR}=1"
            )
        if confirm and getpass.getpass("Repeat passphrase: ").encode() != value:
            raise PassphraseError("passphrases do not match")
        return value
