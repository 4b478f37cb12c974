"""One configuration value at a time: sizes, ``s3://`` sources, encryption specs.

Pure parsers shared by the config file, the command line and the tools; each raises
`ConfigError` worded for the person who wrote the value.
"""

from __future__ import annotations

import re

SSE_MODES = ("sse-s3", "sse-kms", "dsse-kms", "sse-c")


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the file."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"10G"`` → bytes.  K/M/G/T/P and KiB… are powers of 1024; kB/MB/GB/TB are powers of 1000."""
    if isinstance(text, bool):
        raise ConfigError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"size must not be negative: {text}")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"not a size: {text!r} (examples: 512M, 10G, 1.5T, 4096)")
    number, unit, binary, byte = m.groups()
    exp = " kmgtp".index(unit.lower()) if unit else 0
    base = 1000 if (byte and not binary and unit) else 1024
    return int(float(number) * base**exp)


def format_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_source(source: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix/"); a prefix ends with '/' or is ''."""
    if not source.startswith("s3://"):
        raise ConfigError(f"source must look like s3://BUCKET[/PREFIX], got {source!r}")
    bucket, _, prefix = source[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket):
        raise ConfigError(f"invalid bucket name {bucket!r} in {source!r}")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def is_s3ec(spec: str) -> bool:
    """``--encryption s3ec``: objects in the Amazon S3 Encryption Client format."""
    return spec.strip().lower() == "s3ec"


def parse_encryption(spec: str) -> tuple[bool, str | None, str | None]:
    """``client``, ``none``, ``sse-kms:alias/x``, ``client+sse-c:k`` → (client, sse, sse_key)."""
    text = spec.strip().lower() if ":" not in spec else spec.strip()
    client = False
    rest = text
    if text.lower().startswith("client"):
        client = True
        rest = text[len("client") :]
        if rest and not rest.startswith("+"):
            raise ConfigError(f"bad encryption {spec!r}")
        rest = rest[1:]
        if not rest:
            return True, None, None
    elif text.lower() in ("none", "s3ec"):  # s3ec: is_s3ec(); no client format, no SSE
        return False, None, None
    mode, _, key = rest.partition(":")
    mode = mode.lower()
    if mode not in SSE_MODES:
        raise ConfigError(
            f"bad encryption {spec!r}: use client, none, s3ec, sse-s3, sse-kms[:KEY], "
            "dsse-kms[:KEY], sse-c:KEYNAME or client+<sse mode>"
        )
    if mode == "sse-s3" and key:
        raise ConfigError(f"sse-s3 takes no key: {spec!r}")
    if mode == "sse-c" and not key:
        raise ConfigError(f"sse-c needs a key name from the keyring: sse-c:KEYNAME ({spec!r})")
    return client, mode, key or None
