"""Config files, merging with flags, sizes, encryption specs and `config check`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3encfs import config as cfgmod
from s3encfs import config_check as checkmod
from s3encfs.config import ConfigError, MountConfig, load_config, merge, parse_size

FULL = """
source = "s3://backups/host1/"
mountpoint = "/srv/backup"
endpoint_url = "http://127.0.0.1:8333"
region = "eu-west-1"
profile = "backup"
encryption = "client+sse-kms:alias/backup"
bucket_key = true
key = "host1"
cache_dir = "/var/cache/s3encfs/host1"
cache_size = "20G"
max_dirty = "1G"
options = ["allow_other", "default_permissions"]
log_level = "warning"
upload_concurrency = 4
upload_delay = 0.5

[backup]
source = "/home/"
excludes = ["*.tmp", ".cache/"]
rsync_args = ["--hard-links"]
"""


def write(tmp_path: Path, text: str, name: str = "host1") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        (4096, 4096),
        ("10G", 10 * 1024**3),
        ("10g", 10 * 1024**3),
        ("10GiB", 10 * 1024**3),
        ("10GB", 10 * 1000**3),
        ("512M", 512 * 1024**2),
        ("1.5T", int(1.5 * 1024**4)),
        ("64k", 65536),
        (" 2 M ", 2 * 1024**2),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "G", "10X", "-1G", "ten", "1.2.3G", True, -5])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(bad)  # type: ignore[arg-type]


def test_load_full(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, FULL)))
    assert cfg.name == "host1"
    assert cfg.bucket == "backups" and cfg.prefix == "host1/"
    assert cfg.cache_size == 20 * 1024**3
    assert cfg.max_dirty == 1024**3
    assert cfg.options == ["allow_other", "default_permissions"]
    assert cfg.encryption_mode == (True, "sse-kms", "alias/backup")
    assert cfg.bucket_key is True
    assert cfg.upload_concurrency == 4 and cfg.upload_delay == 0.5
    assert cfg.backup.source == "/home/"
    assert cfg.backup.excludes == ["*.tmp", ".cache/"]
    assert cfg.backup.delete is False  # --delete only when configured


def test_load_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, FULL, "demo")
    monkeypatch.setenv("S3ENCFS_CONFIG_DIR", str(tmp_path))
    assert load_config("demo").mountpoint == "/srv/backup"
    with pytest.raises(ConfigError, match="no config named 'missing'"):
        load_config("missing")


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'source = "s3://b1/x"\ncache_sise = "1G"\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "cache_sise" in str(err.value) and str(path) in str(err.value)


def test_unknown_backup_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[backup]\nsorce = "/home"\n')
    with pytest.raises(ConfigError, match=r"\[backup\].*sorce"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('upload_concurrency = "4"', "upload_concurrency must be an integer"),
        ("bucket_key = 1", "bucket_key must be true or false"),
        ('options = "a,b"\nupload_concurrency = 0', "at least 1"),
        ('source = "http://bucket"', "s3://BUCKET"),
        ('source = "s3://Bad_Bucket!"', "invalid bucket name"),
        ('mountpoint = "relative/dir"', "absolute"),
        ('encryption = "aes"', "bad encryption"),
        ('encryption = "sse-c"', "sse-c needs a key name"),
        ('encryption = "sse-s3:foo"', "sse-s3 takes no key"),
        ('encryption = "sse-s3"\nbucket_key = true', "bucket_key only applies"),
        ('encryption = "sse-s3"\nkey = "k"', "client-side key"),
        ('log_level = "loud"', "log_level"),
        ('max_dirty = "1M"', "max_dirty must be at least multipart_size"),
        ("source = [", "Invalid value"),  # TOML syntax error
    ],
)
def test_validation_errors(tmp_path: Path, line: str, match: str) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=match) as err:
        load_config(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("client", (True, None, None)),
        ("none", (False, None, None)),
        ("sse-s3", (False, "sse-s3", None)),
        ("sse-kms", (False, "sse-kms", None)),
        ("sse-kms:alias/Backup", (False, "sse-kms", "alias/Backup")),
        ("dsse-kms:k-1", (False, "dsse-kms", "k-1")),
        ("sse-c:site", (False, "sse-c", "site")),
        ("client+sse-c:site", (True, "sse-c", "site")),
        ("client+sse-s3", (True, "sse-s3", None)),
    ],
)
def test_parse_encryption(spec: str, expected: tuple[bool, str | None, str | None]) -> None:
    assert cfgmod.parse_encryption(spec) == expected


def test_merge_flags_override(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, FULL)))
    merged = merge(
        cfg,
        {
            "endpoint_url": "http://127.0.0.1:9000",
            "region": None,  # not given: keep file value
            "cache_size": "5G",
            "options": ("ro,noatime", "allow_other"),  # click multiple=True gives a tuple
            "debug": ("fs,store",),
            "encryption": "client",
            "bucket_key": False,
            "foreground": True,
        },
    )
    assert merged.endpoint_url == "http://127.0.0.1:9000"
    assert merged.region == "eu-west-1"
    assert merged.cache_size == 5 * 1024**3
    assert merged.options == ["allow_other", "default_permissions", "ro", "noatime"]
    assert merged.debug == ["fs", "store"]
    assert merged.foreground is True
    assert cfg.endpoint_url == "http://127.0.0.1:8333"  # original untouched


def test_merge_without_file_requires_source_and_mountpoint() -> None:
    with pytest.raises(ConfigError, match="no mountpoint"):
        merge(MountConfig(), {"source": "s3://bucket1"})
    cfg = merge(MountConfig(), {"source": "s3://bucket1/a/b", "mountpoint": "/mnt/x"})
    assert cfg.prefix == "a/b/" and cfg.encryption == "client"


def test_merge_rejects_unknown_and_bad_flags() -> None:
    base = MountConfig(source="s3://bucket1", mountpoint="/mnt")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        merge(base, {"colour": "blue"})
    with pytest.raises(ConfigError, match="sse-c needs"):
        merge(base, {"encryption": "sse-c"})


def test_default_cache_dir_per_name(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path, 'source = "s3://b1"\n', "web")))
    assert cfg.effective_cache_dir.endswith("/web")


# ----------------------------------------------------------------------------- checks


def make_cfg(tmp_path: Path, **kw: object) -> MountConfig:
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    base: dict[str, object] = {
        "source": "s3://bucket1/p",
        "mountpoint": str(mnt),
        "cache_dir": str(tmp_path / "cache"),
        "key": "host1",
    }
    base.update(kw)
    return merge(MountConfig(), base)


def test_check_all_ok(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, encryption="client+sse-c:site")
    asked: list[str] = []

    def lookup(c: MountConfig, name: str) -> object:
        asked.append(name)
        return b"k" * 32

    results = checkmod.check_config(cfg, key_lookup=lookup, bucket_check=lambda c: True)
    assert asked == ["host1", "site"]
    assert all(ok for _, ok, _ in results), results
    assert os.path.isdir(tmp_path / "cache")
    # never echo key material
    assert not any("kkkk" in detail for _, _, detail in results)


def test_check_failures(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = make_cfg(tmp_path, cache_dir=str(blocker / "cache"), mountpoint=str(tmp_path / "nope"))

    def boom(c: MountConfig) -> object:
        raise ConnectionError("connection refused")

    results = {
        label: (ok, d)
        for label, ok, d in checkmod.check_config(
            cfg, key_lookup=lambda c, n: None, bucket_check=boom
        )
    }
    assert results[f"cache dir {blocker}/cache"][0] is False
    assert results[f"mountpoint {tmp_path}/nope"][0] is False
    assert results["key 'host1'"] == (False, "not in keyring")
    assert results["bucket bucket1"] == (False, "ConnectionError: connection refused")


def test_check_without_teammate_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name in ("s3encfs.keys.keyring", "s3encfs.store.s3"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(checkmod.importlib, "import_module", fake)
    results = {label: (ok, d) for label, ok, d in checkmod.check_config(make_cfg(tmp_path))}
    assert results["key 'host1'"] == (False, "keyring module not available")
    assert results["bucket bucket1"] == (False, "store module not available")


def test_config_check_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mnt").mkdir()
    write(
        tmp_path,
        f'source = "s3://bucket1/p"\nmountpoint = "{tmp_path}/mnt"\n'
        f'cache_dir = "{tmp_path}/cache"\nkey = "host1"\n',
        "demo",
    )
    monkeypatch.setenv("S3ENCFS_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(checkmod, "_default_key_lookup", lambda c, n: object())
    monkeypatch.setattr(checkmod, "_default_bucket_check", lambda c: "reachable (3 objects)")
    result = CliRunner().invoke(checkmod.config, ["check", "demo"])
    assert result.exit_code == 0, result.output
    assert "s3://bucket1/p" in result.output
    assert "client-side (key 'host1')" in result.output
    assert "reachable (3 objects)" in result.output

    monkeypatch.setattr(checkmod, "_default_bucket_check", lambda c: False)
    result = CliRunner().invoke(checkmod.config, ["check", "demo"])
    assert result.exit_code == 1
    assert "FAIL" in result.output



@pytest.mark.parametrize("what", ["unknown", "invalid"])
def test_config_check_of_a_bad_config_is_one_line_and_78(tmp_path: Path, what: str) -> None:
    """As the mount does: EX_CONFIG and one line, not exit 1 (which systemd would retry)."""
    import subprocess
    import sys

    from s3encfs import exitcodes

    name = "nothere"
    if what == "invalid":
        name = "broken"
        (tmp_path / "broken.toml").write_text('source = "s3://bucket1/p"\nmountpoint = "/mnt"\n'
                                              'encryption = "rot13"\n')
    env = dict(os.environ, S3ENCFS_CONFIG_DIR=str(tmp_path))
    for cmd in ("check", "show") if what == "unknown" else ("check",):
        proc = subprocess.run([sys.executable, "-m", "s3encfs.cli", "config", cmd, name],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == exitcodes.CONFIG, (cmd, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("s3encfs: "), (cmd, proc.stderr)
        assert ("no config named" if what == "unknown" else "rot13") in lines[0], lines


def test_every_mount_flag_has_a_key(tmp_path: Path) -> None:
    """The CLI's flags (as click passes them) all merge; plain_names etc. are real fields."""
    cfg = merge(
        MountConfig(),
        {
            "source": "s3://bucket1",
            "mountpoint": "/mnt",
            "endpoint_url": "http://127.0.0.1:1",
            "region": "r",
            "profile": "p",
            "encryption": "sse-kms:alias/k",
            "bucket_key": True,
            "key": None,
            "keyring": "/etc/s3encfs/keys",
            "cache_dir": "/var/cache/x",
            "cache_size": 1024**3,
            "upload_delay": 1,
            "options": (),
            "foreground": None,
            "debug": (),
            "plain_names": True,
            "allow_unverified_sse": False,
        },
    )
    assert cfg.plain_names is True and cfg.bucket_key is True and cfg.upload_delay == 1.0
    cfg.mountpoint = "/mnt/y"  # the CLI normalises paths in place
    assert cfg.mountpoint == "/mnt/y"
