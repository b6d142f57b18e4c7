"""Time for the sandbox: one injectable clock and one timestamp format.

Every timestamp the sandbox stores or answers with goes through `to_iso`, so the
stored text sorts in time order and SQL can compare it directly.
"""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time as a timezone-aware datetime; tests inject a fake one."""


def system_clock() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """Format a moment as fixed-width ISO 8601 in UTC, e.g. `2025-01-31T12:00:00.000000+00:00`.

    The fixed width matters: stored timestamps are compared as text in SQL.
    """
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    """Parse a timestamp written by `to_iso`."""
    return datetime.fromisoformat(text)
