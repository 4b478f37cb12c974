"""`s3encfs check --encryption s3ec`: verify Amazon S3 Encryption Client objects.

Per object (plain ``ObjectStore``, raw metadata — not the mount's `S3ECStore`, which would hide
the very problems looked for here):

* the S3EC metadata set parses (V2 or V3; V1/CBC has no integrity and is reported as legacy),
  merged with ``X.instruction`` when the object's metadata lacks the key part;
* a keyring key matches the object's wrapping algorithm and material description / KMS context
  (picked by the metadata, never by trial) and unwraps the data key;
* V3: the key commitment matches the data key (before anything is decrypted);
* our sealed POSIX attributes (if any) open under the data key, and
  ``x-amz-unencrypted-content-length`` (if any) agrees with the object size;
* with ``--data``: the whole body is streamed through AES-GCM (ranged GETs conditional on the
  HEAD's ETag, plaintext discarded) and the tag must check — the only integrity an S3EC object
  has, since its bytes are one GCM stream and not independently sealed segments.

Instruction files: ``X.instruction`` must have its object ``X`` (an orphan is reported), and an
object whose metadata needs one must have it. Directory markers (``…/``) are plain by design.
"""

from __future__ import annotations

from typing import Any

from s3encfs.codec import IntegrityError
from s3encfs.crypto import s3ec_attrs, s3ec_stream
from s3encfs.crypto import s3ec_format as fmt
from s3encfs.crypto.s3ec_keyrings import MissingS3ECKey, S3ECKeys

_FETCH = 8 * 1024 * 1024


class S3ECChecker:
    def __init__(self, store: Any, keys: S3ECKeys, *, data: bool) -> None:
        self.store = store  # a plain ObjectStore
        self.keys = keys
        self.data = data

    def one(self, key: str) -> tuple[str, str | None, int]:
        """(kind, problem or None, bytes read) — kinds as in `check.Checker.one`."""
        from s3encfs.store.errors import NotFound

        if key.endswith("/"):
            return "marker", None, 0
        if key.endswith(fmt.INSTRUCTION_SUFFIX):
            try:
                self.store.head(key[:-len(fmt.INSTRUCTION_SUFFIX)])
            except NotFound:
                return "object", "instruction file without its object", 0
            return "instruction", None, 0
        try:
            info = self.store.head(key)
        except NotFound:
            return "vanished", None, 0
        try:
            return self._verify(key, info)
        except MissingS3ECKey as exc:
            return "object", f"wrapping key not in the keyring: {exc}", 0
        except fmt.LegacyRefused as exc:
            return "object", f"legacy S3EC object: {exc}", 0
        except IntegrityError as exc:
            return "object", f"authentication failed: {exc}", 0
        except NotFound:
            return "vanished", None, 0
        except Exception as exc:  # one bad object must not stop the walk
            return "object", f"{type(exc).__name__}: {exc}", 0

    def _verify(self, key: str, info: Any) -> tuple[str, str | None, int]:
        from s3encfs.store.errors import NotFound

        low = fmt.lower_keys(info.metadata or {})
        s3 = {k: v for k, v in low.items() if k in fmt.ALL_NAMES}
        if fmt.needs_instruction_file(s3) or not fmt.is_s3ec(s3):
            try:
                body, _i = self.store.get(key + fmt.INSTRUCTION_SUFFIX)
            except NotFound:
                what = ("V3 object without its instruction file" if s3 else
                        "not an S3 Encryption Client object (no S3EC metadata, no instruction "
                        "file)")
                raise fmt.NotS3EC(what) from None
            s3 = fmt.merge_instruction(s3, body)
        env = fmt.parse_envelope(s3)
        ck, dk = self.keys.open_object(s3)  # key pick + unwrap + V3 commitment
        s3ec_attrs.open_sealed(dk, env, low)
        size = fmt.plain_size(info.size)
        if env.plain_length is not None and env.plain_length != size:
            raise IntegrityError(f"x-amz-unencrypted-content-length {env.plain_length} "
                                 f"disagrees with the object size ({size} + 16)")
        if not self.data:
            return "object", None, 0
        return "data", None, self._stream(key, info.etag, info.size, ck)

    def _stream(self, key: str, etag: str, size: int, ck: fmt.ContentKey) -> int:
        dec = s3ec_stream.Decryptor(ck)
        nread = 0
        for lo in range(0, size, _FETCH):
            hi = min(size, lo + _FETCH)
            chunk = self.store.get_range(key, lo, hi, if_match=etag or None)
            if len(chunk) != hi - lo:
                raise IntegrityError(f"short read at {lo}: {len(chunk)} of {hi - lo} bytes")
            nread += len(chunk)
            dec.update_view(chunk)  # unauthenticated plaintext: discarded
        dec.finish()  # IntegrityError on a bad tag or a truncated body
        return nread


def build(cfg: Any, store: Any, *, data: bool) -> S3ECChecker:
    """The checker for `cfg`'s s3ec keyrings (the same ones a mount would use)."""
    from s3encfs.exitcodes import MountError
    from s3encfs.mount_codec import load_keys
    from s3encfs.s3ec_setup import S3ECSetupError, build_keys

    try:
        keys = build_keys(cfg, lambda name: load_keys(cfg, [name], role="s3ec")[0][2])
    except S3ECSetupError as exc:
        raise MountError(str(exc)) from None
    return S3ECChecker(store, keys, data=data)


def s3ec_options(f: Any) -> Any:
    """The s3ec keyring options a mount takes, for tools that open S3EC objects."""
    import click

    for opt in reversed([
        click.option("--s3ec-kms-key", help="s3ec mode: KMS key id/ARN (kms+context "
                     "wrapping); NEW,OLD,... also reads objects under the older KMS keys "
                     "(rekey: rewraps to NEW)."),
        click.option("--s3ec-kms-context", help="s3ec mode: KMS encryption context, k=v,k2=v2."),
        click.option("--s3ec-rsa-key", help="s3ec mode: RSA PEM file(s) (private, to read)."),
    ]):
        f = opt(f)
    return f
