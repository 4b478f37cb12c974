"""S3 Encryption Client format (s3encfs/crypto/s3ec_*): vectors, an independent decoder, tamper.

The independent decoder/encoder below is written from the spec (../shared S3EC notes §5-§7, the
AWS S3EC specification), with different primitives where possible (cryptography's HKDF with a
salt instead of HMAC + HKDFExpand, one-shot AESGCM instead of the streaming Cipher), so a bug
shared by the writer and the reader in s3encfs does not go unseen.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from s3encfs.codec import IntegrityError
from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto import s3ec_stream
from s3encfs.crypto.s3ec_keyrings import AesKeyring, MissingS3ECKey, RsaKeyring, S3ECKeys

KEK = bytes(range(200, 232))
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)

# -- worked vector (values computed with the official client's s3_encryption.key_derivation,
#    an independent implementation; DK = 00..1f, message id = 100..127)
VEC_DK = bytes(range(32))
VEC_MID = bytes(range(100, 128))
VEC_DEK = "95e0b2ff3f50200a0e3015f67f680fa0e4bce4c2e63c817f1ff465eb4b974f85"
VEC_CK = "2d59a480d136f5982791c93a93d760ceade5011ccf465dbfc303c597"
VEC_BODY = "3174e95cd2be4d44b289d347852a401b081b98014f9fd0a7f7d5"  # b"hello s3ec" (V3)


# ---------------------------------------------------------------- independent reference
def _hkdf(dk: bytes, mid: bytes, label: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA512(), n, salt=mid, info=b"\x00\x73" + label).derive(dk)


def ref_unwrap(meta: dict[str, str]) -> tuple[int, bytes]:
    low = {k.lower(): v for k, v in meta.items()}
    if "x-amz-c" in low:
        version, edk, wrap = 3, base64.b64decode(low["x-amz-3"]), low["x-amz-w"]
        wrap = {"02": "AES/GCM", "22": "RSA-OAEP-SHA1"}[wrap]
        tag = b"115"
    else:
        version, edk, wrap = 2, base64.b64decode(low["x-amz-key-v2"]), low["x-amz-wrap-alg"]
        tag = b"AES/GCM/NoPadding"
    if wrap == "AES/GCM":
        return version, AESGCM(KEK).decrypt(edk[:12], edk[12:], tag)
    pseudo = RSA_KEY.decrypt(edk, OAEP)
    assert pseudo[0] == 32 and pseudo[33:] == tag
    return version, pseudo[1:33]


def ref_decrypt(meta: dict[str, str], body: bytes) -> bytes:
    version, dk = ref_unwrap(meta)
    low = {k.lower(): v for k, v in meta.items()}
    if version == 3:
        mid = base64.b64decode(low["x-amz-i"])
        assert _hkdf(dk, mid, b"COMMITKEY", 28) == base64.b64decode(low["x-amz-d"])
        return AESGCM(_hkdf(dk, mid, b"DERIVEKEY", 32)).decrypt(b"\x01" * 12, body, b"\x00\x73")
    return AESGCM(dk).decrypt(base64.b64decode(low["x-amz-iv"]), body, None)


def ref_encrypt(version: int, wrap: str, plaintext: bytes,
                matdesc: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
    dk = os.urandom(32)
    tag = b"115" if version == 3 else b"AES/GCM/NoPadding"
    if wrap == "AES/GCM":
        iv = os.urandom(12)
        edk = iv + AESGCM(KEK).encrypt(iv, dk, tag)
    else:
        edk = RSA_KEY.public_key().encrypt(b"\x20" + dk + tag, OAEP)
    md = json.dumps(matdesc or {})  # Python-SDK style JSON, with spaces
    if version == 3:
        mid = os.urandom(28)
        meta = {"x-amz-c": "115", "x-amz-3": base64.b64encode(edk).decode(),
                "x-amz-w": {"AES/GCM": "02", "RSA-OAEP-SHA1": "22"}[wrap],
                "x-amz-d": base64.b64encode(_hkdf(dk, mid, b"COMMITKEY", 28)).decode(),
                "x-amz-i": base64.b64encode(mid).decode(), "x-amz-m": md}
        body = AESGCM(_hkdf(dk, mid, b"DERIVEKEY", 32)).encrypt(b"\x01" * 12, plaintext,
                                                                 b"\x00\x73")
        return meta, body
    iv = os.urandom(12)
    meta = {"X-Amz-Key-V2": base64.b64encode(edk).decode(),
            "X-Amz-Iv": base64.b64encode(iv).decode(),
            "X-Amz-Cek-Alg": "AES/GCM/NoPadding", "X-Amz-Tag-Len": "128",
            "X-Amz-Wrap-Alg": wrap, "X-Amz-Matdesc": md}  # Go-style capitalised names
    return meta, AESGCM(dk).encrypt(iv, plaintext, None)


# ---------------------------------------------------------------- helpers
def keys(version: int = 3, kind: str = "aes", **kw: object) -> S3ECKeys:
    ring: AesKeyring | RsaKeyring = (AesKeyring("a", KEK) if kind == "aes"
                                     else RsaKeyring("r", RSA_KEY))
    return S3ECKeys([ring], version=version, **kw)  # type: ignore[arg-type]


def write(k: S3ECKeys, plaintext: bytes) -> tuple[dict[str, str], bytes]:
    ck, meta, _, _ = k.new_object()
    return meta, s3ec_stream.encrypt_body(ck, plaintext)


def read(k: S3ECKeys, meta: dict[str, str], body: bytes) -> bytes:
    ck, _ = k.open_object(meta)
    return s3ec_stream.decrypt_body(ck, body)


SIZES = [0, 1, 15, 16, 17, 65_536 + 3, 1024 * 1024 + 1]


# ---------------------------------------------------------------- vectors
def test_v3_key_derivation_vector() -> None:
    dek, ck = fmt.derive_v3(VEC_DK, VEC_MID)
    assert dek.hex() == VEC_DEK and ck.hex() == VEC_CK
    meta = fmt.build_metadata(3, fmt.WRAP_AES, b"x" * 60, {}, message_id=VEC_MID, commitment=ck)
    key = fmt.content_key(fmt.parse_envelope(meta), VEC_DK)
    assert s3ec_stream.encrypt_body(key, b"hello s3ec").hex() == VEC_BODY
    assert s3ec_stream.decrypt_body(key, bytes.fromhex(VEC_BODY)) == b"hello s3ec"


def test_v3_metadata_shape() -> None:
    meta, body = write(keys(3), b"abc")
    assert set(meta) == {"x-amz-c", "x-amz-3", "x-amz-w", "x-amz-d", "x-amz-i"}  # no empty x-amz-m
    assert meta["x-amz-c"] == "115" and meta["x-amz-w"] == "02"
    assert len(base64.b64decode(meta["x-amz-3"])) == 60 and len(body) == 3 + 16
    meta2, _ = write(S3ECKeys([AesKeyring("a", KEK, {"app": "x"})]), b"")
    assert meta2["x-amz-m"] == '{"app":"x"}'


def test_v2_metadata_shape() -> None:
    meta, _ = write(keys(2, "rsa"), b"abc")
    assert meta["x-amz-cek-alg"] == "AES/GCM/NoPadding" and meta["x-amz-tag-len"] == "128"
    assert meta["x-amz-wrap-alg"] == "RSA-OAEP-SHA1" and meta["x-amz-matdesc"] == "{}"
    assert len(base64.b64decode(meta["x-amz-iv"])) == 12
    assert len(base64.b64decode(meta["x-amz-key-v2"])) == 256


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("kind", ["aes", "rsa"])
@pytest.mark.parametrize("size", SIZES)
def test_ours_read_by_reference(version: int, kind: str, size: int) -> None:
    data = os.urandom(size)
    meta, body = write(keys(version, kind), data)
    assert len(body) == size + 16 and fmt.plain_size(len(body)) == size
    assert ref_decrypt(meta, body) == data


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("wrap", ["AES/GCM", "RSA-OAEP-SHA1"])
@pytest.mark.parametrize("size", SIZES)
def test_reference_read_by_ours(version: int, wrap: str, size: int) -> None:
    data = os.urandom(size)
    meta, body = ref_encrypt(version, wrap, data)
    assert read(keys(3, "aes" if wrap == "AES/GCM" else "rsa"), meta, body) == data


def test_streaming_decrypt_in_odd_chunks_and_ctr_ranges() -> None:
    data = os.urandom(200_003)
    meta, body = ref_encrypt(3, "AES/GCM", data)
    ck, _ = keys().open_object(meta)
    d = s3ec_stream.Decryptor(ck)
    out = b"".join(d.update(body[i:i + 7777]) for i in range(0, len(body), 7777)) + d.finish()
    assert out == data
    for sizes in ([7777], [5, 3, 70_000, 1, 15, 16, 17, 100_000], [len(body)]):
        d, got, i = s3ec_stream.Decryptor(ck), [], 0  # update_view: one reused buffer, same bytes
        while i < len(body):
            n = sizes[len(got) % len(sizes)]
            got.append(bytes(d.update_view(body[i:i + n])))
            i += n
        assert b"".join(got) + d.finish() == data, sizes
    for start, end in [(0, 1), (5, 40), (16, 32), (12345, 99999), (200_000, 200_003)]:
        assert s3ec_stream.ctr_decrypt_range(ck, start, body[start:end]) == data[start:end]


def test_fresh_key_and_message_id_per_object() -> None:
    k = keys()
    m1, b1 = write(k, b"same")
    m2, b2 = write(k, b"same")
    assert m1["x-amz-3"] != m2["x-amz-3"] and m1["x-amz-i"] != m2["x-amz-i"] and b1 != b2


# ---------------------------------------------------------------- keys
def test_rsa_public_key_writes_but_cannot_read() -> None:
    wo = S3ECKeys([RsaKeyring("pub", RSA_KEY.public_key())])
    meta, body = write(wo, b"backup")
    assert ref_decrypt(meta, body) == b"backup"
    with pytest.raises(MissingS3ECKey):
        read(wo, meta, body)


def test_several_keys_newest_writes_reads_pick_by_description() -> None:
    old = AesKeyring("old", os.urandom(32), {"gen": "1"})
    new = AesKeyring("new", KEK, {"gen": "2"})
    m_old, b_old = write(S3ECKeys([old]), b"old")
    both = S3ECKeys([new, old])
    m_new, b_new = write(both, b"new")
    assert json.loads(m_new["x-amz-m"]) == {"gen": "2"}
    assert read(both, m_old, b_old) == b"old" and read(both, m_new, b_new) == b"new"
    with pytest.raises(MissingS3ECKey):
        read(S3ECKeys([new]), m_old, b_old)
    with pytest.raises(ValueError):
        S3ECKeys([AesKeyring("x", KEK), AesKeyring("y", os.urandom(32))])


def test_wrong_key_with_same_description_is_an_error_not_a_fallback() -> None:
    meta, body = write(keys(), b"x")
    with pytest.raises(IntegrityError):
        read(S3ECKeys([AesKeyring("other", os.urandom(32))]), meta, body)


# ---------------------------------------------------------------- tamper
@pytest.mark.parametrize("version", [2, 3])
def test_flipped_byte_and_truncation_fail(version: int) -> None:
    k = keys(version)
    meta, body = write(k, os.urandom(5000))
    for i in (0, 2500, len(body) - 1):
        bad = bytearray(body)
        bad[i] ^= 1
        with pytest.raises(IntegrityError):
            read(k, meta, bytes(bad))
    for cut in (1, 16, len(body) - 1, len(body)):
        with pytest.raises(IntegrityError):
            read(k, meta, body[:-cut])


@pytest.mark.parametrize("version", [2, 3])
def test_swapped_wrapped_key_fails(version: int) -> None:
    k = keys(version)
    meta1, body1 = write(k, b"one" * 100)
    meta2, _ = write(k, b"two" * 100)
    name = "x-amz-3" if version == 3 else "x-amz-key-v2"
    swapped = {**meta1, name: meta2[name]}
    with pytest.raises(IntegrityError):
        read(k, swapped, body1)


def test_wrong_commitment_refused_before_decrypting() -> None:
    k = keys(3)
    meta, _ = write(k, b"data")
    commit = bytearray(base64.b64decode(meta["x-amz-d"]))
    commit[0] ^= 1
    with pytest.raises(IntegrityError, match="commitment"):
        k.open_object({**meta, "x-amz-d": base64.b64encode(bytes(commit)).decode()})


def test_v2_wrapped_key_bound_to_content_algorithm() -> None:
    """A V3 AES/GCM wrapped key (AAD "115") does not unwrap as a V2 one, and vice versa."""
    k3, k2 = keys(3), keys(2)
    m3, _ = write(k3, b"x")
    m2, b2 = write(k2, b"x")
    with pytest.raises(IntegrityError):
        read(k2, {**m2, "x-amz-key-v2": m3["x-amz-3"]}, b2)


def test_flipped_wrapped_key_fails() -> None:
    for kind in ("aes", "rsa"):
        k = keys(3, kind)
        meta, body = write(k, b"x")
        edk = bytearray(base64.b64decode(meta["x-amz-3"]))
        edk[20] ^= 4
        with pytest.raises(IntegrityError):
            read(k, {**meta, "x-amz-3": base64.b64encode(bytes(edk)).decode()}, body)


# ---------------------------------------------------------------- format decisions
def test_mixed_or_incomplete_metadata_refused() -> None:
    m3, _ = write(keys(3), b"x")
    m2, _ = write(keys(2), b"x")
    with pytest.raises(fmt.NotS3EC):
        fmt.parse_envelope({**m3, "x-amz-iv": m2["x-amz-iv"]})
    with pytest.raises(fmt.NotS3EC):
        fmt.parse_envelope({**m2, "x-amz-3": m3["x-amz-3"]})
    for name in ("x-amz-d", "x-amz-i", "x-amz-w"):
        with pytest.raises(fmt.NotS3EC):
            fmt.parse_envelope({k: v for k, v in m3.items() if k != name})
    with pytest.raises(fmt.NotS3EC):
        fmt.parse_envelope({k: v for k, v in m2.items() if k != "x-amz-tag-len"})
    with pytest.raises(fmt.NotS3EC):
        fmt.parse_envelope({"mode": "0644"})


def test_legacy_cbc_refused_unless_flag() -> None:
    from cryptography.hazmat.primitives import padding as sympad
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dk, iv = os.urandom(32), os.urandom(16)
    wiv = os.urandom(12)
    edk = wiv + AESGCM(KEK).encrypt(wiv, dk, b"AES/GCM/NoPadding")
    p = sympad.PKCS7(128).padder()
    padded = p.update(b"legacy data") + p.finalize()
    e = Cipher(algorithms.AES(dk), modes.CBC(iv)).encryptor()
    body = e.update(padded) + e.finalize()
    meta = {"x-amz-key-v2": base64.b64encode(edk).decode(),
            "x-amz-iv": base64.b64encode(iv).decode(),
            "x-amz-cek-alg": "AES/CBC/PKCS5Padding", "x-amz-wrap-alg": "AES/GCM",
            "x-amz-matdesc": "{}"}
    with pytest.raises(fmt.LegacyRefused):
        keys().open_object(meta)
    assert read(keys(allow_legacy=True), meta, body) == b"legacy data"


def test_instruction_file_merge() -> None:
    meta, body = write(keys(3), b"split")
    obj = {k: meta[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}
    inst = json.dumps({k: meta[k] for k in ("x-amz-3", "x-amz-w")}).encode()
    assert fmt.needs_instruction_file(obj)
    merged = fmt.merge_instruction(obj, inst)
    assert read(keys(), merged, body) == b"split"
    with pytest.raises(fmt.NotS3EC):  # the file may not bring its own commitment
        fmt.merge_instruction(obj, json.dumps({**json.loads(inst), "x-amz-d": meta["x-amz-d"]})
                              .encode())
    with pytest.raises(fmt.NotS3EC):
        fmt.merge_instruction(obj, json.dumps({**json.loads(inst), "other": "1"}).encode())
    m2, b2 = write(keys(2), b"v2 split")
    assert read(keys(), fmt.merge_instruction({}, json.dumps(m2).encode()), b2) == b"v2 split"
    with pytest.raises(fmt.NotS3EC):
        fmt.merge_instruction({"x-amz-iv": m2["x-amz-iv"]}, json.dumps(m2).encode())


def test_gcm_limit() -> None:
    enc = s3ec_stream.Encryptor(fmt.ContentKey(os.urandom(32), os.urandom(12), b""))
    enc.plain_bytes = fmt.MAX_PLAINTEXT - 1
    enc.update(b"x")
    with pytest.raises(OverflowError):
        enc.update(b"y")
