"""Time for the sandbox: the simulated clock, the wall clock and one timestamp format.

The sandbox keeps two kinds of time apart:

- **Provider time** (`Clock`) decides everything a real provider decides by the calendar:
  when a pending refund settles or a succeeded one fails, when a recapture window closes,
  when an idempotency key is forgotten. It can run faster than real time
  (`--clock-speed`) and be moved forward (`POST /v1/clock/advance`), so tests can reach
  "a day later" in seconds; `ScaledClock` is that clock, anchored in the database so a
  restart continues where it stopped.
- **Wall time** (`system_clock`) drives the webhook outbox: when a delivery is tried and
  the `t=` timestamp of its signature, which the receiver checks against its own clock.

Every timestamp the sandbox stores or answers with goes through `to_iso`, so the stored
text sorts in time order and SQL can compare it directly.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


@dataclass(frozen=True)
class ClockAnchor:
    """Provider time `provider` was wall time `wall`; since then it runs `speed` times faster."""

    wall: datetime
    provider: datetime
    speed: float

    def at(self, wall: datetime) -> datetime:
        """Provider time at a wall time."""
        return self.provider + (wall - self.wall) * self.speed


class ScaledClock:
    """Provider time that runs `speed` times as fast as the wall clock and can be advanced.

    Args:
        anchor: Where provider time stands, as last persisted (None: it equals wall time).
        speed: How fast it runs from now on; 1 is real time.
        save: Persists a new anchor, so a restart continues from the same provider time.
        wall_clock: The real time source.
    """

    def __init__(
        self,
        anchor: ClockAnchor | None,
        speed: float,
        save: Callable[[ClockAnchor], None],
        wall_clock: Clock = system_clock,
    ) -> None:
        self._wall_clock = wall_clock
        self._save = save
        wall = wall_clock()
        provider = wall if anchor is None else anchor.at(wall)
        self._anchor = ClockAnchor(wall, provider, speed)
        if anchor is None and speed == 1:
            return  # plain real time: nothing to remember
        if anchor is None or anchor.speed != speed:
            # Re-anchor at the current provider time, so changing the speed never jumps.
            self._save(self._anchor)
        else:
            self._anchor = anchor

    @property
    def speed(self) -> float:
        """How many provider seconds pass per wall-clock second."""
        return self._anchor.speed

    def __call__(self) -> datetime:
        return self._anchor.at(self._wall_clock())

    def advance(self, seconds: float) -> datetime:
        """Move provider time forward by `seconds`; returns the new provider time."""
        wall = self._wall_clock()
        provider = self._anchor.at(wall) + timedelta(seconds=seconds)
        self._anchor = ClockAnchor(wall, provider, self._anchor.speed)
        self._save(self._anchor)
        return provider
