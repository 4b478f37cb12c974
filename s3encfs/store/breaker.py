"""Fail fast while S3 is down: the store's circuit breaker (docs/INTERNALS.md, "Faults: full
disk, outages, bounded waits").

Without it every foreground request during an outage (a read of uncached data, a lookup of a
name the mount does not know, an unlink) sat through botocore's whole retry schedule, seconds
to minutes each, before the caller got EIO.  The breaker *opens* when S3 has not answered for
`OPEN_AFTER` seconds while attempts failed at the connection level (refused, reset, timeouts;
seen per attempt through botocore's needs-retry event), or at once when a request failed after
all its retries with such an error; it *closes* at the next answer below 500 (a 404 or 412 is an
answer: S3 is there).  5xx answers neither open nor close it: they keep botocore's full
per-request retry schedule (throttling must not turn into fast EIO).

While open:
- **foreground** requests fail at once with `EndpointUnreachable` (EIO to the caller), without
  touching the network;
- **background** requests — the upload loop and every task it starts (uploads, index writes,
  their HEADs), anything run inside `background()` — go out as usual: the upload loop's own
  backoff (2 s … 60 s) paces them and they never give up (the data stays in the journal), and
  the first one that is answered closes the breaker;
- a **probe** thread sends a HeadBucket (short retry budget) every `PROBE_EVERY` seconds, so the
  breaker closes within seconds of S3 coming back even when no upload is pending.

Foreground/background is a context variable: trio copies it into worker threads
(`to_thread.run_sync`) and into tasks started from a task that set it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import EndpointUnreachable

log = logging.getLogger("s3encfs.store")

OPEN_AFTER = 2.0  # seconds of attempts failing with no answer before foreground fails fast
PROBE_EVERY = 2.0  # seconds between probes while S3 does not answer

_background: contextvars.ContextVar[bool] = contextvars.ContextVar("s3encfs_background",
                                                                    default=False)


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Requests made inside (and in tasks/threads started from inside) are background work:
    never refused by an open breaker."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def mark_background() -> None:
    """Make the rest of the calling trio task (and what it starts) background work; for a
    task's first line (a trio task runs in its own copy of the context)."""
    _background.set(True)


def in_background() -> bool:
    return _background.get()


