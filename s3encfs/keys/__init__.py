"""Local named keys (client-side master keys and SSE-C keys); see docs/KEYS.md."""

from .filestore import (
    CorruptKeyFile,
    InsecurePermissions,
    Key,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    KeyringError,
    WrongPassphrase,
)
from .keyring import KeyInUse, Keyring, default_directory
from .passphrase import PassphraseError, PassphraseSource

__all__ = [
    "CorruptKeyFile",
    "InsecurePermissions",
    "Key",
    "KeyExists",
    "KeyInUse",
    "KeyInfo",
    "KeyNotFound",
    "Keyring",
    "KeyringError",
    "PassphraseError",
    "PassphraseSource",
    "WrongPassphrase",
    "default_directory",
]
