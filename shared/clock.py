"""The platform's one notion of "now", which tests can stop and move.

Business time (WhatsApp's 24-hour window, quiet hours, follow-ups, reminders, the slots
offered to a lead) comes from `now()`. In production that is the system clock; a test
freezes it at an instant and advances it, so a 24-hour window or a 30-day follow-up takes
no real time:

    with frozen_at(datetime(2026, 3, 7, 22, 0, tzinfo=UTC)) as clock:
        ...
        clock.advance(timedelta(hours=23, minutes=59))

Real elapsed time (pacing, rate slots, timeouts, metrics) is measured with `time.time()`
and `time.monotonic()` instead, and does not follow this clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class Clock:
    """The system clock, unless frozen at an instant (then it moves only when advanced)."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC)

    @property
    def frozen(self) -> bool:
        """Whether the clock is stopped at an instant."""
        return self._frozen is not None

    def freeze(self, instant: datetime) -> None:
        """Stop the clock at `instant` (timezone-aware; kept in UTC)."""
        if instant.tzinfo is None:
            raise ValueError("the clock takes timezone-aware instants only")
        self._frozen = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        """Move a frozen clock forward by `delta` (absolute time); the new now."""
        if self._frozen is None:
            raise RuntimeError("only a frozen clock can be advanced")
        self._frozen += delta
        return self._frozen

    def resume(self) -> None:
        """Follow the system clock again."""
        self._frozen = None


clock = Clock()


def now() -> datetime:
    """The current time, timezone-aware UTC, from the platform's clock."""
    return clock.now()


@contextmanager
def frozen_at(instant: datetime) -> Iterator[Clock]:
    """Freeze the platform's clock at `instant` for the block; it follows the system after."""
    clock.freeze(instant)
    try:
        yield clock
    finally:
        clock.resume()
