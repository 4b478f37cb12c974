"""RSA keys for the S3 Encryption Client's ``RSA-OAEP-SHA1`` wrapping, kept in the keyring.

Two kinds: ``s3ec-rsa`` (a private key: reads and writes) and ``s3ec-rsa-pub`` (the public key
alone: a write-only host, e.g. a backup machine that must not be able to read its backups).
The record's secret is the key's DER (PKCS#8 private / SubjectPublicKeyInfo public), sealed like
every other record; only the file backend stores them (the OS keyring and systemd-credential
backends hold 32-byte keys).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .filestore import KeyringError

RSA_KINDS = ("s3ec-rsa", "s3ec-rsa-pub")
MIN_BITS = 2048
NEW_BITS = 3072


def generate() -> bytes:
    """A new private key (3072 bits), as PKCS#8 DER."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=NEW_BITS)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def from_pem(kind: str, pem: bytes) -> bytes:
    """The DER secret of `kind` from a PEM file (a private PEM gives its public half for
    ``s3ec-rsa-pub``); KeyringError for anything that is not an unencrypted RSA key."""
    try:
        if b"PRIVATE KEY" in pem:
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, rsa.RSAPrivateKey):
                raise KeyringError("not an RSA key")
            if kind == "s3ec-rsa":
                return check(kind, private.private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
            public = private.public_key()
        else:
            if kind == "s3ec-rsa":
                raise KeyringError("a public key PEM can only be imported as --kind s3ec-rsa-pub")
            pub = serialization.load_pem_public_key(pem)
            if not isinstance(pub, rsa.RSAPublicKey):
                raise KeyringError("not an RSA key")
            public = pub
    except (ValueError, TypeError) as exc:
        raise KeyringError(f"cannot read the RSA PEM: {exc}") from None
    return check(kind, public.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo))


def load(kind: str, der: bytes) -> rsa.RSAPrivateKey | rsa.RSAPublicKey:
    try:
        key = (serialization.load_der_private_key(der, password=None) if kind == "s3ec-rsa"
               else serialization.load_der_public_key(der))
    except (ValueError, TypeError):
        raise KeyringError(f"the {kind} record does not hold an RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise KeyringError(f"the {kind} record does not hold an RSA key")
    bits = key.key_size
    if bits < MIN_BITS:
        raise KeyringError(f"RSA keys shorter than {MIN_BITS} bits are refused ({bits})")
    return key


def check(kind: str, der: bytes) -> bytes:
    load(kind, der)
    return der


def public_pem(kind: str, der: bytes) -> bytes:
    """The public key as PEM (to give a write-only host)."""
    key = load(kind, der)
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
