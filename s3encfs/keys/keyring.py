"""Named local keys: create, list, get, export/import, delete (see docs/KEYS.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .backends import OSKeyringStore, SystemdCredentials, raw_secret
from .filestore import (
    DEFAULT_KDF,
    NAME_RE,
    SECRET_LEN,
    CorruptKeyFile,
    FileStore,
    Key,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    KeyringError,
    WrongPassphrase,
    check_kind,
    check_name,
    record_info,
    seal,
    unseal,
)
from .passphrase import PassphraseSource

SYSTEM_DIR = Path("/etc/s3encfs/keys")
BACKENDS = ("file", "os")
ARMOR_BEGIN = "-----BEGIN S3ENCFS KEY-----"
ARMOR_END = "-----END S3ENCFS KEY-----"


class KeyInUse(KeyringError):
    """Refused to delete a key that a mount (config or running) still uses."""


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """$S3ENCFS_KEYRING_DIR, else /etc/s3encfs/keys for root (if it exists or under systemd),
    else the per-user config dir (…/s3encfs/keys)."""
    env = os.environ if environ is None else environ
    if env.get("S3ENCFS_KEYRING_DIR"):
        return Path(env["S3ENCFS_KEYRING_DIR"])
    if os.geteuid() == 0 and (SYSTEM_DIR.is_dir() or "INVOCATION_ID" in env):
        return SYSTEM_DIR
    import platformdirs

    return Path(platformdirs.user_config_dir("s3encfs")) / "keys"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def armor(record: dict[str, Any]) -> str:
    """Text form of a sealed record: informational headers, base64 body, sha256 checksum line."""
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    check = hashlib.sha256(body).hexdigest()[:16]
    lines = [
        ARMOR_BEGIN,
        f"Name: {record['name']}",
        f"Id: {record['id']}",
        f"Kind: {record['kind']}",
        f"Created: {record['created']}",
        "",
        *textwrap.wrap(base64.b64encode(body).decode("ascii"), 64),
        f"={check}",
        ARMOR_END,
    ]
    return "\n".join(lines) + "\n"


def dearmor(blob: str) -> dict[str, Any]:
    """Inverse of `armor`; CorruptKeyFile (with the reason) for damaged text."""
    lines = [ln.strip() for ln in blob.strip().splitlines()]
    try:
        start, end = lines.index(ARMOR_BEGIN), lines.index(ARMOR_END)
    except ValueError:
        raise CorruptKeyFile("not an s3encfs key export (BEGIN/END lines missing)") from None
    inner = lines[start + 1 : end]
    try:
        body_lines = inner[inner.index("") + 1 :]
    except ValueError:
        body_lines = inner
    check_lines = [ln for ln in body_lines if ln.startswith("=")]
    if len(check_lines) != 1:
        raise CorruptKeyFile("key export has no checksum line")
    b64 = "".join(ln for ln in body_lines if ln and not ln.startswith("="))
    try:
        body = base64.b64decode(b64, validate=True)
    except ValueError:
        raise CorruptKeyFile("key export body is not valid base64 (damaged or mistyped)") from None
    if hashlib.sha256(body).hexdigest()[:16] != check_lines[0][1:].lower():
        raise CorruptKeyFile("key export checksum mismatch (damaged or mistyped)")
    try:
        record = json.loads(body)
    except ValueError:
        raise CorruptKeyFile("key export body is not valid JSON") from None
    if not isinstance(record, dict):
        raise CorruptKeyFile("key export body is not a key record")
    return record


class Keyring:
    """Named 32-byte keys. ``backend="file"``: sealed files; ``"os"``: OS keyring + index.

    `get` looks in ``$CREDENTIALS_DIRECTORY`` (systemd credentials) before the backend.
    `kdf` exists so tests can use cheap KDF parameters; leave it alone otherwise.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        passphrase_source: PassphraseSource | None = None,
        backend: str = "file",
        kdf: dict[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise KeyringError(f"unknown keyring backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.directory = Path(directory) if directory is not None else default_directory(environ)
        self.backend = backend
        self.passphrase_source = passphrase_source or PassphraseSource(environ)
        self.kdf = kdf or DEFAULT_KDF
        self.credentials = SystemdCredentials(environ)
        self._files = FileStore(self.directory, kdf=self.kdf)
        self._os = OSKeyringStore(self.directory)

    def __repr__(self) -> str:
        return f"Keyring({str(self.directory)!r}, backend={self.backend!r})"

    def _where(self) -> str:
        return f"{self.directory} ({self.backend} backend)"

    # -- queries ---------------------------------------------------------------------------
    def list(self) -> list[KeyInfo]:
        return self._files.infos() if self.backend == "file" else self._os.infos()

    def _find(self, name_or_id: str) -> KeyInfo | None:
        """By name (reading only that key's file), else by id (reading all)."""
        if self.backend == "file" and NAME_RE.match(name_or_id):
            try:
                return record_info(self._files.load_record(name_or_id), name_or_id)
            except FileNotFoundError:
                pass
        infos = self.list()
        for info in infos:
            if info.name == name_or_id:
                return info
        matches = [i for i in infos if i.key_id == name_or_id.lower()]
        return matches[0] if len(matches) == 1 else None

    def get(self, name_or_id: str) -> Key:
        info = self._find(name_or_id)
        name = info.name if info else name_or_id
        cred = self.credentials.read(name)
        if cred is not None:
            return self._from_credential(name, cred, info)
        if info is None:
            creds = f" or {self.credentials.directory}" if self.credentials.directory else ""
            raise KeyNotFound(f"no key named or with id {name_or_id!r} in {self._where()}{creds}")
        if self.backend == "os":
            return self._os.load(info.name)
        return self._files.load(info.name, self.passphrase_source.get())

    def _from_credential(self, name: str, data: bytes, info: KeyInfo | None) -> Key:
        where = f"systemd credential {self.credentials.where(name)}"
        secret = raw_secret(data)
        if secret is not None:
            if info is None:  # no local record: a stable id from the name (never the secret)
                key_id = hashlib.sha256(b"s3encfs-credential|" + name.encode()).hexdigest()[:16]
                info = KeyInfo(name, key_id, "master", "")
            return Key(info, secret)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise CorruptKeyFile(
                f"{where}: neither 32 raw bytes, 64 hex digits nor an export"
            ) from None
        record = dearmor(text)
        try:  # systemd already encrypts credentials, so an empty export passphrase is usual
            key = unseal(record, b"", where)
        except WrongPassphrase:
            key = unseal(record, self.passphrase_source.get(), where)
        if key.info.name != name:
            raise CorruptKeyFile(f"{where}: holds key {key.info.name!r}, not {name!r}")
        return key

    # -- changes ---------------------------------------------------------------------------
    def _store_passphrase(self) -> bytes:
        """The passphrase new records are sealed with; checked against an existing key so that
        one store never ends up with keys under different passphrases."""
        names = list(self._files.names())
        if not names:
            return self.passphrase_source.get(confirm=True)
        passphrase = self.passphrase_source.get()
        self._files.load(names[0], passphrase)  # raises WrongPassphrase
        return passphrase

    def _save(self, key: Key) -> None:
        if self.backend == "os":
            self._os.save(key)
        else:
            self._files.save(key, self._store_passphrase())

    def create(self, name: str, kind: str = "master", secret: bytes | None = None) -> KeyInfo:
        """`secret`: import these 32 raw bytes (e.g. an AES key a Java/Go S3EC app uses)."""
        check_name(name)
        check_kind(kind)
        existing = self.list()
        if any(i.name == name for i in existing):
            raise KeyExists(f"key {name!r} already exists in {self._where()}")
        ids = {i.key_id for i in existing}
        key_id = secrets.token_hex(8)
        while key_id in ids:
            key_id = secrets.token_hex(8)
        if kind.startswith("s3ec-rsa"):  # `secret`: the DER of rsakeys.from_pem
            from . import rsakeys

            if secret is None and kind == "s3ec-rsa-pub":
                raise KeyringError("an s3ec-rsa-pub key is imported: --from-pem PUBLIC.pem")
            secret = rsakeys.check(kind, secret) if secret is not None else rsakeys.generate()
        elif secret is not None and len(secret) != SECRET_LEN:
            raise KeyringError(f"a raw key is {SECRET_LEN} bytes, got {len(secret)}")
        key = Key(KeyInfo(name, key_id, kind, _now()), secret or os.urandom(SECRET_LEN))
        self._save(key)
        return key.info

    def export(self, name: str, *, export_passphrase: PassphraseSource | None = None) -> str:
        """Armored text of `name`, sealed under `export_passphrase` (default: the keyring's)."""
        key = self.get(name)
        source = export_passphrase or self.passphrase_source
        return armor(seal(key, source.get(confirm=True), kdf=self.kdf))

    def import_(self, blob: str, *, import_passphrase: PassphraseSource | None = None) -> KeyInfo:
        record = dearmor(blob)
        info = record_info(record, "key export")
        check_name(info.name)
        check_kind(info.kind)
        for other in self.list():
            if other.name == info.name or other.key_id == info.key_id:
                raise KeyExists(
                    f"cannot import {info.name!r} (id {info.key_id}): {other.name!r} "
                    f"(id {other.key_id}) already exists in {self._where()}"
                )
        source = import_passphrase or self.passphrase_source
        key = unseal(record, source.get(), "key export")
        self._save(key)
        return key.info

    def delete(self, name: str, *, in_use_check: Callable[[KeyInfo], bool] | None = None) -> None:
        info = self._find(name)
        if info is None:
            raise KeyNotFound(f"no key named or with id {name!r} in {self._where()}")
        if in_use_check is not None and in_use_check(info):
            raise KeyInUse(f"key {info.name!r} (id {info.key_id}) is still in use; not deleted")
        if self.backend == "os":
            self._os.delete(info.name)
        else:
            self._files.delete(info.name)
