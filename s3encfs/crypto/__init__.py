"""Client-side encryption: object format v1 (envelope), filename encryption, `ClientCodec`."""

from .client_codec import ClientCodec, StagingSlots, loaded_key_id
from .envelope import FORMAT_VERSION, MissingMasterKey
from .names import MAX_PLAIN as MAX_ENCRYPTED_NAME_BYTES

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENCRYPTED_NAME_BYTES",
    "ClientCodec",
    "MissingMasterKey",
    "StagingSlots",
    "loaded_key_id",
]
