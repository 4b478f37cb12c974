"""Issue 14, last items, against the real SeaweedFS: messages name key ids by the keyring's names
(`name (id …)`), and `check`/`rekey`/`info` work without `--key`/`--endpoint-url` when the
bucket records its key and AWS_ENDPOINT_URL names the endpoint."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mounting import S3ENCFS, keyenv, mount_factory  # noqa: F401 (fixtures)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*S3ENCFS, *args], env=env, capture_output=True, text=True,
                          timeout=180)


def key_ids(env: dict[str, str]) -> dict[str, str]:
    """{name: id} from `s3encfs key list`."""
    out = cli(env, "key", "list").stdout.splitlines()
    return {f[0]: f[1] for f in (line.split() for line in out) if len(f) >= 3}


def create(env: dict[str, str], name: str, kind: str = "master") -> None:
    subprocess.run([*S3ENCFS, "key", "create", name, "--kind", kind], env=env, check=True,
                   capture_output=True)


def written_with(mount_factory, bucket: str, encryption: str, key: str | None):  # type: ignore[no-untyped-def]  # noqa: F811
    m = mount_factory(bucket, encryption, extra=["--key", key] if key else [])
    (m.mountpoint / "sub").mkdir()
    (m.mountpoint / "sub" / "f.txt").write_bytes(b"named keys\n")
    m.umount()


def test_wrong_master_key_names_both_keys(bucket, keyenv, mount_factory):  # type: ignore[no-untyped-def]  # noqa: F811
    create(keyenv, "alpha")
    create(keyenv, "beta")
    written_with(mount_factory, bucket, "client", "alpha")
    ids = key_ids(keyenv)
    proc = cli(keyenv, "check", f"s3://{bucket}", "--key", "beta")
    assert proc.returncode == 78, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "wrong master key" in line, line
    assert f"alpha (id {ids['alpha']})" in line, line  # the key the bucket was encrypted with
    assert f"beta (id {ids['beta']})" in line, line  # the key this command had


def test_ssec_key_ids_are_named(bucket, keyenv, mount_factory):  # type: ignore[no-untyped-def]  # noqa: F811
    create(keyenv, "s1", "sse-c")
    create(keyenv, "s2", "sse-c")
    written_with(mount_factory, bucket, "sse-c:s1", None)
    ids = key_ids(keyenv)
    proc = cli(keyenv, "check", f"s3://{bucket}", "--encryption", "sse-c:s1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"keys: s1 (id {ids['s1']}); writes with s1 (id {ids['s1']})" in proc.stdout, \
        proc.stdout
    proc = cli(keyenv, "check", f"s3://{bucket}", "--encryption", "sse-c:s2,s1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"keys: s2 (id {ids['s2']}), s1 (id {ids['s1']})" in proc.stdout, proc.stdout


def test_check_rekey_info_use_the_recorded_key_and_aws_endpoint_url(  # type: ignore[no-untyped-def]
        bucket, keyenv, mount_factory, tmp_path: Path):  # noqa: F811
    """No --key (the keyring's `default` is not the bucket's key), no --endpoint-url (the
    environment's AWS_ENDPOINT_URL, as the mount takes it)."""
    create(keyenv, "alpha")
    written_with(mount_factory, bucket, "client", "alpha")
    ids = key_ids(keyenv)
    assert keyenv.get("AWS_ENDPOINT_URL")
    used = f"using master key alpha (id {ids['alpha']})"

    proc = cli(keyenv, "check", f"s3://{bucket}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert used in proc.stderr, proc.stderr
    assert "0 unreadable" in proc.stdout, proc.stdout

    proc = cli(keyenv, "rekey", f"s3://{bucket}", "--state-dir", str(tmp_path / "rk"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert used in proc.stderr, proc.stderr
    assert f"master key alpha (id {ids['alpha']})" in proc.stdout, proc.stdout

    proc = cli(keyenv, "info", f"s3://{bucket}")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    other = dict(keyenv, S3ENCFS_KEYRING_DIR=str(tmp_path / "empty-ring"))
    create(other, "default")
    proc = cli(other, "check", f"s3://{bucket}")
    assert proc.returncode == 78, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "wrong master key" in line, line
    assert f"master key id {ids['alpha']}, which is not in the keyring" in line, line


def test_annotate_names_only_known_ids_once() -> None:
    from s3encfs.keynames import annotate

    names = {"0123456789abcdef": "backup"}
    msg = "master key '0123456789abcdef' not loaded (loaded: fedcba9876543210)"
    once = annotate(msg, names)
    assert once == "master key backup (id 0123456789abcdef) not loaded (loaded: fedcba9876543210)"
    assert annotate(once, names) == once  # already named: unchanged
    assert annotate("key id 0123456789abcdef", names) == "key backup (id 0123456789abcdef)"
    etag = "etag 0123456789abcdef0123456789abcdef"  # a longer hex string is not a key id
    assert annotate(etag, names) == etag
