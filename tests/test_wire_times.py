"""Times on the wire: ISO-8601 in UTC, microseconds always, a `Z` for the zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from chatsite.wire import iso, iso_from_epoch


def test_times_are_utc_with_microseconds_and_a_z() -> None:
    """Tried: a UTC time, the same moment in UTC+2 and UTC-9:30, a whole second (its
    microseconds still written), the first moment of a year and None."""
    moment = datetime(2026, 12, 7, 4, 55, 1, 120034, tzinfo=UTC)
    assert iso(moment) == "2026-12-07T04:55:01.120034Z"
    assert iso(moment.astimezone(timezone(timedelta(hours=2)))) == "2026-12-07T04:55:01.120034Z"
    west = timezone(-timedelta(hours=9, minutes=30))
    assert iso(moment.astimezone(west)) == "2026-12-07T04:55:01.120034Z"
    assert iso(datetime(2027, 1, 1, tzinfo=UTC)) == "2027-01-01T00:00:00.000000Z"
    assert iso(None) is None


def test_epoch_seconds_are_written_as_the_same_moment() -> None:
    """Tried: epoch 0, and a time with microseconds (as presence's last-seen stores it)."""
    assert iso_from_epoch(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_from_epoch(1796619301.5) == "2026-12-07T04:55:01.500000Z"
    moment = datetime(2026, 12, 7, 4, 55, 1, 500000, tzinfo=UTC)
    assert iso_from_epoch(moment.timestamp()) == iso(moment)
