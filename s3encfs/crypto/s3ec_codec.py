"""`S3ECCodec`: the filesystem-side half of ``--encryption s3ec``.

S3EC objects are one AES-GCM stream each, so they cannot be cut into independently sealed
segments: the encryption happens in `s3encfs.store.s3ec.S3ECStore`, and above it the filesystem
sees plaintext objects. This codec is therefore the identity for bytes and names (S3EC encrypts
contents only; names stay plain), and its one job is to turn the store's "cannot decrypt this
object" marker into an IntegrityError, which the filesystem answers with EIO.
"""

from __future__ import annotations

from s3encfs.codec import IdentityCodec, IntegrityError

from . import s3ec_format as fmt

ERROR_KEY = "s3encfs-s3ec-error"  # set by S3ECStore on objects it refused


class S3ECCodec(IdentityCodec):
    name = "s3ec"
    encrypts_names = False
    max_file_size = fmt.MAX_PLAINTEXT  # EFBIG past it (fs/operations.py)

    def open_attrs(self, metadata: dict[str, str], path: str = "") -> dict[str, str]:
        if ERROR_KEY in metadata:
            raise IntegrityError(metadata[ERROR_KEY])
        return {k: v for k, v in metadata.items() if k not in fmt.ALL_NAMES}
