"""Keyring library: sealing, permissions, passphrase sources, export/import, backends."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import sys
from pathlib import Path

import keyring as oskeyring
import pytest
from keyring.backend import KeyringBackend

from s3encfs.keys import (
    CorruptKeyFile,
    InsecurePermissions,
    Key,
    KeyExists,
    KeyInfo,
    KeyInUse,
    KeyNotFound,
    Keyring,
    KeyringError,
    PassphraseError,
    PassphraseSource,
    WrongPassphrase,
    default_directory,
)

FAST_KDF = {"alg": "argon2id", "t": 1, "p": 1, "m": 64}  # test-only KDF cost


def make(tmp_path: Path, passphrase: bytes = b"correct horse", **kw: object) -> Keyring:
    return Keyring(
        tmp_path / "keys",
        passphrase_source=PassphraseSource.fixed(passphrase),
        kdf=FAST_KDF,
        environ={},
        **kw,  # type: ignore[arg-type]
    )


def secret_forms(secret: bytes) -> list[str]:
    return [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]


def test_create_list_get_round_trip(tmp_path: Path) -> None:
    kr = make(tmp_path)
    a = kr.create("backup")
    b = kr.create("ssec-1", kind="sse-c")
    assert [i.name for i in kr.list()] == ["backup", "ssec-1"]
    assert {i.kind for i in kr.list()} == {"master", "sse-c"}
    assert len(a.key_id) == 16 and a.key_id != b.key_id
    key = make(tmp_path).get("backup")  # a fresh instance: nothing cached
    assert key.info == a and len(key.secret) == 32
    assert make(tmp_path).get(b.key_id).info.name == "ssec-1"
    assert key.secret != kr.get("ssec-1").secret
    assert a.created.startswith("20") and "T" in a.created


def test_key_id_not_derived_from_secret(tmp_path: Path) -> None:
    kr = make(tmp_path)
    info = kr.create("k")
    secret = kr.get("k").secret
    assert info.key_id not in secret.hex()


def test_wrong_passphrase_is_clear(tmp_path: Path) -> None:
    make(tmp_path).create("backup")
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as ei:
        make(tmp_path, b"nope").get("backup")
    assert "backup" in str(ei.value)


def test_create_with_other_passphrase_refused(tmp_path: Path) -> None:
    make(tmp_path).create("a")
    with pytest.raises(WrongPassphrase):
        make(tmp_path, b"different").create("b")
    assert [i.name for i in make(tmp_path).list()] == ["a"]


def test_tampered_record_fails(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    path = tmp_path / "keys" / "k.key"
    rec = json.loads(path.read_text())
    rec["kind"] = "sse-c"  # AAD covers name|id|kind
    path.write_text(json.dumps(rec))
    with pytest.raises(WrongPassphrase):
        make(tmp_path).get("k")


def test_permissions_and_refusal(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    kr.create("other")
    path = tmp_path / "keys" / "k.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["k.key", "other.key"]
    os.chmod(path, 0o644)
    with pytest.raises(InsecurePermissions, match=re.escape(f"chmod 600 {path}")):
        make(tmp_path).get("k")
    assert len(make(tmp_path).get("other").secret) == 32  # a bad neighbour file is not read
    os.chmod(path, 0o600)
    assert len(make(tmp_path).get("k").secret) == 32


def test_symlinked_key_file_refused(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    real = tmp_path / "keys" / "k.key"
    moved = tmp_path / "elsewhere.key"
    real.rename(moved)
    real.symlink_to(moved)
    with pytest.raises(KeyringError):
        make(tmp_path).get("k")


def test_export_delete_import_same_secret_and_id(tmp_path: Path) -> None:
    kr = make(tmp_path)
    info = kr.create("backup")
    secret = kr.get("backup").secret
    blob = kr.export("backup")
    assert blob.startswith("-----BEGIN S3ENCFS KEY-----") and "Id: " + info.key_id in blob
    for form in secret_forms(secret):
        assert form not in blob
    kr.delete("backup")
    with pytest.raises(KeyNotFound):
        kr.get("backup")
    assert make(tmp_path).import_(blob) == info
    assert make(tmp_path).get(info.key_id).secret == secret
    with pytest.raises(KeyExists):
        make(tmp_path).import_(blob)


def test_export_with_separate_passphrase(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    secret = kr.get("k").secret
    blob = kr.export("k", export_passphrase=PassphraseSource.fixed(b"offline"))
    other = make(tmp_path / "other", b"other-store")
    with pytest.raises(WrongPassphrase):
        other.import_(blob)  # keyring passphrase does not open it
    other.import_(blob, import_passphrase=PassphraseSource.fixed(b"offline"))
    assert make(tmp_path / "other", b"other-store").get("k").secret == secret


def test_damaged_export_detected_by_checksum(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    blob = kr.export("k")
    lines = blob.splitlines()
    i = lines.index("") + 1
    lines[i] = ("B" if lines[i][0] != "B" else "C") + lines[i][1:]
    with pytest.raises(CorruptKeyFile, match=r"checksum|base64"):
        make(tmp_path / "o").import_("\n".join(lines))
    with pytest.raises(CorruptKeyFile):
        make(tmp_path / "o").import_("hello")
    # surrounding text (mail quoting, notes) is tolerated
    make(tmp_path / "o").import_("my backup key:\n" + blob + "\nkeep safe\n")


def test_delete_refused_while_in_use(tmp_path: Path) -> None:
    kr = make(tmp_path)
    info = kr.create("k")
    seen = []

    def check(i: object) -> bool:
        seen.append(i)
        return True

    with pytest.raises(KeyInUse, match="in use"):
        kr.delete("k", in_use_check=check)
    assert seen == [info] and kr.list() == [info]
    kr.delete("k", in_use_check=lambda i: False)
    assert kr.list() == []


def test_not_found_names_what_and_where(tmp_path: Path) -> None:
    kr = make(tmp_path)
    with pytest.raises(KeyNotFound) as ei:
        kr.get("missing")
    assert isinstance(ei.value, KeyError)
    assert "missing" in str(ei.value) and str(tmp_path / "keys") in str(ei.value)


def test_invalid_names_and_kinds(tmp_path: Path) -> None:
    kr = make(tmp_path)
    for bad in ["../x", "", ".hidden", "a/b", "x" * 65]:
        with pytest.raises(KeyringError, match="invalid key name"):
            kr.create(bad)
    with pytest.raises(KeyringError, match="invalid key kind"):
        kr.create("ok", kind="other")


def test_secret_not_in_repr_str_or_errors(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    key = kr.get("k")
    texts = [repr(key), str(key), repr(kr), repr(kr.passphrase_source)]
    with pytest.raises(WrongPassphrase) as ei:
        make(tmp_path, b"bad").get("k")
    texts.append(str(ei.value))
    for t in texts:
        for form in secret_forms(key.secret):
            assert form not in t
    assert "correct horse" not in repr(kr.passphrase_source)
    assert "k" in repr(key) and key.info.key_id in str(key)
    assert isinstance(key, Key)


# -- passphrase sources ---------------------------------------------------------------------


ALLOW_EMPTY = {"S3ENCFS_ALLOW_EMPTY_PASSPHRASE": "1"}


def test_passphrase_from_env_including_explicit_empty() -> None:
    assert PassphraseSource({"S3ENCFS_PASSPHRASE": "s3cret"}).get() == b"s3cret"
    assert PassphraseSource({"S3ENCFS_PASSPHRASE": "", **ALLOW_EMPTY}).get() == b""


def test_empty_passphrase_needs_the_explicit_flag() -> None:
    for env in ({"S3ENCFS_PASSPHRASE": ""},
                {"S3ENCFS_PASSPHRASE": "", "S3ENCFS_ALLOW_EMPTY_PASSPHRASE": "yes"},
                {"S3ENCFS_EXPORT_PASSPHRASE": ""}):
        prefix = "S3ENCFS_EXPORT_" if "S3ENCFS_EXPORT_PASSPHRASE" in env else "S3ENCFS_"
        with pytest.raises(PassphraseError, match="S3ENCFS_ALLOW_EMPTY_PASSPHRASE=1"):
            PassphraseSource(env, prefix=prefix).get()
    assert PassphraseSource({"S3ENCFS_EXPORT_PASSPHRASE": "", **ALLOW_EMPTY},
                            prefix="S3ENCFS_EXPORT_").get() == b""


def test_new_records_use_argon2id_and_scrypt_records_are_upgraded(tmp_path: Path) -> None:
    from s3encfs.keys.filestore import DEFAULT_KDF, FileStore, seal

    kr = Keyring(tmp_path / "keys", passphrase_source=PassphraseSource.fixed(b"pw"),
                 environ={})  # the real default parameters
    kr.create("new")
    kdf = json.loads((tmp_path / "keys" / "new.key").read_text())["kdf"]
    assert {k: kdf[k] for k in ("alg", "t", "p", "m")} == DEFAULT_KDF
    assert DEFAULT_KDF["alg"] == "argon2id" and DEFAULT_KDF["m"] >= 2**16
    # a record as the old code wrote it: scrypt n=2^15
    old = Key(KeyInfo("old", "0123456789abcdef", "master", "2026-01-01T00:00:00+00:00"),
              os.urandom(32))
    record = seal(old, b"pw", kdf={"alg": "scrypt", "n": 2**15, "r": 8, "p": 1})
    path = tmp_path / "keys" / "old.key"
    path.write_text(json.dumps(record))
    path.chmod(0o600)
    assert kr.get("old").secret == old.secret  # opens ...
    upgraded = json.loads(path.read_text())
    assert upgraded["kdf"]["alg"] == "argon2id" and upgraded["kdf"]["m"] == DEFAULT_KDF["m"]
    assert upgraded["nonce"] != record["nonce"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kr.get("old").secret == old.secret  # ... and still opens after the upgrade
    # a cheaper store never downgrades a record
    fast = FileStore(tmp_path / "keys", kdf=FAST_KDF)
    assert fast.load("old", b"pw").secret == old.secret
    assert json.loads(path.read_text())["kdf"]["m"] == DEFAULT_KDF["m"]


def test_unreasonable_kdf_parameters_refused(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k")
    path = tmp_path / "keys" / "k.key"
    record = json.loads(path.read_text())
    for bad in ({"alg": "argon2id", "t": 1, "p": 1, "m": 2**30},
                {"alg": "argon2id", "t": 1000, "p": 1, "m": 64},
                {"alg": "pbkdf2", "iterations": 1}):
        path.write_text(json.dumps({**record, "kdf": {**bad, "salt": record["kdf"]["salt"]}}))
        with pytest.raises(CorruptKeyFile):
            kr.get("k")


def test_empty_passphrase_store_works(tmp_path: Path) -> None:
    src = PassphraseSource({"S3ENCFS_PASSPHRASE": "", **ALLOW_EMPTY})
    kr = Keyring(tmp_path, passphrase_source=src, kdf=FAST_KDF, environ={})
    kr.create("demo")
    assert len(kr.get("demo").secret) == 32


def test_passphrase_from_fd() -> None:
    r, w = os.pipe()
    os.write(w, b"from-pipe\n")
    os.close(w)
    src = PassphraseSource({"S3ENCFS_PASSPHRASE_FD": str(r)})
    assert src.get() == b"from-pipe"
    assert src.get() == b"from-pipe"  # cached: the fd is consumed and closed
    with pytest.raises(OSError):
        os.fstat(r)


def test_empty_fd_refused() -> None:
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(PassphraseError, match="empty"):
        PassphraseSource({"S3ENCFS_PASSPHRASE_FD": str(r)}).get()


def test_passphrase_from_command_without_passphrase_env(tmp_path: Path) -> None:
    script = tmp_path / "pc.py"
    script.write_text(
        "import os\n"
        "leak = [k for k in os.environ if 'PASSPHRASE' in k and k != 'S3ENCFS_PASSPHRASE_FD']\n"
        "print('cmd-pass' if not leak else 'LEAK:' + ','.join(leak))\n"
    )
    env = {
        "S3ENCFS_PASSCOMMAND": f"{sys.executable} {script}",
        "S3ENCFS_EXPORT_PASSPHRASE": "export-secret",
        "PATH": os.environ.get("PATH", ""),
    }
    assert PassphraseSource(env).get() == b"cmd-pass"


def test_command_failure_is_clear() -> None:
    with pytest.raises(PassphraseError, match="exited with status 3"):
        PassphraseSource({"S3ENCFS_PASSCOMMAND": f"{sys.executable} -c 'exit(3)'"}).get()
    with pytest.raises(PassphraseError, match="cannot run"):
        PassphraseSource({"S3ENCFS_PASSCOMMAND": "/nonexistent/cmd"}).get()


def test_order_env_then_fd_then_command() -> None:
    env = {"S3ENCFS_PASSPHRASE": "env", "S3ENCFS_PASSCOMMAND": "false"}
    assert PassphraseSource(env).get() == b"env"


def test_no_source_and_no_tty_is_clear() -> None:
    with pytest.raises(PassphraseError, match="S3ENCFS_PASSPHRASE"):
        PassphraseSource({}, isatty=lambda: False).get()


def test_prompt_refuses_empty_and_checks_confirm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(["", "a", "b", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(PassphraseError, match="empty passphrase refused"):
        PassphraseSource({}, isatty=lambda: True).get()
    with pytest.raises(PassphraseError, match="do not match"):
        PassphraseSource({}, isatty=lambda: True).get(confirm=True)
    assert PassphraseSource({}, isatty=lambda: True).get(confirm=True) == b"same"


# -- backends -----------------------------------------------------------------------------


def test_systemd_credential_raw_and_hex_checked_first(tmp_path: Path) -> None:
    kr = make(tmp_path)
    info = kr.create("backup")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "backup").write_bytes(b"\x01" * 32)
    (creds / "solo").write_text("ab" * 32 + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    kr2 = Keyring(tmp_path / "keys", passphrase_source=PassphraseSource.fixed(b"x"), environ=env)
    key = kr2.get(info.key_id)  # by id: resolved to the name, credential wins
    assert key.secret == b"\x01" * 32 and key.info == info
    solo = kr2.get("solo")
    assert solo.secret == bytes.fromhex("ab" * 32) and solo.info.kind == "master"
    assert kr2.get("solo").info.key_id == solo.info.key_id  # stable


def test_systemd_credential_export_blob(tmp_path: Path) -> None:
    kr = make(tmp_path)
    kr.create("k", kind="sse-c")
    kr.create("j")
    creds = tmp_path / "creds"
    creds.mkdir()
    empty = PassphraseSource.fixed(b"")
    (creds / "k").write_text(kr.export("k", export_passphrase=empty))
    (creds / "j").write_text(kr.export("j"))  # sealed under the keyring passphrase
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    other = Keyring(tmp_path / "none", passphrase_source=PassphraseSource.fixed(b"x"), environ=env)
    key = other.get("k")  # empty-passphrase blob: no keyring passphrase needed
    assert key.secret == kr.get("k").secret and key.info.kind == "sse-c"
    with pytest.raises(WrongPassphrase):
        other.get("j")
    same = Keyring(
        tmp_path / "none",
        passphrase_source=PassphraseSource.fixed(b"correct horse"),
        environ=env,
    )
    assert same.get("j").secret == kr.get("j").secret
    with pytest.raises(KeyNotFound, match=str(creds)):
        same.get("other")


def test_os_backend_without_os_keyring_is_clear(tmp_path: Path) -> None:
    from keyring.backends import fail

    old = oskeyring.get_keyring()
    oskeyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(KeyringError, match="no OS keyring"):
            make(tmp_path, backend="os").create("k")
    finally:
        oskeyring.set_keyring(old)


class MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.data[(service, username)]


def test_os_backend_round_trip(tmp_path: Path) -> None:
    old = oskeyring.get_keyring()
    mem = MemoryKeyring()
    oskeyring.set_keyring(mem)
    try:
        kr = make(tmp_path, backend="os")
        info = kr.create("k", kind="sse-c")
        assert kr.list() == [info]
        secret = kr.get("k").secret
        assert base64.b64decode(mem.data[("s3encfs", "k")]) == secret
        index = (tmp_path / "keys" / "os-keyring-index.json").read_text()
        assert stat.S_IMODE((tmp_path / "keys" / "os-keyring-index.json").stat().st_mode) == 0o600
        for form in secret_forms(secret):
            assert form not in index
        kr.delete("k")
        assert kr.list() == [] and mem.data == {}
    finally:
        oskeyring.set_keyring(old)


def test_default_directory(tmp_path: Path) -> None:
    assert default_directory({"S3ENCFS_KEYRING_DIR": str(tmp_path)}) == tmp_path
    if os.geteuid() == 0:
        assert default_directory({"INVOCATION_ID": "x"}) == Path("/etc/s3encfs/keys")


def test_memory_hard_kdf_runs_in_a_child_and_leaves_no_peak(tmp_path: Path) -> None:
    """Issue 15 (memory): the 64 MiB of Argon2id at the default setting are allocated in a
    short-lived child process, so the process that opens the key (the mount) keeps no peak RSS
    from it; the key is the same as derived in process, and a wrong passphrase still fails."""
    import subprocess

    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    from s3encfs.keys import kdfchild
    from s3encfs.keys.filestore import DEFAULT_KDF

    params = {k: DEFAULT_KDF[k] for k in ("t", "p", "m")}
    salt, pw = os.urandom(16), b"correct horse"
    assert kdfchild.memory_bytes("argon2id", params) >= kdfchild.CHILD_MIN_BYTES
    here = Argon2id(salt=salt, length=32, iterations=params["t"], lanes=params["p"],
                    memory_cost=params["m"]).derive(pw)

    def never() -> bytes:
        raise AssertionError("derived in process")

    assert kdfchild.derive("argon2id", params, salt, pw, never) == here
    scrypt = {"n": 2**15, "r": 8, "p": 1}
    assert kdfchild.memory_bytes("scrypt", scrypt) >= kdfchild.CHILD_MIN_BYTES
    # a fresh interpreter opens a key sealed with the default parameters: VmHWM barely moves
    code = r"""
import sys
from pathlib import Path
from s3encfs.keys import Keyring, PassphraseSource
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
before = hwm()
assert len(Keyring(Path(sys.argv[1]), passphrase_source=PassphraseSource.fixed(b"pw"),
                   environ={}).get("k").secret) == 32
print(hwm() - before)
"""
    Keyring(tmp_path / "keys", passphrase_source=PassphraseSource.fixed(b"pw"),
            environ={}).create("k")  # the default parameters
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "keys")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) < 16, f"opening the key raised the peak RSS by {out.stdout} MiB"
    with pytest.raises(WrongPassphrase):
        Keyring(tmp_path / "keys", passphrase_source=PassphraseSource.fixed(b"bad"),
                environ={}).get("k")
