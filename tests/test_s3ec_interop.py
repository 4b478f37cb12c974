"""Interop with the official Amazon S3 Encryption Client for Python (PyPI 4.0.0).

S3 is the loopback SeaweedFS; KMS is moto's server (SeaweedFS has no KMS API, and the official
Python client only has a KMS keyring). Objects the official client writes (V3 and V2, single PUT
and multipart) decrypt byte-exact with s3encfs's S3EC code; objects s3encfs's code writes
(KMS keyring, V3 and V2, single PUT and multipart) decrypt with the official client.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest
from kms_moto import create_key, kms_client, moto_kms

from s3encfs.codec import IntegrityError
from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto import s3ec_stream
from s3encfs.crypto.s3ec_keyrings import KmsKeyring, S3ECKeys

s3ec = pytest.importorskip("s3_encryption")
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig  # noqa: E402
from s3_encryption.materials.kms_keyring import KmsKeyring as OfficialKms  # noqa: E402
from s3_encryption.materials.materials import AlgorithmSuite, CommitmentPolicy  # noqa: E402

MiB = 1024 * 1024
SIZES = [0, 1, 16, 17, 100_000, MiB + 5]
BIG = 17 * MiB  # written as multipart (8 MiB parts: 3 parts)
CONTEXT = {"app": "s3encfs-test"}


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with moto_kms(tmp_path_factory.mktemp("kms")) as endpoint:
        yield endpoint, create_key(endpoint)


def official(s3server: Any, kms: tuple[str, str], version: int) -> Any:
    endpoint, key_id = kms
    ring = OfficialKms(kms_client=kms_client(endpoint), kms_key_id=key_id)
    if version == 3:
        cfg = S3EncryptionClientConfig(keyring=ring)
    else:
        cfg = S3EncryptionClientConfig(
            keyring=ring, encryption_algorithm=AlgorithmSuite.ALG_AES_256_GCM_IV12_TAG16_NO_KDF,
            commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    # its own boto3 client: the official client registers event handlers on the one it wraps
    return S3EncryptionClient(wrapped_s3_client=s3server.client(), config=cfg)


def ours(kms: tuple[str, str], version: int = 3, context: dict[str, str] | None = None
         ) -> S3ECKeys:
    endpoint, key_id = kms
    return S3ECKeys([KmsKeyring(kms_client(endpoint), key_id, context)], version=version)


def read_ours(s3: Any, bucket: str, key: str, keys: S3ECKeys) -> bytes:
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = obj["Body"].read()
    assert fmt.plain_size(len(body)) == len(body) - 16
    ck, _ = keys.open_object(obj["Metadata"])
    d = s3ec_stream.Decryptor(ck)
    out = b"".join(d.update(body[i:i + MiB]) for i in range(0, len(body), MiB))
    return out + d.finish()


def write_ours(s3: Any, bucket: str, key: str, keys: S3ECKeys, data: bytes,
               part: int = 8 * MiB) -> dict[str, str]:
    ck, meta, _, _ = keys.new_object()
    enc = s3ec_stream.Encryptor(ck)
    if len(data) <= part:
        s3.put_object(Bucket=bucket, Key=key, Body=enc.update(data) + enc.finish(), Metadata=meta)
        return meta
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)
    parts = []
    for n, off in enumerate(range(0, len(data), part), 1):
        chunk = enc.update(data[off:off + part])
        if off + part >= len(data):
            chunk += enc.finish()  # the tag ends the last part
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                           Body=chunk)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    return meta


@pytest.mark.parametrize("version", [3, 2])
def test_official_writes_we_read(s3server: Any, s3: Any, bucket: str, kms: tuple[str, str],
                                 version: int) -> None:
    client = official(s3server, kms, version)
    blobs = {f"f{n}": os.urandom(n) for n in SIZES}
    for key, data in blobs.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    big = os.urandom(BIG)
    client.upload_fileobj(io.BytesIO(big), bucket, "big")
    blobs["big"] = big
    keys = ours(kms)  # our reader reads V2 and V3 whatever it writes
    for key, data in blobs.items():
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert ("x-amz-c" in meta) == (version == 3)
        assert read_ours(s3, bucket, key, keys) == data, key
    # with an encryption context
    client.put_object(Bucket=bucket, Key="ctx", Body=b"with context", EncryptionContext=CONTEXT)
    assert read_ours(s3, bucket, "ctx", ours(kms, context=CONTEXT)) == b"with context"
    with pytest.raises(IntegrityError):  # the context must match, as in the SDK
        read_ours(s3, bucket, "ctx", keys)


@pytest.mark.parametrize("version", [3, 2])
def test_we_write_official_reads(s3server: Any, s3: Any, bucket: str, kms: tuple[str, str],
                                 version: int) -> None:
    keys = ours(kms, version)
    blobs = {f"f{n}": os.urandom(n) for n in [*SIZES, BIG]}
    for key, data in blobs.items():
        write_ours(s3, bucket, key, keys, data)
    client = official(s3server, kms, version)
    for key, data in blobs.items():
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key
    with_ctx = ours(kms, version, CONTEXT)
    write_ours(s3, bucket, "ctx", with_ctx, b"context bound")
    got = client.get_object(Bucket=bucket, Key="ctx", EncryptionContext=CONTEXT)
    assert got["Body"].read() == b"context bound"


def test_kms_data_key_cache_and_counters(s3: Any, bucket: str, kms: tuple[str, str]) -> None:
    keys = ours(kms)
    write_ours(s3, bucket, "a", keys, b"a")
    write_ours(s3, bucket, "b", keys, b"b")
    for _ in range(3):
        assert read_ours(s3, bucket, "a", keys) == b"a"
    assert read_ours(s3, bucket, "b", keys) == b"b"
    assert keys.kms_counters() == {"kms_generate_calls": 2, "kms_decrypt_calls": 2,
                                   "kms_cache_hits": 2}


def test_tampered_official_objects_refused(s3server: Any, s3: Any, bucket: str,
                                           kms: tuple[str, str]) -> None:
    client = official(s3server, kms, 3)
    client.put_object(Bucket=bucket, Key="a", Body=b"A" * 1000)
    client.put_object(Bucket=bucket, Key="b", Body=b"B" * 1000)
    keys = ours(kms)
    a = s3.get_object(Bucket=bucket, Key="a")
    meta_a, body_a = a["Metadata"], a["Body"].read()
    meta_b = s3.head_object(Bucket=bucket, Key="b")["Metadata"]
    flipped = bytearray(body_a)
    flipped[500] ^= 0x80
    cases = {
        "flip": (meta_a, bytes(flipped)),
        "truncate": (meta_a, body_a[:-1]),
        "swap-key": ({**meta_a, "x-amz-3": meta_b["x-amz-3"]}, body_a),
        "commitment": ({**meta_a, "x-amz-d": meta_b["x-amz-d"]}, body_a),
    }
    for name, (meta, body) in cases.items():
        s3.put_object(Bucket=bucket, Key=name, Body=body, Metadata=meta)
        with pytest.raises(IntegrityError):
            read_ours(s3, bucket, name, keys)
