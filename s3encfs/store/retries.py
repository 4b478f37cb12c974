"""botocore's standard retries without the client-wide retry quota.

Standard mode spends a shared token bucket (500 tokens, 5 per throttling retry and 14 per other
retry) and refills it only on success.  During an outage the mount's background uploads spend it
in a minute; from then on *every* request of the mount fails at its first error, unretried, in
milliseconds — for as long as nothing succeeds.  The mount has its own backoff for uploads
(exponential, to 60 s), so each request keeps its full per-request schedule (`max_attempts` with
botocore's exponential backoff and jitter) and the quota is switched off.
"""

from __future__ import annotations

from typing import Any

from botocore.retries import standard


class _NoQuota:
    def acquire_retry_quota(self, context: Any) -> bool:
        return True

    def release_retry_quota(self, context: Any, http_response: Any, **kwargs: Any) -> None:
        return None


def without_retry_quota(client: Any) -> None:
    """Replace the client's standard-mode retry handler by one with no retry quota."""
    name = client.meta.service_model.service_id.hyphenize()
    max_attempts = client.meta.config.retries.get("total_max_attempts")
    client.meta.events.unregister(f"needs-retry.{name}", unique_id=f"retry-config-{name}")
    handler = standard.register_retry_handler(client, max_attempts=max_attempts)
    handler._retry_quota = _NoQuota()  # type: ignore[attr-defined]  # no public switch
