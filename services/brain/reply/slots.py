"""An agent's free times to offer a lead: pure functions over working hours and bookings.

Working hours are wall-clock times in the agent's time zone, so a slot at 10:00 stays at
10:00 local across a daylight-saving change; a local time that does not exist that day (the
hour skipped in spring) is not offered, and one that happens twice (autumn) is offered once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.brain.reply.when import TimeWindow
from shared.local_time import when_label
from shared.repositories.agents import WorkingPeriod

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Offers are spread over parts of the day: before noon, afternoon, from 17:00.
AFTERNOON, EVENING = time(12), time(17)
NEAR = timedelta(minutes=90)


@dataclass(frozen=True)
class Slot:
    """A free time of the agent (UTC)."""

    start: datetime
    end: datetime

    def label(self, timezone: str) -> str:
        """How a lead reads it, in the agent's time zone: "Sat 28 Nov, 3:00 pm"."""
        return when_label(self.start, timezone)


def _clock(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _local_start(day: date, minutes: int, zone: ZoneInfo) -> datetime | None:
    """The UTC moment of a wall-clock time on a day; None when the clock skips it."""
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    moment = wall.replace(tzinfo=zone).astimezone(UTC)
    if moment.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return moment


def working_slots(
    working_hours: Sequence[WorkingPeriod],
    timezone: str,
    slot_minutes: int,
    first_day: date,
    days: int,
) -> Iterator[Slot]:
    """Every slot of the working hours on `days` local dates from `first_day`, in order.

    Slots start at each period's start and follow each other without gaps.
    """
    zone = ZoneInfo(timezone)
    length = timedelta(minutes=slot_minutes)
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        starts: set[datetime] = set()
        for period in working_hours:
            if period.day != WEEKDAY_KEYS[day.weekday()]:
                continue
            begin, finish = _clock(period.start), _clock(period.end)
            for minutes in range(begin, finish - slot_minutes + 1, slot_minutes):
                moment = _local_start(day, minutes, zone)
                if moment is not None:
                    starts.add(moment)
        for moment in sorted(starts):
            yield Slot(moment, moment + length)


def _is_free(slot: Slot, booked: Sequence[tuple[datetime, datetime]]) -> bool:
    return all(not (slot.start < end and start < slot.end) for start, end in booked)


def _part(local: datetime) -> int:
    moment = local.time()
    return 0 if moment < AFTERNOON else 1 if moment < EVENING else 2


def _spread(candidates: list[Slot], count: int, zone: ZoneInfo) -> list[Slot]:
    """Up to `count` candidates, preferring new days, then new parts of the day, then
    times apart from those already chosen; the earliest among equals."""
    chosen: list[Slot] = []
    days: set[date] = set()
    parts: set[int] = set()
    remaining = list(candidates)
    while remaining and len(chosen) < count:

        def rank(slot: Slot) -> tuple[bool, bool, bool, datetime]:
            local = slot.start.astimezone(zone)
            near = any(abs(slot.start - other.start) < NEAR for other in chosen)
            return (
                local.date() in days,
                _part(local) in parts,
                near,
                slot.start,
            )

        best = min(remaining, key=rank)
        remaining.remove(best)
        chosen.append(best)
        local = best.start.astimezone(zone)
        days.add(local.date())
        parts.add(_part(local))
    return sorted(chosen, key=lambda slot: slot.start)


def free_slots(
    working_hours: list[WorkingPeriod],
    timezone: str,
    slot_minutes: int,
    booked: list[tuple[datetime, datetime]],
    now: datetime,
    count: int = 3,
    window: TimeWindow | None = None,
    min_notice: timedelta = timedelta(hours=2),
    horizon_days: int = 14,
) -> list[Slot]:
    """Free slots to offer: inside working hours, clear of bookings, `min_notice` ahead.

    Without a window, or with a span ("Saturday", "next week"), the slots are spread over
    different days and parts of the day, earliest first, and given in time order. With an
    exact window ("tomorrow 3pm") the moment asked for comes first when it is free, then the
    free times nearest to it on that day.
    """
    zone = ZoneInfo(timezone)
    now = now.astimezone(UTC)
    earliest = now + min_notice
    latest = now + timedelta(days=horizon_days)
    first_day = now.astimezone(zone).date()
    candidates = [
        slot
        for slot in working_slots(
            working_hours, timezone, slot_minutes, first_day, horizon_days + 1
        )
        if earliest <= slot.start < latest and _is_free(slot, booked)
    ]
    if window is None:
        return _spread(candidates, count, zone)
    if not window.exact:
        inside = [s for s in candidates if window.start <= s.start and s.end <= window.end]
        return _spread(inside, count, zone)
    asked = window.start.astimezone(UTC)
    day = asked.astimezone(zone).date()
    same_day = [s for s in candidates if s.start.astimezone(zone).date() == day]
    wanted = Slot(asked, asked + timedelta(minutes=slot_minutes))
    if (
        wanted not in same_day
        and earliest <= wanted.start < latest
        and _within_hours(wanted, working_hours, zone)
        and _is_free(wanted, booked)
    ):
        same_day.append(wanted)
    same_day.sort(key=lambda slot: (abs(slot.start - asked), slot.start))
    return same_day[:count]


def _within_hours(slot: Slot, working_hours: Sequence[WorkingPeriod], zone: ZoneInfo) -> bool:
    """True when a slot lies inside one working period of its local day."""
    start = slot.start.astimezone(zone)
    begin = start.hour * 60 + start.minute
    finish = begin + int((slot.end - slot.start).total_seconds() // 60)
    key = WEEKDAY_KEYS[start.weekday()]
    return any(
        p.day == key and _clock(p.start) <= begin and finish <= _clock(p.end) for p in working_hours
    )
