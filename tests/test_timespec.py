"""Time specs for --as-of / restore, and picking the version current at a time (no S3)."""

from __future__ import annotations

from datetime import datetime

import pytest

from s3encfs.store.asof import Version, _ordered, visible_at
from s3encfs.timespec import TimeSpecError, format_time, parse_time

NOW = datetime(2026, 11, 26, 15, 30, 0).astimezone().timestamp()


def local(*args: int) -> float:
    return datetime(*args).astimezone().timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(("spec", "expected"), [
    ("yesterday 02:00", local(2026, 11, 25, 2, 0)),
    ("today 14:30:05", local(2026, 11, 26, 14, 30, 5)),
    ("yesterday", local(2026, 11, 25)),
    ("3 days ago", NOW - 3 * 86400),
    ("90 minutes ago", NOW - 5400),
    ("1 week ago", NOW - 7 * 86400),
    ("30s ago", NOW - 30),
    ("2026-11-24T02:00", local(2026, 11, 24, 2, 0)),
    ("2026-11-24", local(2026, 11, 24)),
    ("2026-11-24 02:00:00Z", datetime.fromisoformat("2026-11-24T02:00:00+00:00").timestamp()),
    ("2026-11-24T03:00:00+01:00", datetime.fromisoformat("2026-11-24T02:00:00+00:00").timestamp()),
    ("@1764547200", 1764547200.0),
    ("now", NOW),
])
def test_parse_time(spec: str, expected: float) -> None:
    assert parse_time(spec, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "last tuesday", "3 fortnights ago", "yesterday 25:00",
                                 "@x", "2026-13-01"])
def test_parse_time_refuses(bad: str) -> None:
    with pytest.raises(TimeSpecError):
        parse_time(bad, now=NOW)


def test_format_time_round_trips_to_the_second() -> None:
    stamp = format_time(NOW + 0.7)
    assert stamp.endswith("Z") and parse_time(stamp) == int(NOW)


def v(lm: float, *, deleted: bool = False, latest: bool = False, vid: str = "") -> Version:
    return Version("k", vid or f"v{lm}", lm, 1, "e", latest, deleted)


def test_visible_at_honours_delete_markers_and_whole_seconds() -> None:
    entries = _ordered([v(100), v(200), v(300, deleted=True), v(400, latest=True)])
    assert visible_at(entries, 99.9) is None  # did not exist yet
    assert visible_at(entries, 100.0).version_id == "v100"  # type: ignore[union-attr]
    assert visible_at(entries, 250.5).version_id == "v200"  # type: ignore[union-attr]
    assert visible_at(entries, 300.9) is None  # deleted then (LastModified 300 <= 300.9)
    assert visible_at(entries, 1e9).version_id == "v400"  # type: ignore[union-attr]


def test_same_second_version_and_marker_latest_wins() -> None:
    entries = _ordered([v(100, vid="old"), v(100, deleted=True, latest=True)])
    assert visible_at(entries, 100.5) is None
    entries = _ordered([v(100, deleted=True), v(100, latest=True, vid="new")])
    assert visible_at(entries, 100.5).version_id == "new"  # type: ignore[union-attr]
