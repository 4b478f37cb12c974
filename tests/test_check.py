"""`s3encfs check` against real SeaweedFS: counts a clean client-mode tree, finds a flipped body
bit (--data only), tampered metadata, and orphaned multipart uploads (--abort-uploads)."""

import json
import os
import subprocess

import pytest
from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401

FILES = {"a.txt": b"hello\n", "empty": b"", "sub/c.txt": b"nested file\n",
         "big.bin": os.urandom(200_000)}  # 4 segments of 64 KiB


def run_check(bucket: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def as_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


@pytest.fixture
def populated(bucket, mount_factory):  # noqa: F811
    m = mount_factory(bucket, "client")
    for rel, data in FILES.items():
        path = m.mountpoint / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    m.umount()
    return m


def file_objects(s3, bucket):
    objs = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o for o in objs if not o["Key"].startswith(".s3encfs/") and not o["Key"].endswith("/")]


def test_clean_tree_reads_back(bucket, populated, keyenv):  # noqa: F811
    proc = run_check(bucket, keyenv, "--data", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = as_json(proc)
    assert rep["ok"] and rep["problems"] == []
    files = len(FILES)
    assert rep["objects"] - rep["directories"] == files
    assert rep["data_checked"] == files
    assert rep["indexes"] >= 1
    assert rep["uploads"] == []
    plain = run_check(bucket, keyenv)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "0 unreadable" in plain.stdout


def test_wrong_master_key_is_refused(bucket, populated, keyenv, tmp_path):  # noqa: F811
    env = dict(keyenv, S3ENCFS_KEYRING_DIR=str(tmp_path / "otherkeys"))
    subprocess.run([*S3ENCFS, "key", "create", "default"], env=env, check=True,
                   capture_output=True)
    proc = run_check(bucket, env)
    assert proc.returncode != 0
    assert "wrong master key" in proc.stderr


def test_flipped_body_bit_found_only_with_data(bucket, populated, keyenv, s3):  # noqa: F811
    big = max(file_objects(s3, bucket), key=lambda o: o["Size"])
    key = big["Key"]
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(obj["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=obj["Metadata"])

    meta_only = run_check(bucket, keyenv, "--json")
    assert meta_only.returncode == 0, meta_only.stdout + meta_only.stderr
    with_data = run_check(bucket, keyenv, "--data")
    assert with_data.returncode == 1, with_data.stdout + with_data.stderr
    bad = [line for line in with_data.stdout.splitlines() if line.strip().startswith("BAD")]
    assert len(bad) == 1 and key in bad[0] and "authentication failed" in bad[0]
    assert "1 unreadable" in with_data.stdout
    biggest = max(FILES, key=lambda rel: len(FILES[rel]))
    assert bad[0].strip().startswith(f"BAD {biggest} ("), bad[0]  # named by its decoded path


@pytest.mark.parametrize("field", ["s3encfs-attrs", "s3encfs-key"])
def test_tampered_metadata_found(bucket, populated, keyenv, s3, field):  # noqa: F811
    victim = file_objects(s3, bucket)[0]["Key"]
    meta = s3.head_object(Bucket=bucket, Key=victim)["Metadata"]
    assert field in meta
    value = meta[field]
    meta[field] = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    s3.copy_object(Bucket=bucket, Key=victim, CopySource={"Bucket": bucket, "Key": victim},
                   Metadata=meta, MetadataDirective="REPLACE")
    proc = run_check(bucket, keyenv, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = as_json(proc)
    assert [p["key"] for p in rep["problems"]] == [victim]
    assert "authentication failed" in rep["problems"][0]["error"]


def test_orphaned_upload_listed_and_aborted(bucket, populated, keyenv, s3):  # noqa: F811
    up = s3.create_multipart_upload(Bucket=bucket, Key="orphan.bin")
    s3.upload_part(Bucket=bucket, Key="orphan.bin", UploadId=up["UploadId"], PartNumber=1,
                   Body=b"x" * 1024)
    listed = run_check(bucket, keyenv)
    assert listed.returncode == 0, listed.stdout + listed.stderr  # uploads don't fail the check
    assert "incomplete multipart upload: orphan.bin" in listed.stdout
    assert up["UploadId"] in listed.stdout
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    aborted = run_check(bucket, keyenv, "--abort-uploads", "--json")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    rep = as_json(aborted)
    assert rep["aborted"] == 1 and rep["uploads"][0]["key"] == "orphan.bin"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    again = as_json(run_check(bucket, keyenv, "--json"))
    assert again["uploads"] == []


def test_object_without_sse_found(bucket, mount_factory, keyenv, s3):  # noqa: F811
    subprocess.run([*S3ENCFS, "key", "create", "ssec1", "--kind", "sse-c"], env=keyenv, check=True,
                   capture_output=True)
    m = mount_factory(bucket, "sse-c:ssec1")
    (m.mountpoint / "good.txt").write_bytes(b"good\n")
    (m.mountpoint / "bad.txt").write_bytes(b"bad\n")
    m.umount()
    s3.put_object(Bucket=bucket, Key="bad.txt", Body=b"bad\n")  # same name, no SSE-C
    proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "sse-c:ssec1",
                           "--data", "--json"], env=keyenv, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = as_json(proc)
    assert [p["key"] for p in rep["problems"]] == ["bad.txt"]
    assert "wrong or missing SSE" in rep["problems"][0]["error"]
    assert rep["data_checked"] == 1


def test_check_flags_what_format_v2_catches(bucket, populated, keyenv, s3):  # noqa: F811
    """Stripped attrs, swapped and copied objects, spliced segments, undecodable names, an
    unreadable and a missing index each make `check` exit 1, naming the object (issue 10)."""
    from test_tamper import STRIDE, Raw

    raw = Raw(s3, bucket, keyenv)

    def key(rel):
        return raw.layout.file_key(tuple(rel.split("/")))

    def get(rel):
        r = s3.get_object(Bucket=bucket, Key=key(rel))
        return r["Body"].read(), dict(r["Metadata"])

    def put(rel, body, meta):
        s3.put_object(Bucket=bucket, Key=key(rel), Body=body, Metadata=meta)

    originals = {rel: get(rel) for rel in FILES}

    def restore():
        for rel, (body, meta) in originals.items():
            put(rel, body, meta)

    def problems(*args):
        proc = run_check(bucket, keyenv, "--json", *args)
        rep = as_json(proc)
        assert (proc.returncode == 1) == bool(rep["problems"]), proc.stdout + proc.stderr
        out = {}
        for p in rep["problems"]:
            out[p["key"]] = "; ".join(filter(None, [out.get(p["key"]), p["error"]]))
        return out

    assert problems("--data") == {}
    body, meta = originals["sub/c.txt"]
    put("sub/c.txt", body, {k: v for k, v in meta.items() if k != "s3encfs-attrs"})
    assert "no sealed attributes" in problems()[key("sub/c.txt")]
    restore()

    put("a.txt", *originals["empty"])
    put("empty", *originals["a.txt"])
    found = problems()
    assert set(found) == {key("a.txt"), key("empty")}, found
    assert all("moved or copied" in e for e in found.values())
    restore()

    body, meta = originals["big.bin"]
    segs = [body[i:i + STRIDE] for i in range(0, len(body), STRIDE)]
    put("big.bin", b"".join([segs[0], segs[2], segs[1], *segs[3:]]), meta)
    assert problems() == {}  # segments are only read with --data
    assert "authentication failed" in problems("--data")[key("big.bin")]
    restore()

    s3.copy_object(Bucket=bucket, Key=key("copy-of-a"),
                   CopySource={"Bucket": bucket, "Key": key("a.txt")})
    found = problems()
    assert "object id shared with" in found[key("a.txt")]
    assert "moved or copied" in found[key("copy-of-a")]
    s3.delete_object(Bucket=bucket, Key=key("copy-of-a"))

    s3.put_object(Bucket=bucket, Key="not-ours.txt", Body=b"planted")
    assert "does not decode" in problems()["not-ours.txt"]
    s3.delete_object(Bucket=bucket, Key="not-ours.txt")

    sub_index = raw.layout.index_key(("sub",))
    index_body = s3.get_object(Bucket=bucket, Key=sub_index)["Body"].read()
    s3.put_object(Bucket=bucket, Key=sub_index, Body=index_body[:-1] + bytes([index_body[-1] ^ 1]))
    assert "authentication failed" in problems()[sub_index]  # an unreadable index
    s3.delete_object(Bucket=bucket, Key=sub_index)
    found = problems()
    assert list(found) == [raw.layout.dir_prefix(("sub",))], found
    assert sub_index in found[raw.layout.dir_prefix(("sub",))]


def test_client_object_without_sse_found(bucket, mount_factory, keyenv, s3):  # noqa: F811
    """client+sse-s3: an object re-uploaded byte for byte (valid client format, valid attrs)
    but without SSE-S3 does not match the policy: check exits 1 naming it (issue 10 item 10)."""
    m = mount_factory(bucket, "client+sse-s3")
    (m.mountpoint / "good.txt").write_bytes(b"good\n")
    (m.mountpoint / "bad.txt").write_bytes(b"bad\n")
    m.umount()
    proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client+sse-s3",
                           "--json"], env=keyenv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from test_tamper import Raw

    key = Raw(s3, bucket, keyenv).key("bad.txt")
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got.get("ServerSideEncryption") == "AES256"
    s3.put_object(Bucket=bucket, Key=key, Body=got["Body"].read(), Metadata=got["Metadata"])
    proc = subprocess.run([*S3ENCFS, "check", f"s3://{bucket}", "--encryption", "client+sse-s3",
                           "--json"], env=keyenv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    victim = as_json(proc)
    assert [p["key"] for p in victim["problems"]] == [key]
    assert "wrong or missing SSE" in victim["problems"][0]["error"]
