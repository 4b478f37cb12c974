"""Mount-time proof that the server enforces the SSE policy: the canary object.

Separate from `store/sse.py` (the policy) because it drives a whole `ObjectStore`; keeping it
here means the policy module never imports the store, and the store imports the policy freely.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .errors import SseMismatch, SseNotEnforced, StoreError, map_error
from .sse import SseCPolicy

if TYPE_CHECKING:
    from .s3 import ObjectStore


def _refuse(store: ObjectStore, key: str, why: str) -> SseNotEnforced:
    return SseNotEnforced(
        f"s3://{store.bucket}/{key}: server does not enforce {store.sse.describe()}: {why}; "
        "refusing to mount (data would be stored without the promised encryption)",
        code="SseNotEnforced",
        key=key,
        bucket=store.bucket,
    )


def canary(store: ObjectStore, prefix: str) -> None:
    """Write a small object under the policy and prove the server enforced it; then delete it."""
    key = f"{prefix}.s3encfs-canary-{secrets.token_hex(8)}"
    body = secrets.token_bytes(64)
    policy = store.sse
    try:
        try:
            store.put(key, body, {})
        except SseMismatch as exc:
            raise _refuse(store, key, f"write response lacked SSE headers ({exc})") from exc
        data, _ = store.get(key)
        if data != body:
            raise StoreError(
                f"s3://{store.bucket}/{key}: canary read back different bytes",
                code="CanaryCorrupt",
                key=key,
                bucket=store.bucket,
            )
        try:
            raw: dict[str, Any] = dict(
                store.client.head_object(Bucket=store.bucket, Key=key, **policy.read_args(None))
            )
        except ClientError as exc:
            raise map_error(exc, bucket=store.bucket, key=key, op="HeadObject") from exc
        try:
            policy.verify(raw, "head", key)
        except SseMismatch as exc:
            raise _refuse(store, key, f"HEAD shows no SSE ({exc})") from exc
        if isinstance(policy, SseCPolicy):
            _prove_key_required(store, key)
    finally:
        with contextlib.suppress(StoreError):
            store.delete(key)


def _prove_key_required(store: ObjectStore, key: str) -> None:
    calls: tuple[tuple[str, Any], ...] = (
        ("HEAD", store.client.head_object),
        ("GET", store.client.get_object),
    )
    for op, call in calls:
        try:
            resp = call(Bucket=store.bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (400, 403):
                continue
            raise map_error(exc, bucket=store.bucket, key=key, op=op) from exc
        if "Body" in resp:
            resp["Body"].close()
        raise _refuse(store, key, f"{op} without the customer key succeeded")
