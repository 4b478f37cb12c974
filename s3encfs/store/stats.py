"""Request counters of one store, shared by every thread and the trio thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StoreStats:
    """Counters shared by all worker threads."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    retries: int = 0
    errors: int = 0
    # wall-clock start of the first request that failed (unreachable, timeout, 5xx, after its
    # retries) since the last success: `status` shows it as s3_unreachable_since
    unreachable_since: float | None = None
    client: str = "boto3"  # the data-plane library (ObjectStore's s3_client)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self, op: str, *, up: int = 0, down: int = 0, retries: int = 0, error: bool = False,
        down_error: bool = False, started: float = 0.0,
    ) -> None:
        with self._lock:
            self.requests[op] = self.requests.get(op, 0) + 1
            self.bytes_up += up
            self.bytes_down += down
            self.retries += retries
            self.errors += int(error)
            if not error:
                self.unreachable_since = None
            elif down_error and self.unreachable_since is None:
                self.unreachable_since = started or time.time()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "retries": self.retries,
                "errors": self.errors,
                "client": self.client,
            }



class SectionStats(StoreStats):
    """StoreStats with one more section in `as_dict` (S3EC's verified / refused objects and
    KMS calls), read from `extra` at each call; the data plane (`client`) kept."""

    def __init__(self, name: str, extra: Callable[[], dict[str, int]], client: str) -> None:
        super().__init__(client=client)
        self._name = name
        self._extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), self._name: self._extra()}
