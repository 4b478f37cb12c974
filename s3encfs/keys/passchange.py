"""`s3encfs key change-passphrase`: re-seal every key file of the store under a new passphrase.

All keys are opened with the old passphrase first (a wrong one changes nothing), then each file
is replaced atomically. The new passphrase comes from ``S3ENCFS_NEW_PASSPHRASE`` (or
``_FD`` / ``PASSCOMMAND``, same conventions as the store's) or a prompt asked twice.
"""

from __future__ import annotations

import click

from s3encfs.keys.filestore import FileStore
from s3encfs.keys.keyring import Keyring
from s3encfs.keys.passphrase import PassphraseSource


def change_passphrase(ring: Keyring, new: PassphraseSource) -> list[str]:
    """Names of the keys re-sealed. Raises WrongPassphrase (nothing changed) on a bad old one."""
    files: FileStore = ring._files
    names = sorted(files.names())
    if not names:
        return []
    old = ring.passphrase_source.get()
    keys = [files.load(name, old) for name in names]  # all or nothing: verify before writing
    secret = new.get(confirm=True)
    if secret == old:
        raise click.ClickException("the new passphrase is the same as the old one")
    for key in keys:
        files.save(key, secret, overwrite=True)
    return names


@click.command("change-passphrase")
@click.pass_context
def change_passphrase_cmd(ctx: click.Context) -> None:
    """Re-seal every key in the store under a new passphrase (the keys stay the same)."""
    obj = ctx.find_object(dict) or {}
    ring = Keyring(obj.get("keyring_dir"), backend=obj.get("backend", "file"))
    if ring.backend != "file":
        raise click.ClickException("change-passphrase applies to the file key store only")
    new = PassphraseSource(prefix="S3ENCFS_NEW_", prompt="New passphrase: ")
    names = change_passphrase(ring, new)
    if not names:
        click.echo(f"no keys in {ring.directory}")
        return
    click.echo(f"re-sealed {len(names)} key(s) in {ring.directory} under the new passphrase: "
               f"{', '.join(names)}; update every S3ENCFS_PASSPHRASE* source and service")
