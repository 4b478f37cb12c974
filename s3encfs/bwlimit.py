"""`--bwlimit RATE`: an upload bandwidth limit (as rclone's), shared by every upload thread.

A token bucket in bytes: each PUT or UploadPart takes its body's size before it is sent, and
waits while the bucket is in debt. Requests are whole bodies (up to a multipart part), so the
rate holds on average over a few requests, not within one. Thread-safe (S3 calls run in worker
threads); waiting happens outside the lock.
"""

from __future__ import annotations

import threading
import time


class BandwidthLimit:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("bandwidth limit must be positive")
        self.rate = float(rate)  # bytes per second
        self.burst = float(burst if burst is not None else rate)  # a second's worth
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> float:
        """Account for `nbytes` about to be sent; sleeps as long as needed; returns the wait."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait
