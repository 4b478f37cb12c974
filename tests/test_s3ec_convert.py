"""`s3encfs rekey --from client|s3ec`: convert a prefix between our client format and S3EC objects,
either way, against a real SeaweedFS — a tree written through one mount reads back byte-exact
(contents, modes, times, symlinks, empty directories) through a mount of the other format,
also after a run that was stopped half-way or killed with SIGKILL and then run again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401
from test_s3ec_format import ref_decrypt
from test_s3ec_mount import AES, aesenv, data_keys, kms, rsync  # noqa: F401

LONG = "l" * 200  # a long name: a hashed name + side object in client name scheme 2


def make_tree(src: Path) -> None:
    rnd = random.Random(7)
    (src / "d" / "sub").mkdir(parents=True)
    (src / "emptydir").mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / "empty").write_bytes(b"")
    (src / "d" / "sub" / "deep.bin").write_bytes(rnd.randbytes(300_000))
    (src / "big.bin").write_bytes(rnd.randbytes(3 * 1024 * 1024 + 5))
    (src / "d" / "größe ü.txt").write_text("unicode name\n")
    (src / "d" / LONG).write_bytes(b"long name")
    for i in range(20):
        (src / "d" / f"f{i:02d}").write_bytes(rnd.randbytes(i * 997))
    (src / "link").symlink_to("d/sub/deep.bin")
    os.chmod(src / "a.txt", 0o640)
    os.chmod(src / "d", 0o750)
    os.chmod(src / "emptydir", 0o700)
    os.utime(src / "d" / "sub" / "deep.bin", (1_600_000_000, 1_600_000_000))
    for d in (src / "d" / "sub", src / "d", src / "emptydir", src):
        os.utime(d, (1_500_000_000, 1_500_000_000))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*S3ENCFS, *args], env=env, capture_output=True, text=True,
                          timeout=600)


def itemize(src: Path, mnt: Path) -> str:
    """What rsync would change (checksums, not times, decide contents): '' when identical."""
    return subprocess.run(["rsync", "-a", "-c", "-n", "--itemize-changes", "--delete",
                           f"{src}/", f"{mnt}/"], check=True, capture_output=True,
                          text=True).stdout.strip()


def killed_midway(env: dict[str, str], cmd: list[str], s3: Any, bucket: str) -> None:
    """Run `cmd` and SIGKILL it as soon as the bucket shows it converting (a key appeared or
    went), so the kill lands in the middle of the run."""
    before = set(data_keys(s3, bucket))
    p = subprocess.Popen([*S3ENCFS, *cmd], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while set(data_keys(s3, bucket)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL  # killed, not finished


def test_client_to_s3ec_and_back_with_interruptions(bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
                                                    aesenv: dict[str, str],  # noqa: F811
                                                    tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    m = mount_factory(bucket, "client", env=aesenv)
    rsync(src, m.mountpoint)
    m.umount()
    state = ["--state-dir", str(tmp_path / "state")]
    to_s3ec = ["rekey", f"s3://{bucket}", "--from", "client", "--encryption", "s3ec", *AES,
               *state]

    # stopped right after a target object is written, before its source is deleted
    proc = run(aesenv, *to_s3ec, "--stop-after", "5", "--jobs", "1")
    assert proc.returncode == 130, proc.stdout + proc.stderr
    half = data_keys(s3, bucket)
    assert ".s3encfs/keycheck" in half and "a.txt" in half, half
    m1 = mount_factory(bucket, "s3ec", name="half", extra=AES, env=aesenv)
    converted = [p for p in m1.mountpoint.rglob("*")
                 if (src / p.relative_to(m1.mountpoint)).is_file()]
    assert len(converted) == 5, converted  # 5 targets written; their sources are still there
    m1.umount()
    killed_midway(aesenv, to_s3ec, s3, bucket)  # and a real kill -9, wherever it lands
    proc = run(aesenv, *to_s3ec)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming the conversion" in proc.stderr
    assert "failed 0" in proc.stdout, proc.stdout

    keys = data_keys(s3, bucket)
    assert "d/sub/deep.bin" in keys and f"d/{LONG}" in keys and "emptydir/" in keys, keys
    for key in keys:  # nothing is left in the client format: plain names, S3EC objects
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert "s3encfs-kid" not in meta, key
        assert key.endswith("/") or "x-amz-c" in meta, (key, meta)
    assert ".s3encfs/keycheck" not in keys
    raw = s3.get_object(Bucket=bucket, Key="d/sub/deep.bin")
    assert ref_decrypt(raw["Metadata"], raw["Body"].read()) == \
        (src / "d" / "sub" / "deep.bin").read_bytes()  # the tests' independent decoder

    m2 = mount_factory(bucket, "s3ec", name="s3ec", extra=AES, env=aesenv)
    assert itemize(src, m2.mountpoint) == ""
    assert os.readlink(m2.mountpoint / "link") == "d/sub/deep.bin"
    m2.umount()
    proc = run(aesenv, "check", f"s3://{bucket}", "--encryption", "s3ec", *AES, "--data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(aesenv, *to_s3ec)  # done: a re-run finds nothing in the client format
    assert proc.returncode == 78 and "no keycheck" in proc.stderr, proc.stderr

    # and back: S3EC -> client format (names encrypted again), interrupted the same ways
    back = ["rekey", f"s3://{bucket}", "--from", "s3ec", "--from-key", "s3k{}",
            "--encryption", "client", "--key", "default", *state]
    proc = run(aesenv, *back, "--stop-after", "7", "--jobs", "1")
    assert proc.returncode == 130, proc.stdout + proc.stderr
    killed_midway(aesenv, back, s3, bucket)
    proc = run(aesenv, *back)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = data_keys(s3, bucket)
    assert not [k for k in keys if "deep.bin" in k or "emptydir" in k], keys  # names encrypted
    for key in keys:
        if not key.endswith("/") and not key.startswith(".s3encfs/"):
            meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
            assert "x-amz-c" not in meta and "x-amz-cek-alg" not in meta, key
    m3 = mount_factory(bucket, "client", name="client2", env=aesenv)
    assert itemize(src, m3.mountpoint) == ""
    m3.umount()
    proc = run(aesenv, "check", f"s3://{bucket}", "--key", "default", "--data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(aesenv, *back)  # a second run has nothing left to convert
    assert proc.returncode == 0 and "converted 0 objects" in proc.stdout, proc.stdout


def test_official_client_objects_to_client_format_and_back(
        s3server: Any, bucket: str, s3: Any, mount_factory: Any,  # noqa: F811
        aesenv: dict[str, str], kms: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    """What AWS's S3 Encryption Client wrote (KMS, V3 and V2) becomes our client format, and
    back to S3EC (KMS), which the official client reads byte-exact."""
    from test_s3ec_interop import official

    endpoint, key_id = kms
    env = dict(aesenv, AWS_ENDPOINT_URL_KMS=endpoint)
    rnd = random.Random(3)
    plain = {"v3.bin": rnd.randbytes(100_000), "dir/v2.txt": b"v2 object\n", "dir/e": b"",
             "dir/sub/x": rnd.randbytes(17)}
    for key, data in plain.items():
        official(s3server, kms, 2 if "v2" in key else 3).put_object(Bucket=bucket, Key=key,
                                                                     Body=data)
    kmsopt = ["--s3ec-kms-key", key_id, "--state-dir", str(tmp_path / "state")]
    proc = run(env, "rekey", f"s3://{bucket}", "--from", "s3ec", "--encryption", "client",
               "--key", "default", *kmsopt)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converted 4 objects" in proc.stdout, proc.stdout
    m = mount_factory(bucket, "client", env=env)
    for key, data in plain.items():
        assert (m.mountpoint / key).read_bytes() == data, key
        st = (m.mountpoint / key).stat()  # as an s3ec mount shows an SDK's object
        assert st.st_mode & 0o777 == 0o644 and abs(st.st_mtime - time.time()) < 600, key
    m.umount()

    proc = run(env, "rekey", f"s3://{bucket}", "--from", "client", "--encryption", "s3ec",
               *kmsopt)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for key, data in plain.items():
        got = official(s3server, kms, 3).get_object(Bucket=bucket, Key=key)["Body"].read()
        assert got == data, key
    idx = [k for k in data_keys(s3, bucket) if k.startswith(".s3encfs/")]
    assert idx and all(k.startswith(".s3encfs/idx/") for k in idx), idx
    assert json.loads(run(env, "info", f"s3://{bucket}", "--all-objects", "--json").stdout
                      )["formats"]["formats"].get("client-v2") is None


def test_plain_names_client_prefix_is_converted_in_place(bucket: str, s3: Any,
                                                         mount_factory: Any,  # noqa: F811
                                                         aesenv: dict[str, str],  # noqa: F811
                                                         tmp_path: Path) -> None:
    """Client mode with --plain-names has the same keys as S3EC: every object is rewritten in
    place (conditional on its ETag), and a re-run skips what is converted already."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "emptydir").mkdir()
    for i in range(6):
        (src / "d" / f"f{i}").write_bytes(os.urandom(1000 * i))
    (src / "a.txt").write_text("plain names\n")
    os.chmod(src / "d", 0o751)
    for d in (src / "d", src / "emptydir", src):
        os.utime(d, (1_500_000_000, 1_500_000_000))
    m = mount_factory(bucket, "client", extra=["--plain-names"], env=aesenv)
    rsync(src, m.mountpoint)
    m.umount()
    before = {k for k in data_keys(s3, bucket) if not k.startswith(".s3encfs/")}
    assert "d/f3" in before
    conf = tmp_path / "pn.toml"
    state = ["--state-dir", str(tmp_path / "state")]
    for target, key, frm, from_key in (("s3ec", "s3k{}", "client", "default"),
                                       ("client", "default", "s3ec", "s3k{}")):
        conf.write_text(f'source = "s3://{bucket}"\nencryption = "{target}"\nkey = "{key}"\n'
                        "plain_names = true\n")
        cmd = ["rekey", "--config", str(conf), "--from", frm, "--from-key", from_key, *state]
        proc = run(aesenv, *cmd, "--stop-after", "3", "--jobs", "1")
        assert proc.returncode == 130, proc.stdout + proc.stderr
        proc = run(aesenv, *cmd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "already converted 3" in proc.stdout, proc.stdout
        assert {k for k in data_keys(s3, bucket) if not k.startswith(".s3encfs/")} == before
        for k in before - {"d/", "emptydir/"}:
            meta = s3.head_object(Bucket=bucket, Key=k)["Metadata"]
            assert ("x-amz-c" in meta) == (target == "s3ec"), (k, meta)
            assert ("s3encfs-kid" in meta) == (target == "client"), (k, meta)
        extra = AES if target == "s3ec" else ["--plain-names"]
        m2 = mount_factory(bucket, target, name=f"to-{target}", extra=extra, env=aesenv)
        assert itemize(src, m2.mountpoint) == ""
        m2.umount()


def test_a_long_names_side_object_left_by_a_kill_is_swept(bucket: str, s3: Any,
                                                          mount_factory: Any,  # noqa: F811
                                                          aesenv: dict[str, str],  # noqa: F811
                                                          tmp_path: Path) -> None:
    """A kill between the DELETE of a converted long name's source object and that of its side
    object (the name goes first) leaves the side object alone; the source listing hides side
    objects, so the re-run must sweep it — CI once found one left in the client format."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / LONG).write_bytes(b"long name")
    (src / "d" / "kept").write_bytes(b"kept")
    m = mount_factory(bucket, "client", env=aesenv)
    rsync(src, m.mountpoint)
    m.umount()
    sides = [k for k in data_keys(s3, bucket) if k.endswith(".name")]
    assert len(sides) == 1, sides
    s3.delete_object(Bucket=bucket, Key=sides[0][: -len(".name")])  # as converted, then killed
    before = (src / "d").stat()
    (src / "d" / LONG).unlink()
    os.utime(src / "d", ns=(before.st_atime_ns, before.st_mtime_ns))  # as the bucket has it

    proc = run(aesenv, "rekey", f"s3://{bucket}", "--from", "client", "--encryption", "s3ec",
               *AES, "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0 and "failed 0" in proc.stdout, proc.stdout + proc.stderr
    keys = [k for k in data_keys(s3, bucket) if not k.startswith(".s3encfs/")]
    assert sorted(keys) == ["d/", "d/kept"], keys  # nothing left in the client format
    m2 = mount_factory(bucket, "s3ec", name="s3ec", extra=AES, env=aesenv)
    assert itemize(src, m2.mountpoint) == ""
    m2.umount()
