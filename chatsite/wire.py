"""Wire-format primitives shared by every app: times as ISO-8601 UTC with a `Z`."""

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    """Return `moment` as ISO-8601 UTC with microseconds and a `Z`, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_from_epoch(seconds: float) -> str:
    """Return epoch seconds as ISO-8601 UTC with a `Z`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
