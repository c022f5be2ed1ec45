"""Quiet hours: wall-clock times in the agent's time zone, across midnight and DST changes.

Each case gives an instant in UTC, the agent's local time it is, and how long a
business-initiated message waits then under the default quiet hours (21:00 to 09:00).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.quiet_hours import QuietHours

NY, LONDON, SG = "America/New_York", "Europe/London", "Asia/Singapore"
HOUR = 3600.0


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


CASES = [
    # New York springs forward on Sunday 8 March 2026 (02:00 EST becomes 03:00 EDT).
    (NY, utc(3, 8, 1, 59), "20:59 EST Sat", 0.0),
    (NY, utc(3, 8, 2, 0), "21:00 EST Sat", 11 * HOUR),  # to 09:00 EDT: 11 h, not 12
    (NY, utc(3, 8, 6, 30), "01:30 EST, past midnight", 6.5 * HOUR),
    (NY, utc(3, 8, 7, 30), "03:30 EDT", 5.5 * HOUR),
    (NY, utc(3, 8, 12, 59), "08:59 EDT", 60.0),
    (NY, utc(3, 8, 13, 0), "09:00 EDT", 0.0),
    (NY, utc(3, 9, 1, 0), "21:00 EDT Sun", 12 * HOUR),
    # New York falls back on Sunday 1 November 2026 (02:00 EDT becomes 01:00 EST).
    (NY, utc(11, 1, 1, 0), "21:00 EDT Sat", 13 * HOUR),  # to 09:00 EST: 13 h
    (NY, utc(11, 1, 5, 30), "01:30 EDT, the first time", 8.5 * HOUR),
    (NY, utc(11, 1, 6, 30), "01:30 EST, the second time", 7.5 * HOUR),
    (NY, utc(11, 1, 13, 59), "08:59 EST", 60.0),
    (NY, utc(11, 1, 14, 0), "09:00 EST", 0.0),
    # London springs forward on Sunday 29 March 2026 (01:00 GMT becomes 02:00 BST).
    (LONDON, utc(3, 28, 21, 0), "21:00 GMT Sat", 11 * HOUR),
    (LONDON, utc(3, 29, 0, 30), "00:30 GMT, past midnight", 7.5 * HOUR),
    (LONDON, utc(3, 29, 7, 59), "08:59 BST", 60.0),
    (LONDON, utc(3, 29, 8, 0), "09:00 BST", 0.0),
    # London falls back on Sunday 25 October 2026 (02:00 BST becomes 01:00 GMT).
    (LONDON, utc(10, 24, 20, 0), "21:00 BST Sat", 13 * HOUR),
    (LONDON, utc(10, 25, 0, 30), "01:30 BST, the first time", 8.5 * HOUR),
    (LONDON, utc(10, 25, 1, 30), "01:30 GMT, the second time", 7.5 * HOUR),
    (LONDON, utc(10, 25, 9, 0), "09:00 GMT", 0.0),
    # Singapore has no daylight saving: only the midnight to cross.
    (SG, utc(3, 8, 15, 59), "23:59 SGT", 9 * HOUR + 60.0),
    (SG, utc(3, 8, 16, 0), "00:00 SGT", 9 * HOUR),
]


@pytest.mark.parametrize(("zone", "at", "local", "wait"), CASES, ids=[c[2] for c in CASES])
def test_business_initiated_messages_wait_until_the_wall_clock_end_of_quiet_hours(
    zone: str, at: datetime, local: str, wait: float
) -> None:
    assert QuietHours().wait_seconds(at, zone) == wait


@pytest.mark.parametrize(("zone", "at", "local", "wait"), CASES, ids=[c[2] for c in CASES])
def test_the_wait_is_the_same_whatever_zone_now_is_given_in(
    zone: str, at: datetime, local: str, wait: float
) -> None:
    # Subtracting two datetimes of one zone gives their wall-clock difference: an hour
    # off across a daylight-saving change, had the wait been computed in the agent's zone.
    assert QuietHours().wait_seconds(at.astimezone(ZoneInfo(zone)), zone) == wait


def test_quiet_hours_that_end_in_the_hour_the_clocks_skip_end_when_it_would_have() -> None:
    # 02:30 does not exist in New York on 8 March 2026: quiet until 03:30 EDT (07:30 UTC).
    early = QuietHours(start="21:00", end="02:30")
    assert early.wait_seconds(utc(3, 8, 6, 0), NY) == 1.5 * HOUR  # 01:00 EST
    assert early.wait_seconds(utc(3, 8, 7, 30), NY) == 0.0  # 03:30 EDT


def test_the_agents_time_zone_decides_not_the_leads() -> None:
    # 22:00 in Singapore is 14:00 in London: a Singapore agent's follow-up to a lead in
    # London waits; 10:00 in Singapore is 02:00 in London, and it goes.
    at_night_in_singapore = utc(3, 30, 14, 0)
    assert QuietHours().wait_seconds(at_night_in_singapore, SG) == 11 * HOUR
    assert QuietHours().wait_seconds(at_night_in_singapore + timedelta(hours=12), SG) == 0.0
