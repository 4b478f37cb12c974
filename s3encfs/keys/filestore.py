"""Passphrase-sealed key records and the one-file-per-key directory store.

A record is JSON: format, name, id, kind, created, kdf {alg, …, salt}, cipher, nonce, sealed.
The secret is sealed with AES-256-GCM under a key derived from the passphrase: Argon2id
(``{"alg": "argon2id", "t", "p", "m" (KiB)}``, RFC 9106's second recommended setting) for new
records; older records made with scrypt (``{"alg": "scrypt", "n", "r", "p"}``, n=2^15) still
open and are re-sealed with the current parameters the next time they are opened. The AAD is
``name|id|kind`` so a record cannot be renamed or re-kinded without failing authentication.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import kdfchild

FORMAT = "s3encfs-key-v1"
# s3ec-aes: an S3 Encryption Client AES/GCM key; s3ec-rsa(-pub): its RSA-OAEP keys (rsakeys.py)
KINDS = ("master", "sse-c", "s3ec-aes", "s3ec-rsa", "s3ec-rsa-pub")
SECRET_LEN = 32
DEFAULT_SCRYPT_N = 2**15  # what records were sealed with before Argon2id (still opened)
MAX_SCRYPT_N = 2**22  # refuse records that would need absurd memory/time
# RFC 9106 §4, second recommended option: 3 passes, 4 lanes, 64 MiB (~0.17 s here)
DEFAULT_KDF: dict[str, Any] = {"alg": "argon2id", "t": 3, "p": 4, "m": 2**16}
MAX_ARGON2_M = 2**22  # KiB (4 GiB): refuse absurd records
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUFFIX = ".key"

log = logging.getLogger("s3encfs.keys")


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


def _kek(passphrase: bytes, salt: bytes, kdf: dict[str, Any], where: str) -> bytes:
    """The key-encryption key for `kdf` (the record's parameters, validated here)."""
    try:
        alg = kdf["alg"]
        if alg == "scrypt":
            n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            if not (2 <= n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32
                    and 1 <= p <= 16):
                raise CorruptKeyFile(f"{where}: unreasonable scrypt parameters n={n} r={r} p={p}")
            return _derive("scrypt", {"n": n, "r": r, "p": p}, salt, passphrase,
                           lambda: Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase))
        if alg == "argon2id":
            t, p, m = int(kdf["t"]), int(kdf["p"]), int(kdf["m"])
            if not (1 <= t <= 64 and 1 <= p <= 64 and 8 * p <= m <= MAX_ARGON2_M):
                raise CorruptKeyFile(f"{where}: unreasonable argon2id parameters t={t} p={p} m={m}")
            return _derive("argon2id", {"t": t, "p": p, "m": m}, salt, passphrase,
                           lambda: Argon2id(salt=salt, length=32, iterations=t, lanes=p,
                                            memory_cost=m).derive(passphrase))
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptKeyFile(f"{where}: malformed kdf parameters ({type(e).__name__})") from None
    raise CorruptKeyFile(f"{where}: unsupported kdf {alg!r}")


def _derive(alg: str, params: dict[str, int], salt: bytes, passphrase: bytes,
            in_process: Callable[[], bytes]) -> bytes:
    """A memory-hard derivation runs in a child process, so the mount's peak RSS does not
    carry it (keys/kdfchild.py)."""
    try:
        return kdfchild.derive(alg, params, salt, passphrase, in_process)
    except kdfchild.KdfChildError as e:
        raise KeyringError(str(e)) from None


def kdf_weaker(have: Any, want: dict[str, Any]) -> bool:
    """True when a record's kdf is an older algorithm or cheaper than `want` (re-seal it)."""
    if not isinstance(have, dict) or have.get("alg") != want["alg"]:
        return want["alg"] == "argon2id"  # never "upgrade" back to scrypt
    if want["alg"] == "argon2id":
        return any(int(have.get(k, 0)) < int(want[k]) for k in ("t", "m"))
    return int(have.get("n", 0)) < int(want.get("n", 0))


def seal(key: Key, passphrase: bytes, *, kdf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seal `key` into a JSON-able record (fresh salt and nonce) under `kdf` parameters
    (default DEFAULT_KDF; tests pass cheap ones, or scrypt ones to make old-style records)."""
    params = {k: v for k, v in (kdf or DEFAULT_KDF).items() if k != "salt"}
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt, params, "new record")
    sealed = AESGCM(kek).encrypt(nonce, key.secret, _aad(key.info))
    return {
        "format": FORMAT,
        "name": key.info.name,
        "id": key.info.key_id,
        "kind": key.info.kind,
        "created": key.info.created,
        "kdf": {**params, "salt": _b64(salt)},
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
        salt, nonce = _unb64(kdf["salt"]), _unb64(record["nonce"])
        sealed = _unb64(record["sealed"])
        if record["cipher"] != "aes-256-gcm":
            raise CorruptKeyFile(f"{where}: unsupported cipher")
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptKeyFile(f"{where}: malformed sealed record ({type(e).__name__})") from None
    kek = _kek(passphrase, salt, kdf, where)
    try:
        secret = AESGCM(kek).decrypt(nonce, sealed, _aad(info))
    except InvalidTag:
        raise WrongPassphrase(
            f"cannot unseal key {info.name!r} ({where}): "
            "wrong passphrase, or the record was modified"
        ) from None
    if len(secret) != SECRET_LEN and not (info.kind.startswith("s3ec-rsa") and secret):
        raise CorruptKeyFile(f"{where}: sealed secret has the wrong length")  # RSA: DER
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

    def __init__(self, directory: Path, *, kdf: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.kdf = kdf or DEFAULT_KDF

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
        """Open NAME; a record sealed with an older or cheaper KDF is re-sealed with the
        current parameters (best effort: a read-only key directory only gets a warning)."""
        record = self.load_record(name)
        key = unseal(record, passphrase, str(self.path(name)))
        if kdf_weaker(record.get("kdf"), self.kdf):
            try:
                self.save(key, passphrase, overwrite=True)
            except OSError as e:
                log.warning("could not re-seal key %r with %s: %s", name, self.kdf["alg"],
                            e.strerror or e)
            else:
                log.info("key %r re-sealed with %s", name, self.kdf["alg"])
        return key

    def save(self, key: Key, passphrase: bytes, *, overwrite: bool = False) -> None:
        ensure_private_dir(self.directory)
        path = self.path(key.info.name)
        if path.exists() and not overwrite:
            raise KeyExists(f"key {key.info.name!r} already exists in {self.directory}")
        record = seal(key, passphrase, kdf=self.kdf)
        atomic_write(path, json.dumps(record, indent=1).encode() + b"\n")

    def delete(self, name: str) -> None:
        self.path(name).unlink()
        fsync_dir(self.directory)
