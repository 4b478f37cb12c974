"""Upload identity: every object we write says which upload wrote it, so that a 412 (or a replay
after a crash) can tell our own write that landed from another writer's change.

Every upload carries a random token (`UPLOAD_ATTR`) among the object's POSIX attributes: in plain
modes a visible ``x-amz-meta-s3encfs-upload`` value (random, so it tells nothing about the data),
in client mode inside the sealed attributes (authenticated: nobody without the key can make an
object look like ours).  A pending journal row remembers the token its data is uploaded with and
the tokens of this name's earlier uploads that may have landed.  When a conditional write fails
(or a replay starts from a stale ETag), a HEAD of the key decides, in `judge`:

* LANDED  -- the object is exactly this upload (our token, our size): it succeeded, keep its ETag;
* OURS    -- an earlier upload of ours, or one of ours that failed half way (our token with a
             wrong size, or an empty object with no identity at all: SeaweedFS stores a PUT whose
             connection dropped after the headers as 0 bytes): overwrite it, If-Match its ETag;
* ABSENT  -- nothing there: write it with If-None-Match;
* FOREIGN -- another writer changed the object: only then is a conflict copy made.

docs/INTERNALS.md "Upload identity and conflicts" states the rules and names their tests.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable, Collection

from s3encfs.codec import Codec
from s3encfs.fs.nodes import ObjectRef
from s3encfs.fs.uploader import Uploader, UploadJob
from s3encfs.store import errors as store_errors
from s3encfs.store.s3 import ObjectInfo, ObjectStore

log = logging.getLogger("s3encfs.upload")

UPLOAD_ATTR = "s3encfs-upload"  # attrs entry (sealed in client mode) naming the upload
MAX_TOKENS = 16  # earlier uploads remembered per pending row (older ones are long superseded)
MAX_ROUNDS = 4  # overwrite attempts of our own leftovers before giving up for this time


class Verdict(enum.Enum):
    LANDED = "landed"
    OURS = "ours"
    ABSENT = "absent"
    FOREIGN = "foreign"


def new_token() -> str:
    return secrets.token_urlsafe(12)


def stamped(attrs_meta: dict[str, str], token: str | None) -> dict[str, str]:
    """Plain attribute entries plus the upload token, ready for `codec.seal_attrs`."""
    if token is None:
        return attrs_meta
    return {**attrs_meta, UPLOAD_ATTR: token}


def token_of(codec: Codec, meta: dict[str, str], path: str = "") -> str | None:
    """The upload token an object's metadata carries (None: none, or it does not authenticate).
    The one place that reads it back out of the (sealed) attributes."""
    try:
        attrs = codec.open_attrs(meta, path)  # sealed attrs are bound to the object's key
    except Exception:  # tampered, foreign or from another key: not ours
        return None
    value = attrs.get(UPLOAD_ATTR)
    return value if isinstance(value, str) and value else None


def judge(codec: Codec, info: ObjectInfo | None, *, token: str, tokens: Collection[str],
          obj_size: int, path: str = "") -> Verdict:
    """What the object found at our key is, for an upload of `obj_size` bytes carrying `token`
    (`tokens`: this name's earlier uploads that may have landed)."""
    if info is None:
        return Verdict.ABSENT
    found = token_of(codec, info.metadata or {}, path)
    if found == token and info.size == obj_size:
        return Verdict.LANDED
    if found is not None and (found == token or found in tokens):
        return Verdict.OURS
    if found is None and info.size == 0:
        return Verdict.OURS  # a PUT of ours cut after its headers (SeaweedFS keeps 0 bytes)
    return Verdict.FOREIGN


def examine(store: ObjectStore, codec: Codec, key: str, *, token: str, tokens: Collection[str],
            obj_size: int, path: str = "") -> tuple[Verdict, ObjectInfo | None]:
    """HEAD `key` and judge it (blocking); `path`: `key` relative to the mount's prefix."""
    try:
        info: ObjectInfo | None = store.head(key)
    except store_errors.NotFound:
        info = None
    return judge(codec, info, token=token, tokens=tokens, obj_size=obj_size, path=path), info


def upload_owned(uploader: Uploader, store: ObjectStore, codec: Codec, job: UploadJob,
                 token: str, tokens: Collection[str],
                 on_round: Callable[[Verdict], None] | None = None,
                 rel_key: Callable[[str], str] = str) -> ObjectRef:
    """`uploader.upload(job)`, resolving a failed precondition by the object's identity: our own
    landed upload is success, our own leftovers are overwritten, and only another writer's
    change raises PreconditionFailed (the caller then makes a conflict copy).  Blocking."""
    obj_size = uploader.geometry.object_size(job.size)
    for _ in range(MAX_ROUNDS):
        try:
            return uploader.upload(job)
        except (store_errors.PreconditionFailed, store_errors.NotFound) as exc:
            if job.expect_any:
                raise
            if isinstance(exc, store_errors.NotFound) and not job.expect_etag:
                raise  # not a precondition (e.g. a multipart upload aborted under us)
            failure: store_errors.StoreError = exc
        job.stream = None  # the uploader completed or aborted it: never reused
        verdict, info = examine(store, codec, job.key, token=token, tokens=tokens,
                                obj_size=obj_size, path=rel_key(job.key))
        if on_round is not None:
            on_round(verdict)
        if verdict is Verdict.FOREIGN:
            raise failure
        if verdict is Verdict.LANDED:
            assert info is not None
            log.info("%s: our upload had landed already (a retry or a replay got 412)", job.key)
            return ObjectRef(job.key, info.etag, info.size, job.size, dict(job.meta))
        log.info("%s: overwriting our own earlier or failed upload (%s)", job.key, verdict.value)
        job.expect_etag = info.etag if info is not None else None
    raise store_errors.StoreError(f"{job.key}: the object kept changing under our own uploads")
