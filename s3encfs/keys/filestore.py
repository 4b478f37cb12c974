"""Passphrase-sealed key records and the one-file-per-key directory store.

A record is JSON: format, name, id, kind, created, kdf {alg, n, r, p, salt}, cipher, nonce,
sealed.  The secret is sealed with AES-256-GCM under scrypt(passphrase, salt); the AAD is
``name|id|kind`` so a record cannot be renamed or re-kinded without failing authentication.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

FORMAT = "s3encfs-key-v1"
KINDS = ("master", "sse-c", "s3ec-aes")  # s3ec-aes: an S3 Encryption Client AES/GCM key
SECRET_LEN = 32
DEFAULT_SCRYPT_N = 2**15
MAX_SCRYPT_N = 2**22  # refuse records that would need absurd memory/time
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUFFIX = ".key"


class KeyringError(Exception):
    """Base class of every keyring error (messages never contain key material)."""


class KeyNotFound(KeyringError, KeyError):
    """No key with that name or id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "key not found"


class KeyExists(KeyringError):
    """A key with that name already exists."""


class WrongPassphrase(KeyringError):
    """Authentication of a sealed record failed: wrong passphrase or modified record."""


class InsecurePermissions(KeyringError):
    """A key file is readable by group/others."""


class CorruptKeyFile(KeyringError):
    """A key file cannot be parsed."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str
    kind: str
    created: str


@dataclass(frozen=True)
class Key:
    info: KeyInfo
    secret: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"Key({self.info.name}, id={self.info.key_id}, kind={self.info.kind})"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise KeyringError(
            f"invalid key name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with . _ -)"
        )
    return name


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise KeyringError(f"invalid key kind {kind!r}: one of {', '.join(KINDS)}")
    return kind


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _aad(info: KeyInfo) -> bytes:
    return f"{info.name}|{info.key_id}|{info.kind}".encode()


def _kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def seal(key: Key, passphrase: bytes, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> dict[str, Any]:
    """Seal `key` into a JSON-able record (fresh salt and nonce)."""
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt, scrypt_n, 8, 1)
    sealed = AESGCM(kek).encrypt(nonce, key.secret, _aad(key.info))
    return {
        "format": FORMAT,
        "name": key.info.name,
        "id": key.info.key_id,
        "kind": key.info.kind,
        "created": key.info.created,
        "kdf": {"alg": "scrypt", "n": scrypt_n, "r": 8, "p": 1, "salt": _b64(salt)},
        "cipher": "aes-256-gcm",
        "nonce": _b64(nonce),
        "sealed": _b64(sealed),
    }


def record_info(record: Any, where: str) -> KeyInfo:
    """The public part of a record; CorruptKeyFile if it is not one of ours."""
    try:
        if record["format"] != FORMAT:
            raise CorruptKeyFile(f"{where}: unknown format {record['format']!r}")
        info = KeyInfo(
            name=str(record["name"]),
            key_id=str(record["id"]),
            kind=str(record["kind"]),
            created=str(record["created"]),
        )
    except (KeyError, TypeError) as e:
        raise CorruptKeyFile(f"{where}: not an s3encfs key record (missing {e})") from None
    return info


def unseal(record: Any, passphrase: bytes, where: str) -> Key:
    """Open a record; WrongPassphrase when authentication fails."""
    info = record_info(record, where)
    try:
        kdf = record["kdf"]
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        salt, nonce = _unb64(kdf["salt"]), _unb64(record["nonce"])
        sealed = _unb64(record["sealed"])
        if kdf["alg"] != "scrypt" or record["cipher"] != "aes-256-gcm":
            raise CorruptKeyFile(f"{where}: unsupported kdf/cipher")
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptKeyFile(f"{where}: malformed sealed record ({type(e).__name__})") from None
    if not (2 <= n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise CorruptKeyFile(f"{where}: unreasonable scrypt parameters n={n} r={r} p={p}")
    kek = _kek(passphrase, salt, n, r, p)
    try:
        secret = AESGCM(kek).decrypt(nonce, sealed, _aad(info))
    except InvalidTag:
        raise WrongPassphrase(
            f"cannot unseal key {info.name!r} ({where}): "
            "wrong passphrase, or the record was modified"
        ) from None
    if len(secret) != SECRET_LEN:
        raise CorruptKeyFile(f"{where}: sealed secret has the wrong length")
    return Key(info, secret)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` via tmp file + fsync + rename + directory fsync."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # umask may have removed bits; also never more than asked
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` (0700) if needed; tighten a directory we create ourselves."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)


def read_private(path: Path) -> bytes:
    """Read a file that must not be group/world accessible (and must not be a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise KeyringError(f"cannot open {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecurePermissions(
                f"refusing to use {path}: it is accessible by group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class FileStore:
    """One ``NAME.key`` file per key in `directory` (0700), each 0600 and sealed."""

    def __init__(self, directory: Path, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        self.directory = directory
        self.scrypt_n = scrypt_n

    def path(self, name: str) -> Path:
        return self.directory / (check_name(name) + SUFFIX)

    def names(self) -> Iterator[str]:
        if not self.directory.is_dir():
            return
        for entry in sorted(self.directory.iterdir()):
            if entry.name.endswith(SUFFIX) and NAME_RE.match(entry.name[: -len(SUFFIX)]):
                yield entry.name[: -len(SUFFIX)]

    def load_record(self, name: str) -> dict[str, Any]:
        path = self.path(name)
        raw = read_private(path)  # FileNotFoundError propagates
        try:
            record = json.loads(raw)
        except ValueError:
            raise CorruptKeyFile(f"{path}: not valid JSON") from None
        info = record_info(record, str(path))
        if info.name != name:
            raise CorruptKeyFile(f"{path}: holds key {info.name!r}, not {name!r}")
        return dict(record)

    def infos(self) -> list[KeyInfo]:
        return [record_info(self.load_record(n), str(self.path(n))) for n in self.names()]

    def load(self, name: str, passphrase: bytes) -> Key:
        return unseal(self.load_record(name), passphrase, str(self.path(name)))

    def save(self, key: Key, passphrase: bytes, *, overwrite: bool = False) -> None:
        ensure_private_dir(self.directory)
        path = self.path(key.info.name)
        if path.exists() and not overwrite:
            raise KeyExists(f"key {key.info.name!r} already exists in {self.directory}")
        record = seal(key, passphrase, scrypt_n=self.scrypt_n)
        atomic_write(path, json.dumps(record, indent=1).encode() + b"\n")

    def delete(self, name: str) -> None:
        self.path(name).unlink()
        fsync_dir(self.directory)
