"""S3 Encryption Client content ciphers over a `ContentKey` (s3ec_format.py): one whole-object
AES-256-GCM stream each way, and the opt-in unauthenticated AES-CTR ranged read the SDKs also have.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from s3encfs.codec import IntegrityError

from .s3ec_format import CBC, GCM, MAX_PLAINTEXT, TAG_LEN, ContentKey, LegacyRefused


class Encryptor:
    """One whole-object AES-256-GCM stream; `finish` returns the tag (append it to the body)."""

    def __init__(self, ck: ContentKey) -> None:
        self._enc = Cipher(algorithms.AES(ck.key), modes.GCM(ck.iv)).encryptor()
        if ck.aad:
            self._enc.authenticate_additional_data(ck.aad)
        self.plain_bytes = 0

    def update(self, plaintext: bytes) -> bytes:
        self._count(len(plaintext))
        return self._enc.update(plaintext)

    def update_into(self, plaintext: bytes | bytearray | memoryview,
                    out: bytearray | memoryview) -> int:
        """As `update`, into the caller's buffer (at least len(plaintext) bytes): a reused
        buffer costs no fresh pages (a new 8 MiB `bytes` per part cost 8x the AES itself).
        `out` may be `plaintext` itself (GCM encrypts in place)."""
        self._count(len(plaintext))
        return int(self._enc.update_into(plaintext, out))

    def _count(self, n: int) -> None:
        self.plain_bytes += n
        if self.plain_bytes > MAX_PLAINTEXT:
            raise OverflowError("S3EC object larger than the GCM limit")

    def finish(self) -> bytes:
        self._enc.finalize()
        return self._enc.tag


class Decryptor:
    """Streams an object body; holds back the last 16 bytes (the tag, or CBC's final block).

    Bytes returned by `update` are NOT authenticated: a caller must not release any of them to a
    reader before `finish` returns without raising."""

    def __init__(self, ck: ContentKey) -> None:
        self._cbc = ck.cek_alg == CBC
        self._held = b""
        if self._cbc:
            self._dec = Cipher(algorithms.AES(ck.key), modes.CBC(ck.iv)).decryptor()
        else:
            self._dec = Cipher(algorithms.AES(ck.key), modes.GCM(ck.iv)).decryptor()
            if ck.aad:
                self._dec.authenticate_additional_data(ck.aad)
        self._unpad = padding.PKCS7(128).unpadder() if self._cbc else None

    def update(self, data: bytes) -> bytes:
        buf = self._held + data
        if len(buf) <= TAG_LEN:
            self._held = buf
            return b""
        self._held = buf[-TAG_LEN:]
        out = self._dec.update(buf[:-TAG_LEN])
        return self._unpad.update(out) if self._unpad is not None else out

    def update_view(self, data: bytes) -> memoryview:
        """As `update`, into a buffer this decryptor reuses: the view is valid only until the
        next call. No per-chunk allocation (a fresh multi-MiB bytes object per call, page
        faults and all, cost more CPU than AES-GCM itself: 3 of them per 8 MiB chunk were most
        of a cold read's CPU)."""
        if self._cbc or len(data) < TAG_LEN:
            return memoryview(self.update(data))
        held, self._held = self._held, bytes(data[-TAG_LEN:])
        n = len(held) + len(data) - TAG_LEN
        if len(getattr(self, "_out", b"")) < n + 15:
            self._out = bytearray(n + 15)  # update_into wants block size - 1 spare bytes
        out = memoryview(self._out)
        k = self._dec.update_into(held, out) if held else 0
        k += self._dec.update_into(memoryview(data)[:-TAG_LEN], out[k:])
        return out[:k]

    def finish(self) -> bytes:
        """The remaining plaintext; IntegrityError on a bad tag or truncated body."""
        if len(self._held) != TAG_LEN:
            raise IntegrityError("S3EC object truncated (shorter than its tag)")
        try:
            if self._unpad is not None:
                tail = self._dec.update(self._held) + self._dec.finalize()
                return self._unpad.update(tail) + self._unpad.finalize()
            return self._dec.finalize_with_tag(self._held)  # type: ignore[attr-defined]
        except Exception:
            raise IntegrityError("S3EC object failed authentication") from None


def decrypt_body(ck: ContentKey, body: bytes) -> bytes:
    d = Decryptor(ck)
    return d.update(body) + d.finish()


def encrypt_body(ck: ContentKey, plaintext: bytes) -> bytes:
    e = Encryptor(ck)
    return e.update(plaintext) + e.finish()


def ctr_decrypt_range(ck: ContentKey, offset: int, data: bytes) -> bytes:
    """UNAUTHENTICATED: decrypt object bytes `data` starting at body `offset` as AES-CTR.

    GCM's first data counter block is IV || be32(2); block i uses IV || be32(2 + i)."""
    if ck.cek_alg != GCM:
        raise LegacyRefused("ranged reads need GCM content")
    block, skip = divmod(offset, 16)
    counter = ck.iv + (2 + block).to_bytes(4, "big")
    dec = Cipher(algorithms.AES(ck.key), modes.CTR(counter)).decryptor()
    return (dec.update(b"\0" * skip + data) + dec.finalize())[skip:]
