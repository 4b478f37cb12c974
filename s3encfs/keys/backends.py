"""Secret stores other than the sealed file store: the OS keyring and systemd credentials."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from pathlib import Path

import keyring
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import KeyringError as OSKeyringError
from keyring.errors import PasswordDeleteError

from .filestore import (
    SECRET_LEN,
    Key,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    KeyringError,
    atomic_write,
    check_name,
    ensure_private_dir,
    read_private,
)

SERVICE = "s3encfs"
INDEX_NAME = "os-keyring-index.json"


class OSKeyringStore:
    """Secrets in the OS keyring (`keyring` package, service "s3encfs", username = key name).

    The keyring API cannot enumerate entries, so names/ids/kinds live in a small 0600 index
    file in the keyring directory (no secrets in it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.index_path = directory / INDEX_NAME

    def _backend(self) -> KeyringBackend:
        kr = keyring.get_keyring()
        if isinstance(kr, fail.Keyring):
            raise KeyringError(
                "no OS keyring is available here (no Secret Service/KWallet/macOS keychain); "
                "use the file backend or systemd credentials instead"
            )
        return kr

    def _index(self) -> dict[str, KeyInfo]:
        try:
            raw = read_private(self.index_path)
        except FileNotFoundError:
            return {}
        try:
            entries = json.loads(raw)
            return {
                e["name"]: KeyInfo(e["name"], e["key_id"], e["kind"], e["created"]) for e in entries
            }
        except (ValueError, KeyError, TypeError):
            raise KeyringError(f"{self.index_path}: corrupt OS keyring index") from None

    def _write_index(self, index: dict[str, KeyInfo]) -> None:
        ensure_private_dir(self.directory)
        data = [vars(i) for i in sorted(index.values(), key=lambda i: i.name)]
        atomic_write(self.index_path, json.dumps(data, indent=1).encode() + b"\n")

    def infos(self) -> list[KeyInfo]:
        return sorted(self._index().values(), key=lambda i: i.name)

    def save(self, key: Key, *, overwrite: bool = False) -> None:
        index = self._index()
        name = check_name(key.info.name)
        if name in index and not overwrite:
            raise KeyExists(f"key {name!r} already exists in the OS keyring")
        kr = self._backend()
        try:
            kr.set_password(SERVICE, name, base64.b64encode(key.secret).decode("ascii"))
        except OSKeyringError as e:  # never echo the arguments
            raise KeyringError(
                f"OS keyring refused to store {name!r}: {type(e).__name__}"
            ) from None
        index[name] = key.info
        self._write_index(index)

    def load(self, name: str) -> Key:
        info = self._index().get(name)
        if info is None:
            raise KeyNotFound(f"no key {name!r} in the OS keyring index {self.index_path}")
        kr = self._backend()
        try:
            value = kr.get_password(SERVICE, name)
        except OSKeyringError as e:
            raise KeyringError(f"OS keyring failed to read {name!r}: {type(e).__name__}") from None
        if value is None:
            raise KeyNotFound(f"key {name!r} is indexed but missing from the OS keyring")
        try:
            secret = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            secret = b""
        if len(secret) != SECRET_LEN:
            raise KeyringError(f"OS keyring entry for {name!r} is not a 32-byte key")
        return Key(info, secret)

    def delete(self, name: str) -> None:
        index = self._index()
        if name not in index:
            raise KeyNotFound(f"no key {name!r} in the OS keyring index {self.index_path}")
        kr = self._backend()
        try:
            kr.delete_password(SERVICE, name)
        except PasswordDeleteError:
            pass  # already gone from the OS keyring: just drop the index entry
        except OSKeyringError as e:
            raise KeyringError(
                f"OS keyring failed to delete {name!r}: {type(e).__name__}"
            ) from None
        del index[name]
        self._write_index(index)


class SystemdCredentials:
    """Keys handed to a service by systemd (``LoadCredential=``/``LoadCredentialEncrypted=``).

    ``$CREDENTIALS_DIRECTORY/NAME`` holds raw 32 bytes, 64 hex digits, or an export blob.
    systemd owns those files (read-only, private mount), so no mode check is done here.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        d = env.get("CREDENTIALS_DIRECTORY")
        self.directory = Path(d) if d else None

    def read(self, name: str) -> bytes | None:
        if self.directory is None:
            return None
        try:
            path = self.directory / check_name(name)
        except KeyringError:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise KeyringError(f"cannot read systemd credential {path}: {e.strerror}") from None

    def where(self, name: str) -> str:
        return f"{self.directory}/{name}"


def raw_secret(data: bytes) -> bytes | None:
    """32 raw bytes or 64 hex digits (whitespace trimmed) → secret; None for anything else."""
    if len(data) == SECRET_LEN:
        return data
    text = data.strip()
    if len(text) == 2 * SECRET_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None
