"""S3 access layer: `ObjectStore` (blocking, thread-safe) and the SSE policy it applies."""

from .errors import (
    AccessDenied,
    BucketMissing,
    EndpointUnreachable,
    NotFound,
    PreconditionFailed,
    SseMismatch,
    SseNotEnforced,
    StoreError,
)
from .probe import canary
from .s3 import ListPage, ObjectInfo, ObjectStore, StoreStats
from .sse import SsePolicy, parse_policy

__all__ = [
    "AccessDenied",
    "BucketMissing",
    "EndpointUnreachable",
    "ListPage",
    "NotFound",
    "ObjectInfo",
    "ObjectStore",
    "PreconditionFailed",
    "SseMismatch",
    "SseNotEnforced",
    "SsePolicy",
    "StoreError",
    "StoreStats",
    "canary",
    "parse_policy",
]
