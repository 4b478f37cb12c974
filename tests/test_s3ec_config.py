"""s3ec mode in the configuration: accepted keys, refused combinations, `config check` wording,
and how key specs turn into keyrings (s3ec_setup)."""

from __future__ import annotations

import os

import pytest

from s3encfs.config import ConfigError, MountConfig, validate
from s3encfs.config_check import describe
from s3encfs.crypto.s3ec_keyrings import AesKeyring
from s3encfs.s3ec_setup import S3ECSetupError, build_keys, parse_context


def cfg(**kw: object) -> MountConfig:
    return MountConfig(source="s3://bucket", mountpoint="/mnt", **kw)  # type: ignore[arg-type]


def test_s3ec_options_only_in_s3ec_mode() -> None:
    validate(cfg(encryption="s3ec", key="k", s3ec_kms_key="alias/x"))
    with pytest.raises(ConfigError, match="s3ec_kms_key"):
        validate(cfg(encryption="client", s3ec_kms_key="alias/x"))
    with pytest.raises(ConfigError, match="s3ec_version"):
        validate(cfg(encryption="s3ec", s3ec_version=1))
    lines = dict(describe(cfg(encryption="s3ec", key="k")))
    assert lines["encryption"] == "S3 Encryption Client V3 (key 'k')"


def test_key_specs_and_material_descriptions() -> None:
    secrets = {"a": os.urandom(32), "b": os.urandom(32)}
    keys = build_keys(cfg(encryption="s3ec", key='a,b{"app":"x,y"}'), secrets.__getitem__)
    a, b = keys.keyrings
    assert isinstance(a, AesKeyring) and a.description == {"s3encfs-key": "a"}
    assert isinstance(b, AesKeyring) and b.description == {"app": "x,y"}
    assert keys.writer is a and keys.version == 3
    with pytest.raises(S3ECSetupError):
        build_keys(cfg(encryption="s3ec"), secrets.__getitem__)
    with pytest.raises(S3ECSetupError):  # two keys reads could not tell apart
        build_keys(cfg(encryption="s3ec", key="a{},b{}"), secrets.__getitem__)
    assert parse_context("app=s3encfs, env=prod") == {"app": "s3encfs", "env": "prod"}
    with pytest.raises(S3ECSetupError):
        parse_context("novalue")
