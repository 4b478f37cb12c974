"""`s3encfs check` / `info` / `rekey` on S3 Encryption Client objects in a real SeaweedFS bucket.

Objects are written with the tests' independent encoder (test_s3ec_format.ref_encrypt, raw AES
key KEK), good and damaged, straight into the bucket (no mount in between)."""

import json
import os
import subprocess
from typing import Any

from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_s3ec_format import ref_encrypt
from test_s3ec_mount import AES, aesenv, cbc_object, kms  # noqa: F401

MiB = 1024 * 1024


def _put(s3: Any, bucket: str, key: str, meta: dict[str, str], body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*S3ENCFS, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def damaged_bucket(s3: Any, bucket: str) -> dict[str, bytes]:
    """Good objects (returned) and one damaged object per failure kind (not returned)."""
    good3 = os.urandom(9 * MiB + 5)  # more than one 8 MiB ranged GET
    meta3, body3 = ref_encrypt(3, "AES/GCM", good3)
    good2 = b"v2 object\n"
    meta2, body2 = ref_encrypt(2, "AES/GCM", good2)
    meta2 = {k.lower(): v for k, v in meta2.items()}  # ref_encrypt writes Go-style V2 names
    other, _ = ref_encrypt(3, "AES/GCM", b"other")
    _put(s3, bucket, "dir/good-v3", meta3, body3)
    _put(s3, bucket, "good-v2", meta2, body2)
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"")
    split = os.urandom(3000)
    ms, bs = ref_encrypt(3, "AES/GCM", split)
    _put(s3, bucket, "split", {k: ms[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}, bs)
    s3.put_object(Bucket=bucket, Key="split.instruction",
                  Body=json.dumps({k: ms[k] for k in ("x-amz-3", "x-amz-w")}).encode())
    flipped = bytearray(body3)
    flipped[len(flipped) // 2] ^= 1  # mid-body: only a full decrypt finds it
    _put(s3, bucket, "flip-body", meta3, bytes(flipped))
    _put(s3, bucket, "truncated", meta2, body2[:-1])
    swapped = ref_encrypt(2, "AES/GCM", b"x")[0]["X-Amz-Key-V2"]  # a valid wrap of another key
    _put(s3, bucket, "swapped-key", {**meta2, "x-amz-key-v2": swapped}, body2)
    _put(s3, bucket, "commitment", {**meta3, "x-amz-d": other["x-amz-d"]}, body3)
    _put(s3, bucket, "other-key", ref_encrypt(3, "AES/GCM", b"k", {"app": "elsewhere"})[0],
         b"\0" * 17)  # a material description no keyring key has
    s3.put_object(Bucket=bucket, Key="plain", Body=b"not encrypted at all")
    _put(s3, bucket, "cbc", *cbc_object(b"legacy bytes"))
    _put(s3, bucket, "lost-instruction", {k: ms[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")},
         bs)
    s3.put_object(Bucket=bucket, Key="orphan.instruction", Body=b"{}")
    return {"dir/good-v3": good3, "good-v2": good2, "split": split}


BAD = {"flip-body": "authentication failed", "truncated": "authentication failed",
       "swapped-key": "authentication failed", "commitment": "commitment",
       "other-key": "wrapping key not in the keyring", "plain": "not an S3 Encryption Client",
       "cbc": "legacy", "lost-instruction": "without its instruction file",
       "orphan.instruction": "instruction file without its object"}


def test_check_s3ec_names_every_bad_object(bucket: str, s3: Any,
                                           aesenv: dict[str, str]) -> None:  # noqa: F811
    damaged_bucket(s3, bucket)
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--data",
               "--json")
    assert proc.returncode == 1, proc.stderr
    rep = json.loads(proc.stdout)
    got = {p["key"]: p["error"] for p in rep["problems"]}
    assert set(got) == set(BAD), got
    for key, want in BAD.items():
        assert want in got[key], (key, got[key])
    assert rep["data_checked"] == 3  # good-v3, good-v2, split (the instruction file is its part)
    assert rep["directories"] == 1

    # without --data no body is read: damage only the tag shows goes unnoticed (a flipped or
    # cut body; a V2 wrapped key swapped for a valid wrap of another data key: V2 has no
    # commitment), everything the metadata shows is still found
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--json")
    got = {p["key"] for p in json.loads(proc.stdout)["problems"]}
    assert got == set(BAD) - {"flip-body", "truncated", "swapped-key"}

    # the text report names each bad object
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--data")
    assert proc.returncode == 1
    for key in BAD:
        assert f"BAD {key}:" in proc.stdout, (key, proc.stdout)


def test_check_s3ec_clean_bucket_exits_0(bucket: str, s3: Any,
                                         aesenv: dict[str, str]) -> None:  # noqa: F811
    meta, body = ref_encrypt(3, "AES/GCM", b"fine")
    _put(s3, bucket, "a", meta, body)
    meta, body = ref_encrypt(2, "AES/GCM", b"")
    _put(s3, bucket, "empty", meta, body)
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 objects" in proc.stdout and "0 unreadable" in proc.stdout


def test_info_counts_formats(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                             aesenv: dict[str, str]) -> None:  # noqa: F811
    m = mount_factory(bucket, "client", prefix="ours/")
    (m.mountpoint / "one").write_bytes(b"1")
    (m.mountpoint / "d").mkdir()
    (m.mountpoint / "d" / "two").write_bytes(b"22")
    m.umount()
    for i, (version, body) in enumerate([(3, b"a"), (3, b""), (2, b"bb")]):
        _put(s3, bucket, f"s3ec/{i}", *ref_encrypt(version, "AES/GCM", body))
    _put(s3, bucket, "s3ec/rsa", *ref_encrypt(3, "RSA-OAEP-SHA1", b"r"))
    _put(s3, bucket, "s3ec/cbc", *cbc_object(b"legacy"))
    ms, bs = ref_encrypt(3, "AES/GCM", b"split")
    _put(s3, bucket, "s3ec/split", {k: ms[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}, bs)
    s3.put_object(Bucket=bucket, Key="s3ec/split.instruction",
                  Body=json.dumps({k: ms[k] for k in ("x-amz-3", "x-amz-w")}).encode())
    _put(s3, bucket, "s3ec/broken", {"x-amz-c": "115"}, b"\0" * 16)
    s3.put_object(Bucket=bucket, Key="plain/p", Body=b"p")
    s3.put_object(Bucket=bucket, Key="plain/s", Body=b"s", ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="plain/c", Body=b"c", SSECustomerAlgorithm="AES256",
                  SSECustomerKey=os.urandom(32))
    proc = run(aesenv, "info", f"s3://{bucket}", "--all-objects", "--json")
    assert proc.returncode == 0, proc.stderr
    f = json.loads(proc.stdout)["formats"]
    assert f["scope"] == "all objects" and f["headed"] == f["objects"] == 12
    assert f["formats"] == {"client-v2": 2, "plain": 2, "s3ec-invalid": 1, "s3ec-v2": 1,
                            "s3ec-v2-cbc": 1, "s3ec-v3": 4, "unknown (sse-c)": 1}
    assert f["s3ec_wrapping"] == {"AES/GCM": 5, "RSA-OAEP-SHA1": 1}
    assert f["sse"] == {"none": 10, "sse-c": 1, "sse-s3": 1}
    assert f["by_key"]["s3ec instruction files"] == 1
    assert f["by_key"]["directory markers"] >= 1  # ours/d/ (encrypted name)

    proc = run(aesenv, "info", f"s3://{bucket}", "--sample", "3")
    assert proc.returncode == 0, proc.stderr
    assert "formats (random sample of 3 of 12 objects, by HEAD):" in proc.stdout, proc.stdout
    proc = run(aesenv, "info", f"s3://{bucket}/s3ec/", "--all-objects")
    assert "formats (all objects of 7 objects, by HEAD):" in proc.stdout, proc.stdout
    assert "s3ec-v3" in proc.stdout and "client-v2" not in proc.stdout


def _meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def test_rekey_s3ec_rewraps_rsa_to_aes(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                        aesenv: dict[str, str], tmp_path: Any) -> None:  # noqa: F811
    from cryptography.hazmat.primitives import serialization
    from test_s3ec_format import RSA_KEY, ref_decrypt

    pem = tmp_path / "rsa.pem"
    pem.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    rsa = ["--s3ec-rsa-key", str(pem)]
    plain = {"v3": os.urandom(9 * MiB + 1), "v2": b"v2 body", "empty": b""}
    for key, data in plain.items():
        _put(s3, bucket, key, *ref_encrypt(3 if key != "v2" else 2, "RSA-OAEP-SHA1", data))
    ms, bs = ref_encrypt(3, "RSA-OAEP-SHA1", b"split body")
    _put(s3, bucket, "split", {k: ms[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}, bs)
    s3.put_object(Bucket=bucket, Key="split.instruction",
                  Body=json.dumps({k: ms[k] for k in ("x-amz-3", "x-amz-w", "x-amz-m")}).encode())
    m = mount_factory(bucket, "s3ec", extra=rsa, env=aesenv)  # our sealed attributes, RSA wrap
    (m.mountpoint / "ours").write_bytes(b"written by the mount")
    os.chmod(m.mountpoint / "ours", 0o640)
    m.umount()
    bad_meta, bad_body = ref_encrypt(3, "RSA-OAEP-SHA1", b"bad")
    other, _ = ref_encrypt(3, "RSA-OAEP-SHA1", b"other")
    _put(s3, bucket, "zz-bad-commitment", {**bad_meta, "x-amz-d": other["x-amz-d"]}, bad_body)
    s3.put_object(Bucket=bucket, Key=".s3encfs/plain-control", Body=b"x")  # not S3EC: skipped
    before = {k: (_meta(s3, bucket, k), s3.get_object(Bucket=bucket, Key=k)["Body"].read())
              for k in [*plain, "split", "ours", "zz-bad-commitment"]}

    # the new key (raw AES, empty material description) first, the old RSA key to unwrap
    state = tmp_path / "state"
    cmd = ["rekey", f"s3://{bucket}", "--encryption", "s3ec", *AES, *rsa,
           "--state-dir", str(state)]
    proc = run(aesenv, *cmd)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the tampered object fails...
    assert "zz-bad-commitment" in proc.stderr and "commitment" in proc.stderr
    # 5 files and the mount's directory index (.s3encfs/idx/…, an S3EC object too)
    assert "re-encrypted 6," in proc.stdout and "not a revocation" in proc.stdout, \
        (proc.stdout, [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]])
    # ...and is left exactly as it was
    assert _meta(s3, bucket, "zz-bad-commitment") == before["zz-bad-commitment"][0]

    for key in [*plain, "split", "ours"]:
        meta = _meta(s3, bucket, key)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == before[key][1], key  # bodies untouched (server-side copy)
        old = before[key][0]
        if key == "split":
            assert meta == old  # the key part lives in the instruction file, rewritten
            inst = json.loads(s3.get_object(Bucket=bucket, Key="split.instruction")["Body"]
                              .read())
            assert inst["x-amz-w"] == "02" and "x-amz-m" not in inst  # AES/GCM, empty desc
            assert ref_decrypt({**meta, **inst}, body) == b"split body"
            continue
        low = {k.lower(): v for k, v in meta.items()}
        assert low.get("x-amz-w", low.get("x-amz-wrap-alg")) in ("02", "AES/GCM"), key
        for same in ("x-amz-d", "x-amz-i", "x-amz-iv", "s3encfs-s3ec-attrs"):  # bound to the DK
            assert low.get(same) == {k.lower(): v for k, v in old.items()}.get(same), (key, same)
        if key in plain:  # the tests' independent decoder, with the new key (KEK) only
            assert ref_decrypt(meta, body) == plain[key], key

    # everything but the tampered object now opens with the new key alone
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--data",
               "--json")
    probs = {p["key"]: p["error"] for p in json.loads(proc.stdout)["problems"]}
    assert list(probs) == ["zz-bad-commitment"], probs

    # resumable / idempotent: a second run changes nothing that is done
    s3.delete_object(Bucket=bucket, Key="zz-bad-commitment")
    proc = run(aesenv, *cmd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-encrypted 0, already current 8," in proc.stdout, proc.stdout
    m2 = mount_factory(bucket, "s3ec", name="m2", extra=AES, env=aesenv)
    assert (m2.mountpoint / "ours").read_bytes() == b"written by the mount"
    assert (m2.mountpoint / "ours").stat().st_mode & 0o777 == 0o640
    assert (m2.mountpoint / "v3").read_bytes() == plain["v3"]


def test_rekey_s3ec_rsa_and_aes_to_kms_reads_with_the_official_client(
        s3server: Any, bucket: str, s3: Any, aesenv: dict[str, str],  # noqa: F811
        kms: tuple[str, str], tmp_path: Any) -> None:  # noqa: F811
    """KMS is moto's server (SeaweedFS has no KMS); the objects are on SeaweedFS."""
    from cryptography.hazmat.primitives import serialization
    from test_s3ec_format import RSA_KEY
    from test_s3ec_interop import official

    endpoint, key_id = kms
    env = dict(aesenv, AWS_ENDPOINT_URL_KMS=endpoint)
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    plain = {"v3": os.urandom(100_000), "v2": os.urandom(33), "empty": b"",
             "aes-v3": os.urandom(5000), "aes-v2": os.urandom(7)}
    for key, data in plain.items():
        _put(s3, bucket, key, *ref_encrypt(2 if key.endswith("v2") else 3,
                                           "AES/GCM" if key.startswith("aes") else
                                           "RSA-OAEP-SHA1", data))
    # old keys: raw AES (would write, as the first --key) and RSA; the target: KMS
    proc = run(env, "rekey", f"s3://{bucket}", "--encryption", "s3ec", "--s3ec-kms-key", key_id,
               "--s3ec-rsa-key", str(pem), *AES, "--s3ec-writer", "kms",
               "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-encrypted 5," in proc.stdout, proc.stdout
    proc = run(env, "rekey", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--s3ec-writer",
               "nope", "--state-dir", str(tmp_path / "state"))
    assert proc.returncode != 0 and "names none of the configured keys" in proc.stderr
    for key, data in plain.items():
        meta = _meta(s3, bucket, key)
        assert meta.get("x-amz-w", meta.get("x-amz-wrap-alg")) in ("12", "kms+context"), meta
        client = official(s3server, kms, 2 if key.endswith("v2") else 3)
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key


def test_rsa_keys_in_the_keyring_public_only_writer(
        bucket: str, s3: Any, mount_factory: Any, keyenv: dict[str, str],  # noqa: F811
        tmp_path: Any) -> None:
    """`key create --kind s3ec-rsa --from-pem` on the reading host, `key public` → the
    write-only host's `--kind s3ec-rsa-pub`; the objects decode with the tests' own decoder."""
    import errno

    import pytest
    from cryptography.hazmat.primitives import serialization
    from test_s3ec_format import RSA_KEY, ref_decrypt

    priv = tmp_path / "priv.pem"
    priv.write_bytes(RSA_KEY.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    reader = keyenv
    writer = dict(keyenv, S3ENCFS_KEYRING_DIR=str(tmp_path / "writer-keys"))
    proc = run(reader, "key", "create", "backup", "--kind", "s3ec-rsa", "--from-pem", str(priv))
    assert proc.returncode == 0, proc.stderr
    proc = run(reader, "key", "public", "backup")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub = tmp_path / "pub.pem"
    pub.write_text(proc.stdout)
    proc = run(writer, "key", "create", "backup", "--kind", "s3ec-rsa-pub", "--from-pem", str(pub))
    assert proc.returncode == 0, proc.stderr
    proc = run(writer, "key", "create", "nopem", "--kind", "s3ec-rsa-pub")
    assert proc.returncode != 0 and "--from-pem" in proc.stderr
    proc = run(writer, "key", "create", "wrong", "--kind", "s3ec-rsa", "--from-pem", str(pub))
    assert proc.returncode != 0 and "s3ec-rsa-pub" in proc.stderr  # a public key cannot read

    data = os.urandom(300_000)
    w = mount_factory(bucket, "s3ec", name="w", env=writer, extra=["--key", "backup"])
    (w.mountpoint / "f").write_bytes(data)
    w.umount()
    w.start()
    with pytest.raises(OSError) as ei:  # nothing written by this host is readable by it
        (w.mountpoint / "f").read_bytes()
    assert ei.value.errno == errno.EIO
    w.umount()
    r = s3.get_object(Bucket=bucket, Key="f")
    meta, body = r["Metadata"], r["Body"].read()
    assert meta["x-amz-w"] == "22" and json.loads(meta["x-amz-m"]) == {"s3encfs-key": "backup"}
    assert ref_decrypt(meta, body) == data  # the independent decoder, with the private key
    other, _ = ref_encrypt(3, "RSA-OAEP-SHA1", b"x", {"s3encfs-key": "backup"})
    _put(s3, bucket, "swapped", {**meta, "x-amz-3": other["x-amz-3"]}, body)

    proc = run(writer, "check", f"s3://{bucket}", "--encryption", "s3ec", "--key", "backup",
               "--json")
    probs = {p["key"]: p["error"] for p in json.loads(proc.stdout)["problems"]}
    assert "public only" in probs["f"], probs
    proc = run(reader, "check", f"s3://{bucket}", "--encryption", "s3ec", "--key", "backup",
               "--data", "--json")
    probs = {p["key"]: p["error"] for p in json.loads(proc.stdout)["problems"]}
    assert list(probs) == ["swapped"] and "commitment" in probs["swapped"], probs
    rd = mount_factory(bucket, "s3ec", name="r", env=reader, extra=["--key", "backup"])
    assert (rd.mountpoint / "f").read_bytes() == data


def test_rekey_will_not_convert_client_format_to_s3ec(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                                     aesenv: dict[str, str]) -> None:  # noqa: F811
    """Conversion re-encrypts every body and renames every key (S3EC names are plain): without
    --from, rekey refuses before writing anything and names the option that does it."""
    m = mount_factory(bucket, "client")
    (m.mountpoint / "f").write_bytes(b"client format")
    m.umount()
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    proc = run(aesenv, "rekey", f"s3://{bucket}", "--encryption", "s3ec", *AES)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "client-encrypted" in proc.stderr and "--from client" in proc.stderr
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == before


def test_rekey_s3ec_kms_to_another_kms_key(
        s3server: Any, bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
        aesenv: dict[str, str], kms: tuple[str, str], tmp_path: Any) -> None:  # noqa: F811
    """KMS -> KMS: `--s3ec-kms-key NEW,OLD`. The metadata of both looks the same (same
    context), so the key KMS reports on Decrypt decides which objects still need a rewrap."""
    from kms_moto import create_key
    from test_s3ec_interop import official

    endpoint, old = kms
    new = create_key(endpoint)
    env = dict(aesenv, AWS_ENDPOINT_URL_KMS=endpoint)
    plain = {"v3": os.urandom(100_000), "v2": os.urandom(33), "empty": b""}
    for key, data in plain.items():  # the official client, under the old key
        official(s3server, kms, 2 if key == "v2" else 3).put_object(Bucket=bucket, Key=key,
                                                                     Body=data)
    both = ["--encryption", "s3ec", "--s3ec-kms-key", f"{new},{old}"]
    m = mount_factory(bucket, "s3ec", extra=both[2:], env=env)  # reads old, writes new
    assert (m.mountpoint / "v3").read_bytes() == plain["v3"]
    (m.mountpoint / "mine").write_bytes(b"under the new key")
    m.umount()
    state = ["--state-dir", str(tmp_path / "state")]
    proc = run(env, "rekey", f"s3://{bucket}", *both, *state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-encrypted 3," in proc.stdout, proc.stdout  # "mine" (and the index) are current
    proc = run(env, "rekey", f"s3://{bucket}", *both, *state)
    assert "re-encrypted 0," in proc.stdout, proc.stdout  # done: nothing left under the old key
    for key, data in {**plain, "mine": b"under the new key"}.items():
        client = official(s3server, (endpoint, new), 2 if key == "v2" else 3)
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key
    proc = run(env, "check", f"s3://{bucket}", "--encryption", "s3ec", "--s3ec-kms-key", new,
               "--data")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the new key alone opens all
