"""The injectable clock: what the platform calls "now", stopped and moved by tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.clock import clock, frozen_at
from shared.models import utcnow

NEW_YORK = ZoneInfo("America/New_York")


def test_a_frozen_clock_is_the_platforms_now_until_the_block_ends() -> None:
    instant = datetime(2026, 3, 7, 22, 0, tzinfo=NEW_YORK)
    with frozen_at(instant):
        assert utcnow() == instant
        assert utcnow().tzinfo is UTC  # always UTC inside, whatever zone it was given in
        assert utcnow() == utcnow()  # stopped: it moves only when advanced
    assert not clock.frozen
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_advancing_moves_absolute_time_across_a_daylight_saving_change() -> None:
    # New York springs forward at 02:00 on 8 March 2026: 24 hours after 22:00 on the 7th
    # is 23:00 on the 8th by the wall clock.
    with frozen_at(datetime(2026, 3, 7, 22, 0, tzinfo=NEW_YORK)) as frozen:
        later = frozen.advance(timedelta(hours=24))
        assert utcnow() == later
        assert later.astimezone(NEW_YORK) == datetime(2026, 3, 8, 23, 0, tzinfo=NEW_YORK)


def test_the_clock_takes_aware_instants_only_and_advances_only_when_frozen() -> None:
    with pytest.raises(ValueError):
        clock.freeze(datetime(2026, 3, 8, 12, 0))
    with pytest.raises(RuntimeError):
        clock.advance(timedelta(minutes=1))
