"""``s3encfs key …``: manage the local keyring. Never prints key material."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

from .filestore import KeyInfo, KeyringError, atomic_write
from .keyring import BACKENDS, Keyring
from .passphrase import PassphraseError, PassphraseSource

CONFIG_DIR = Path("/etc/s3encfs")

# Other parts of s3encfs (e.g. a running-mounts check) may append hooks here.
IN_USE_CHECKS: list[Callable[[KeyInfo], bool]] = []


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _mentions(values: set[str], info: KeyInfo) -> bool:
    """A value equal to the name/id or ending in `:NAME` (`sse-c:NAME`, `client+sse-c:NAME`)."""
    return any(
        v in (info.name, info.key_id) or v.endswith((":" + info.name, ":" + info.key_id))
        for v in values
    )


def _needs_key(path: Path, info: KeyInfo) -> bool:
    """Ask the config module which keys the mount needs (covers the implicit "default" key)."""
    try:
        cfgmod: Any = importlib.import_module("s3encfs.config")
        needed = cfgmod.needed_keys(cfgmod.load_config(str(path)))
    except Exception:  # an unloadable config: the text check above decides
        return False
    return info.name in needed or info.key_id in needed


def configs_using(info: KeyInfo, config_dir: Path) -> list[Path]:
    """Mount config files (``config_dir/*.toml``) that use the key (by name or id)."""
    found = []
    for path in sorted(config_dir.glob("*.toml")):
        try:
            text = path.read_text()
        except OSError:
            continue
        try:
            hit = _mentions(set(_strings(tomllib.loads(text))), info)
        except tomllib.TOMLDecodeError:  # be conservative: a quoted mention counts
            names = f"{re.escape(info.name)}|{info.key_id}"
            hit = bool(re.search(rf"""["'](.*:)?({names})["']""", text))
        if hit or _needs_key(path, info):
            found.append(path)
    return found


def _fail(e: Exception) -> NoReturn:
    raise click.ClickException(str(e)) from None


def _keyring(ctx: click.Context) -> Keyring:
    obj = ctx.find_object(dict) or {}
    try:
        return Keyring(obj.get("keyring_dir"), backend=obj.get("backend", "file"))
    except KeyringError as e:
        _fail(e)


def _export_source(separate: bool) -> PassphraseSource | None:
    if not separate:
        return None
    return PassphraseSource(prefix="S3ENCFS_EXPORT_", prompt="Export passphrase: ")


@click.group("key")
@click.option(
    "--keyring-dir",
    "--keyring",  # the spelling of mount, check, rekey
    "keyring_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keyring directory (default: $S3ENCFS_KEYRING_DIR, /etc/s3encfs/keys for root, "
    "else the user config dir).",
)
@click.option("--backend", type=click.Choice(BACKENDS), default="file", show_default=True)
@click.pass_context
def key(ctx: click.Context, keyring_dir: Path | None, backend: str) -> None:
    """Manage named keys (client-side master keys and SSE-C keys).

    The passphrase comes from $S3ENCFS_PASSPHRASE, $S3ENCFS_PASSPHRASE_FD,
    $S3ENCFS_PASSCOMMAND, or a prompt.
    """
    obj = ctx.ensure_object(dict)
    obj["keyring_dir"] = keyring_dir
    obj["backend"] = backend


@key.command("create")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["master", "sse-c", "s3ec-aes", "s3ec-rsa", "s3ec-rsa-pub"]),
    default="master",
    show_default=True,
)
@click.option("--from-raw", type=click.File("rb"),
              help="Import 32 raw key bytes from FILE (- for stdin) instead of a random key.")
@click.option("--from-pem", type=click.File("rb"),
              help="s3ec-rsa / s3ec-rsa-pub: import an RSA key (PEM; a private key's public "
                   "half for s3ec-rsa-pub) instead of generating one.")
@click.pass_context
def create_cmd(ctx: click.Context, name: str, kind: str, from_raw: Any, from_pem: Any) -> None:
    """Create a new random 32-byte key NAME (s3ec-rsa: a 3072-bit RSA key)."""
    kr = _keyring(ctx)
    try:
        secret = from_raw.read() if from_raw else None
        if from_pem is not None:
            from s3encfs.keys import rsakeys

            if not kind.startswith("s3ec-rsa"):
                raise KeyringError("--from-pem is for --kind s3ec-rsa or s3ec-rsa-pub")
            secret = rsakeys.from_pem(kind, from_pem.read())
        info = kr.create(name, kind, secret)
    except (KeyringError, PassphraseError) as e:
        _fail(e)
    click.echo(f"created {info.kind} key {info.name} (id {info.key_id}) in {kr.directory}")
    click.echo(f"back it up now: s3encfs key export {info.name} --output FILE", err=True)


@key.command("public")
@click.argument("name")
@click.pass_context
def public_cmd(ctx: click.Context, name: str) -> None:
    """Print the public key (PEM) of s3ec-rsa key NAME, for a write-only host's
    `key create NAME --kind s3ec-rsa-pub --from-pem FILE`."""
    from s3encfs.keys import rsakeys

    try:
        key = _keyring(ctx).get(name)
        if not key.info.kind.startswith("s3ec-rsa"):
            raise KeyringError(f"key {name!r} is a {key.info.kind} key, not an RSA one")
        click.echo(rsakeys.public_pem(key.info.kind, key.secret).decode(), nl=False)
    except (KeyringError, PassphraseError) as e:
        _fail(e)


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List keys: name, id, kind, created (never secrets)."""
    try:
        infos = _keyring(ctx).list()
    except KeyringError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps([vars(i) for i in infos], indent=1))
        return
    if not infos:
        click.echo("no keys", err=True)
        return
    width = max(4, *(len(i.name) for i in infos))
    click.echo(f"{'NAME':<{width}}  {'ID':<16}  {'KIND':<6}  CREATED")
    for i in infos:
        click.echo(f"{i.name:<{width}}  {i.key_id:<16}  {i.kind:<6}  {i.created}")


@key.command("export")
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE (mode 0600) instead of stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option(
    "--separate-passphrase",
    is_flag=True,
    help="Seal with an export passphrase ($S3ENCFS_EXPORT_PASSPHRASE[_FD], "
    "$S3ENCFS_EXPORT_PASSCOMMAND, or prompt) instead of the keyring passphrase.",
)
@click.pass_context
def export_cmd(
    ctx: click.Context,
    name: str,
    output: Path | None,
    force: bool,
    separate_passphrase: bool,
) -> None:
    """Print a sealed, checksummed text copy of key NAME for offline backup."""
    if output is not None and output.exists() and not force:
        _fail(KeyringError(f"{output} exists (use --force to overwrite)"))
    try:
        blob = _keyring(ctx).export(name, export_passphrase=_export_source(separate_passphrase))
    except (KeyringError, PassphraseError) as e:
        _fail(e)
    if output is None:
        click.echo(blob, nl=False)
    else:
        atomic_write(output, blob.encode(), 0o600)
        click.echo(f"exported {name} to {output}", err=True)


@key.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--separate-passphrase",
    is_flag=True,
    help="The export was sealed with an export passphrase ($S3ENCFS_EXPORT_*).",
)
@click.pass_context
def import_cmd(ctx: click.Context, file: Path, separate_passphrase: bool) -> None:
    """Import a key exported with `key export` (FILE or - for stdin)."""
    try:
        blob = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as e:
        _fail(KeyringError(f"cannot read {file}: {e.strerror}"))
    try:
        info = _keyring(ctx).import_(blob, import_passphrase=_export_source(separate_passphrase))
    except (KeyringError, PassphraseError) as e:
        _fail(e)
    click.echo(f"imported {info.kind} key {info.name} (id {info.key_id})")


@key.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete_cmd(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete key NAME; refused while a mount config (/etc/s3encfs/*.toml) uses it."""
    config_dir = Path(os.environ.get("S3ENCFS_CONFIG_DIR", str(CONFIG_DIR)))
    users: list[Path] = []

    def in_use(info: KeyInfo) -> bool:
        users.extend(configs_using(info, config_dir))
        return bool(users) or any(check(info) for check in IN_USE_CHECKS)

    kr = _keyring(ctx)
    if not yes:
        click.confirm(
            f"Delete key {name} from {kr.directory}? Data sealed by it becomes "
            "unreadable unless you have an export",
            abort=True,
        )
    try:
        kr.delete(name, in_use_check=in_use)
    except KeyringError as e:
        if users:
            _fail(KeyringError(f"{e}: used by {', '.join(map(str, users))}"))
        _fail(e)
    click.echo(f"deleted key {name}")


if __name__ == "__main__":
    key()