def is_down(exc: BaseException) -> bool:
    """S3 did not answer (connection, timeout, cut response) or answered 5xx after the retries.
    Credentials, parameter and 4xx errors are answers or local problems, not an outage."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (status or 0) >= 500
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


class Breaker:
    """Open/closed state of one store, fed by every request's outcome (thread-safe)."""

    def __init__(self, probe: Callable[[], Any] | None = None, *,
                 open_after: float = OPEN_AFTER, probe_every: float = PROBE_EVERY) -> None:
        # a cheap request (HeadBucket) that raises unless S3 answers; outside the store's
        # accounting, so `s3_unreachable_since` still tells whether real requests get through
        self._probe = probe
        self._open_after = open_after
        self._probe_every = probe_every
        self._lock = threading.Lock()
        self.down_since: float | None = None  # first outage failure since S3 last answered
        self.open_since: float | None = None  # wall clock the breaker opened
        self.refused = 0  # foreground requests failed fast (for status)
        self.closings = 0  # times it closed again (the fs restarts backed-off uploads)
        self.ever_answered = False  # S3 answered once: an outage is news worth a warning
        self._prober: threading.Thread | None = None

    # -- outcomes ---------------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """A request failed after botocore's retries.  A 5xx opens nothing (S3's front end
        answers; throttling and server errors keep each request's full retry schedule) and
        closes nothing; a 4xx is an answer; missing credentials are neither."""
        if isinstance(exc, ClientError):
            if not is_down(exc):
                self.answered()
        elif is_down(exc):
            self._down(confirmed=True, why=exc)

    def on_attempt(self, response: Any = None, caught_exception: BaseException | None = None,
                   **_: Any) -> None:
        """botocore's needs-retry event, once per attempt: S3 not answering for `open_after`
        seconds opens the breaker without waiting for a whole retry schedule to end, and ends
        the retries of foreground requests already in flight.  Only connection-level failures
        count here (a 503 SlowDown attempt is throttling)."""
        if caught_exception is not None:
            if isinstance(caught_exception, (BotoConnectionError, HTTPClientError)):
                self._down(confirmed=False, why=caught_exception)
                if self.open_since is not None and not _background.get():
                    # a foreground request in flight stops retrying too: its caller gets
                    # EIO now, not at the end of the schedule (raised out of botocore's loop)
                    raise caught_exception
        elif response is not None and (getattr(response[0], "status_code", 500) or 500) < 500:
            self.answered()

    def answered(self) -> None:
        self.ever_answered = True
        if self.down_since is None:  # the common case: no lock
            return
        with self._lock:
            if self.down_since is None:
                return
            if self.open_since is not None:
                log.warning("S3 answers again after %.0f s: breaker closed",
                            time.time() - self.down_since)
                self.closings += 1
            self.down_since = self.open_since = None

    def _down(self, *, confirmed: bool, why: BaseException) -> None:
        now = time.time()
        with self._lock:
            if self.down_since is None:
                self.down_since = now
            due = self.open_since is None and (confirmed or
                                               now - self.down_since >= self._open_after)
            self._start_prober()
        if not due:
            return
        if self._reachable():  # one request's trouble (a reset on one key), not S3's: a
            return             # breaker open here failed reads of every other object
        with self._lock:
            if self.open_since is None and self.down_since is not None:
                self._open(time.time(), why)

    def _reachable(self) -> bool:
        """Ask S3 itself (the probe, short retry budget) before failing everything fast."""
        if self._probe is None:
            return False
        try:
            self._probe()
        except ClientError as exc:
            if is_down(exc):
                return False
        except Exception:
            return False
        self.answered()
        return True

    def _open(self, now: float, why: object) -> None:  # with self._lock held
        self.open_since = now
        at = time.strftime("%H:%M:%S", time.localtime(self.down_since))  # not a name: inline
        # never answered in this process (a mount starting against a dead endpoint): the
        # caller's own one-line error says it; a warning would be a second line on stderr
        level = logging.WARNING if self.ever_answered else logging.DEBUG
        log.log(level, f"S3 unreachable since {at} (%s): failing foreground requests fast "
                "until it answers again; uploads keep retrying", why)

    def is_open(self) -> bool:
        if self.open_since is not None:
            return True
        since = self.down_since
        if since is None or time.time() - since < self._open_after:
            return False
        with self._lock:
            if self.down_since is not None and self.open_since is None:
                self._open(time.time(), "no answer for a while")
            return self.open_since is not None

    # -- admission --------------------------------------------------------------------------
    def admit(self, op: str, bucket: str, key: str | None) -> None:
        """Raise EndpointUnreachable for a foreground request while the breaker is open."""
        if _background.get() or not self.is_open():
            return
        since = self.down_since or time.time()
        with self._lock:
            self.refused += 1
        raise EndpointUnreachable(
            f"s3://{bucket}/{key or ''}: {op}: S3 unreachable since "
            f"{time.strftime('%H:%M:%S', time.localtime(since))} (failing fast; background "
            "uploads keep retrying)", code="CircuitOpen", key=key, bucket=bucket)

    def state(self) -> dict[str, Any]:
        is_open = self.is_open()
        return {"state": "open" if is_open else "closed",
                "open_since": self.open_since if is_open else None,
                "down_since": self.down_since, "refused": self.refused,
                "closings": self.closings}

    # -- probing ----------------------------------------------------------------------------
    def _start_prober(self) -> None:  # with self._lock held
        if self._probe is None or self._prober is not None:
            return
        self._prober = threading.Thread(target=self._probe_loop, name="s3encfs-s3-probe",
                                        daemon=True)
        self._prober.start()

    def _probe_loop(self) -> None:
        _background.set(True)  # a new thread starts with an empty context
        assert self._probe is not None
        while True:
            time.sleep(self._probe_every)
            with self._lock:
                if self.down_since is None:  # answered: the next outage starts a new prober
                    self._prober = None
                    return
            try:
                self._probe()
            except ClientError as exc:
                if not is_down(exc):  # 403/404: S3 answers
                    self.answered()
            except Exception as exc:
                log.debug("S3 probe: %s", exc)
            else:
                self.answered()
