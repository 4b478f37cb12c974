"""Points in time as people type them: for ``--as-of`` mounts and ``restore``.

Accepted (local time unless a zone is given):

* ISO 8601: ``2026-11-24``, ``2026-11-24T02:00``, ``2026-11-24 02:00:00Z``, ``…+01:00`` —
  a backup run prints its restore point in this form (UTC, ``Z``);
* ``yesterday 02:00``, ``today 14:30``, ``yesterday`` (= its midnight), ``now``;
* ``3 days ago``, ``2 hours ago``, ``90 minutes ago``, ``1 week ago``, ``30s ago``;
* ``@1764547200`` (Unix seconds).

S3's LastModified has one-second resolution (SeaweedFS and AWS LIST answers), so a point in
time is compared with whole seconds: a change made within the same second as TIME counts as
made before it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]+)\s+ago$")
_DAY = re.compile(r"^(today|yesterday)(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


class TimeSpecError(ValueError):
    """Not a point in time this module understands (the message lists what is)."""


def parse_time(text: str, now: float | None = None) -> float:
    """`text` → Unix seconds.  `now` (Unix seconds) is for tests."""
    spec = " ".join(text.strip().lower().split())
    ref = datetime.now().astimezone() if now is None else \
        datetime.fromtimestamp(now).astimezone()
    if not spec:
        raise TimeSpecError("empty time")
    if spec == "now":
        return ref.timestamp()
    if spec.startswith("@"):
        try:
            return float(spec[1:])
        except ValueError:
            raise TimeSpecError(f"not a Unix time: {text!r}") from None
    if m := _AGO.match(spec):
        unit = _UNITS.get(m.group(2))
        if unit is None:
            raise TimeSpecError(f"unknown unit {m.group(2)!r} in {text!r} "
                                "(seconds, minutes, hours, days, weeks)")
        return ref.timestamp() - float(m.group(1)) * unit
    if m := _DAY.match(spec):
        day = ref.replace(hour=0, minute=0, second=0, microsecond=0)
        if m.group(1) == "yesterday":
            day = (day - timedelta(days=1)).replace(hour=0)  # a DST change keeps midnight
        hour, minute, second = (int(m.group(i) or 0) for i in (2, 3, 4))
        if hour > 23 or minute > 59 or second > 59:
            raise TimeSpecError(f"not a time of day in {text!r}")
        return day.replace(hour=hour, minute=minute, second=second).timestamp()
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise TimeSpecError(
            f"not a point in time: {text!r} (use e.g. 2026-11-24T02:00, 2026-11-24 02:00Z, "
            "'yesterday 02:00', '3 days ago' or @UNIXSECONDS)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()


def format_time(ts: float) -> str:
    """Unix seconds → the UTC ISO form `parse_time` reads back (``2026-11-24T02:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
