"""`s3encfs key …` CLI: CliRunner for every command, plus one real subprocess."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3encfs.keys import Keyring, PassphraseSource
from s3encfs.keys.cli import key

PASS = "cli passphrase"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "etc"
    conf.mkdir()
    return {
        "S3ENCFS_PASSPHRASE": PASS,
        "S3ENCFS_KEYRING_DIR": str(tmp_path / "keys"),
        "S3ENCFS_CONFIG_DIR": str(conf),
    }


def run(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(key, list(args), env=env, input=input)
    return result.exit_code, result.output


def secret_of(env: dict[str, str], name: str) -> bytes:
    kr = Keyring(
        env["S3ENCFS_KEYRING_DIR"], passphrase_source=PassphraseSource.fixed(PASS.encode())
    )
    return kr.get(name).secret


def no_secret(text: str, secret: bytes) -> bool:
    forms = [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]
    return not any(f in text for f in forms)


def test_create_and_list_never_show_secrets(env: dict[str, str]) -> None:
    code, out = run(env, "create", "backup")
    assert code == 0, out
    assert "created master key backup" in out
    code, out = run(env, "create", "ssec", "--kind", "sse-c")
    assert code == 0, out
    code, listing = run(env, "list")
    assert code == 0
    assert "backup" in listing and "ssec" in listing and "sse-c" in listing
    code, js = run(env, "list", "--json")
    rows = json.loads(js)
    assert [r["name"] for r in rows] == ["backup", "ssec"]
    assert set(rows[0]) == {"name", "key_id", "kind", "created"}
    for name in ("backup", "ssec"):
        secret = secret_of(env, name)
        assert no_secret(listing, secret) and no_secret(js, secret)


def test_create_duplicate_and_bad_name_fail_cleanly(env: dict[str, str]) -> None:
    assert run(env, "create", "k")[0] == 0
    code, out = run(env, "create", "k")
    assert code == 1 and "already exists" in out and "Traceback" not in out
    code, out = run(env, "create", "../evil")
    assert code == 1 and "invalid key name" in out


def test_wrong_passphrase_message(env: dict[str, str]) -> None:
    assert run(env, "create", "k")[0] == 0
    code, out = run({**env, "S3ENCFS_PASSPHRASE": "wrong"}, "export", "k")
    assert code == 1 and "wrong passphrase" in out


def test_export_file_delete_import(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "create", "k")[0] == 0
    secret = secret_of(env, "k")
    kid = json.loads(run(env, "list", "--json")[1])[0]["key_id"]
    out_file = tmp_path / "k.export"
    code, out = run(env, "export", "k", "--output", str(out_file))
    assert code == 0, out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert no_secret(out_file.read_text(), secret)
    code, out = run(env, "export", "k", "--output", str(out_file))
    assert code == 1 and "--force" in out
    code, out = run(env, "delete", "k", input="n\n")
    assert code == 1 and secret_of(env, "k") == secret  # aborted
    code, out = run(env, "delete", "k", "--yes")
    assert code == 0, out
    assert json.loads(run(env, "list", "--json")[1]) == []
    code, out = run(env, "import", str(out_file))
    assert code == 0 and kid in out
    assert secret_of(env, "k") == secret


def test_export_stdout_separate_passphrase_import_stdin(env: dict[str, str]) -> None:
    assert run(env, "create", "k")[0] == 0
    secret = secret_of(env, "k")
    sep = {**env, "S3ENCFS_EXPORT_PASSPHRASE": "offline"}
    code, blob = run(sep, "export", "k", "--separate-passphrase")
    assert code == 0 and blob.startswith("-----BEGIN S3ENCFS KEY-----")
    assert run(env, "delete", "k", "--yes")[0] == 0
    code, out = run(env, "import", "-", input=blob)
    assert code == 1 and "wrong passphrase" in out
    code, out = run(sep, "import", "-", "--separate-passphrase", input=blob)
    assert code == 0, out
    assert secret_of(env, "k") == secret


def test_delete_refused_when_config_uses_key(env: dict[str, str]) -> None:
    assert run(env, "create", "backup")[0] == 0
    assert run(env, "create", "spare")[0] == 0
    conf = Path(env["S3ENCFS_CONFIG_DIR"]) / "host1.toml"
    conf.write_text('source = "s3://b/p/"\nencryption = "client"\nkey = "backup"\n')
    code, out = run(env, "delete", "backup", "--yes")
    assert code == 1 and "in use" in out and str(conf) in out
    assert len(secret_of(env, "backup")) == 32
    code, out = run(env, "delete", "spare", "--yes")
    assert code == 0, out


def test_delete_refused_for_sse_c_spec_and_implicit_default(env: dict[str, str]) -> None:
    for name in ("ssec", "default", "free"):
        assert run(env, "create", name)[0] == 0
    etc = Path(env["S3ENCFS_CONFIG_DIR"])
    (etc / "a.toml").write_text(
        'source = "s3://backups/a/"\nmountpoint = "/srv/a"\nencryption = "sse-c:ssec"\n'
    )
    (etc / "b.toml").write_text('source = "s3://backups/b/"\nmountpoint = "/srv/b"\n')
    code, out = run(env, "delete", "ssec", "--yes")
    assert code == 1 and "a.toml" in out
    code, out = run(env, "delete", "default", "--yes")  # client mode, no `key =`: uses "default"
    assert code == 1 and "b.toml" in out
    assert run(env, "delete", "free", "--yes")[0] == 0


def test_missing_passphrase_no_tty(env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if k != "S3ENCFS_PASSPHRASE"}
    code, out = run(bare, "create", "k")
    assert code == 1 and "S3ENCFS_PASSPHRASE" in out


def test_real_subprocess(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.write(w, b"pipe passphrase\n")
    os.close(w)
    child = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "S3ENCFS_PASSPHRASE_FD": str(r),
    }
    base = [sys.executable, "-m", "s3encfs.keys.cli", "--keyring-dir", str(tmp_path / "k")]
    proc = subprocess.run(
        [*base, "create", "host1", "--kind", "sse-c"],
        env=child,
        pass_fds=(r,),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(r)
    assert proc.returncode == 0, proc.stderr
    assert "created sse-c key host1" in proc.stdout
    listing = subprocess.run(
        [*base, "list"], env=child, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "host1" in listing
    kr = Keyring(tmp_path / "k", passphrase_source=PassphraseSource.fixed(b"pipe passphrase"))
    assert no_secret(listing + proc.stdout + proc.stderr, kr.get("host1").secret)
