"""Client-side encryption: object format v1 (envelope), filename encryption, `ClientCodec`."""

from .client_codec import ClientCodec, StagingSlots, check_master_key
from .envelope import FORMAT_VERSION, MissingMasterKey
from .names import MAX_PLAIN as MAX_ENCRYPTED_NAME_BYTES

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENCRYPTED_NAME_BYTES",
    "ClientCodec",
    "MissingMasterKey",
    "StagingSlots",
    "check_master_key",
]
