"""Journal rows sealed under a journal key: one key derivation per journal, not one per row.

A sealed row part was a `seal_blob` (an HKDF of the master key with a fresh salt and a new AES
context for every row write: 10 of the 17 key derivations a client-mode file cost). Now each
`Journal` opened for writing draws a random *journal key* the first time it seals, stores it in
the journal's `kv` table sealed as a blob (purpose ``journal-key:<kid>``, so the blob cannot be
moved to another key id) and seals every row part with AES-256-GCM under it:

    "J1" | kid (8 bytes) | nonce (12 bytes: a counter) | AES-GCM(key, nonce, plain, aad)
    aad = "J1" | kid | 0x00 | purpose        (purpose = "journal:<row id>:<part>")

Nonces are unique: the key is fresh per `RowSealer` (never loaded to seal again) and the counter
only grows. The row id and part stay in the AAD, so rows still cannot be swapped or renumbered.
Rows sealed the old way (blobs) still open (`Journal._open`). docs/FORMAT.md, "The journal".
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG = b"J1"
KID_LEN = 8
NONCE_LEN = 12
KEY_PREFIX = "jkey:"  # kv entries: jkey:<kid hex> = base64(seal_blob("journal-key:<kid>", key))
Sealer = Callable[[str, bytes], bytes]


class RowKeyError(Exception):
    """A row part sealed under a journal key that is missing or does not open it."""


def is_row_sealed(data: bytes) -> bool:
    return data[:2] == TAG and len(data) > 2 + KID_LEN + NONCE_LEN


class RowSealer:
    def __init__(self, seal: Sealer, unseal: Sealer, get_kv: Callable[[str], str | None],
                 set_kv: Callable[[str, str], None]):
        self._seal_blob, self._open_blob = seal, unseal
        self._get_kv, self._set_kv = get_kv, set_kv
        self._lock = threading.Lock()
        self._kid: bytes | None = None  # this sealer's own key, made at its first seal
        self._aead: AESGCM | None = None
        self._counter = 0
        self._opened: dict[bytes, AESGCM] = {}  # keys of rows written earlier, by kid

    def _own_key(self) -> tuple[bytes, AESGCM]:
        if self._kid is None or self._aead is None:
            kid, key = os.urandom(KID_LEN), AESGCM.generate_key(256)
            blob = self._seal_blob(f"journal-key:{kid.hex()}", key)
            self._set_kv(KEY_PREFIX + kid.hex(), base64.b64encode(blob).decode())
            self._kid, self._aead = kid, AESGCM(key)
            self._opened[kid] = self._aead
        return self._kid, self._aead

    def seal(self, purpose: str, plain: bytes) -> bytes:
        with self._lock:
            kid, aead = self._own_key()
            self._counter += 1
            nonce = self._counter.to_bytes(NONCE_LEN, "big")
        head = TAG + kid
        return head + nonce + aead.encrypt(nonce, plain, head + b"\x00" + purpose.encode())

    def open(self, purpose: str, sealed: bytes) -> bytes:
        head, kid = sealed[:2 + KID_LEN], sealed[2:2 + KID_LEN]
        nonce = sealed[2 + KID_LEN:2 + KID_LEN + NONCE_LEN]
        try:
            return self._key(kid).decrypt(nonce, sealed[2 + KID_LEN + NONCE_LEN:],
                                          head + b"\x00" + purpose.encode())
        except InvalidTag:
            raise RowKeyError("does not authenticate under its journal key") from None

    def _key(self, kid: bytes) -> AESGCM:
        with self._lock:
            aead = self._opened.get(kid)
        if aead is not None:
            return aead
        stored = self._get_kv(KEY_PREFIX + kid.hex())
        if stored is None:
            raise RowKeyError(f"its journal key {kid.hex()} is missing")
        key = self._open_blob(f"journal-key:{kid.hex()}", base64.b64decode(stored))
        if len(key) != 32:
            raise RowKeyError(f"journal key {kid.hex()} has a bad length")
        aead = AESGCM(key)
        with self._lock:
            self._opened[kid] = aead
        return aead
