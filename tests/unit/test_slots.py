"""The free times offered to a lead: working hours, bookings, notice, spread, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from services.brain.reply.slots import Slot, free_slots, working_slots
from services.brain.reply.when import TimeWindow, parse_when
from shared.repositories.agents import DEFAULT_HOURS, WorkingPeriod

SG = "Asia/Singapore"
LONDON = "Europe/London"
SINGAPORE = ZoneInfo(SG)
# Wednesday 25 November 2026, 10:00 in Singapore.
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=SINGAPORE)
WEEKDAYS = list(DEFAULT_HOURS)  # Mon-Fri 09:00-18:00
WITH_SATURDAY = [*WEEKDAYS, WorkingPeriod(day="sat", start="10:00", end="16:00")]


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """A Singapore wall-clock time."""
    return datetime(2026, month, day, hour, minute, tzinfo=SINGAPORE)


def starts(slots: list[Slot], timezone: str = SG) -> list[str]:
    """How the lead reads the slots."""
    return [slot.label(timezone) for slot in slots]


def test_label_reads_like_a_person_writes() -> None:
    slot = Slot(local(28, 15).astimezone(UTC), local(28, 15, 30).astimezone(UTC))
    assert slot.label(SG) == "Sat 28 Nov, 3:00 pm"
    assert Slot(local(2, 9, 5, month=12), local(2, 10, month=12)).label(SG) == "Wed 2 Dec, 9:05 am"
    assert Slot(local(3, 0, month=12), local(3, 1, month=12)).label(SG) == "Thu 3 Dec, 12:00 am"
    assert Slot(local(3, 12, month=12), local(3, 13, month=12)).label(SG) == "Thu 3 Dec, 12:00 pm"
    assert slot.label(LONDON) == "Sat 28 Nov, 7:00 am"


def test_offers_are_spread_over_days_and_parts_of_the_day() -> None:
    slots = free_slots(WEEKDAYS, SG, 30, [], NOW)
    # Two hours' notice: today from noon; then another day, another part of the day.
    assert starts(slots) == ["Wed 25 Nov, 12:00 pm", "Thu 26 Nov, 9:00 am", "Fri 27 Nov, 5:00 pm"]
    assert all(slot.end - slot.start == timedelta(minutes=30) for slot in slots)
    assert len(free_slots(WEEKDAYS, SG, 30, [], NOW, count=2)) == 2
    five = free_slots(WEEKDAYS, SG, 30, [], NOW, count=5)
    assert len({s.start.astimezone(SINGAPORE).date() for s in five}) >= 3
    assert five == sorted(five, key=lambda s: s.start)


def test_booked_times_and_notice_are_respected() -> None:
    booked = [
        (local(25, 12).astimezone(UTC), local(25, 13).astimezone(UTC)),
        (local(26, 8, 45).astimezone(UTC), local(26, 9, 15).astimezone(UTC)),
    ]
    slots = free_slots(WEEKDAYS, SG, 30, booked, NOW)
    assert starts(slots)[:2] == ["Wed 25 Nov, 1:00 pm", "Thu 26 Nov, 9:30 am"]
    later = free_slots(WEEKDAYS, SG, 30, [], NOW, min_notice=timedelta(hours=24))
    assert all(s.start >= NOW + timedelta(hours=24) for s in later)
    assert starts(later)[0] == "Thu 26 Nov, 10:00 am"


def test_slot_length_follows_the_agent() -> None:
    slots = free_slots(WEEKDAYS, SG, 90, [], NOW, count=10)
    assert all(s.end - s.start == timedelta(minutes=90) for s in slots)
    # 09:00-18:00 holds six 90-minute slots: 09:00 ... 16:30.
    day = list(working_slots(WEEKDAYS, SG, 90, local(26, 0).date(), 1))
    assert [s.start.astimezone(SINGAPORE).strftime("%H:%M") for s in day] == [
        "09:00",
        "10:30",
        "12:00",
        "13:30",
        "15:00",
        "16:30",
    ]


def test_a_window_keeps_the_offers_inside_it() -> None:
    afternoon = parse_when("Sat afternoon", NOW, SG)
    assert afternoon is not None
    slots = free_slots(WITH_SATURDAY, SG, 30, [], NOW, window=afternoon)
    assert starts(slots) == ["Sat 28 Nov, 12:00 pm", "Sat 28 Nov, 1:30 pm", "Sat 28 Nov, 3:00 pm"]
    sunday = parse_when("Sunday", NOW, SG)
    assert sunday is not None
    assert free_slots(WITH_SATURDAY, SG, 30, [], NOW, window=sunday) == []
    week = parse_when("next week", NOW, SG)
    assert week is not None
    spread = free_slots(WEEKDAYS, SG, 30, [], NOW, window=week)
    assert starts(spread) == ["Mon 30 Nov, 9:00 am", "Tue 1 Dec, 12:00 pm", "Wed 2 Dec, 5:00 pm"]


def test_an_exact_time_comes_first_then_the_nearest_that_day() -> None:
    asked = parse_when("tomorrow 3pm", NOW, SG)
    assert asked is not None
    slots = free_slots(WEEKDAYS, SG, 30, [], NOW, window=asked)
    assert starts(slots) == ["Thu 26 Nov, 3:00 pm", "Thu 26 Nov, 2:30 pm", "Thu 26 Nov, 3:30 pm"]
    taken = [(local(26, 15).astimezone(UTC), local(26, 15, 30).astimezone(UTC))]
    others = free_slots(WEEKDAYS, SG, 30, taken, NOW, window=asked)
    assert starts(others) == ["Thu 26 Nov, 2:30 pm", "Thu 26 Nov, 3:30 pm", "Thu 26 Nov, 2:00 pm"]
    # A time off the grid but inside working hours is offered as asked.
    quarter = parse_when("tomorrow 3:15pm", NOW, SG)
    assert quarter is not None
    assert starts(free_slots(WEEKDAYS, SG, 30, [], NOW, window=quarter))[0] == (
        "Thu 26 Nov, 3:15 pm"
    )
    # Outside working hours the nearest working times that day are offered instead.
    late = TimeWindow(local(26, 20).astimezone(UTC), local(26, 20).astimezone(UTC), exact=True)
    assert starts(free_slots(WEEKDAYS, SG, 30, [], NOW, window=late))[0] == "Thu 26 Nov, 5:30 pm"


def test_no_working_hours_no_slots() -> None:
    assert free_slots([], SG, 30, [], NOW) == []
    assert free_slots(WEEKDAYS, SG, 30, [], NOW, horizon_days=0) == []


def test_daylight_saving_keeps_wall_clock_hours_in_london() -> None:
    london = ZoneInfo(LONDON)
    every_day = [
        WorkingPeriod(day=day, start="10:00", end="11:00")
        for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ]
    # Friday 27 March 2026; clocks go forward at 01:00 GMT on Sunday 29 March.
    now = datetime(2026, 3, 27, 6, tzinfo=UTC)
    slots = free_slots(every_day, LONDON, 60, [], now, count=4, min_notice=timedelta(0))
    assert [s.start for s in slots] == [
        datetime(2026, 3, 27, 10, tzinfo=UTC),  # GMT
        datetime(2026, 3, 28, 10, tzinfo=UTC),
        datetime(2026, 3, 29, 9, tzinfo=UTC),  # BST: 10:00 local is 09:00 UTC
        datetime(2026, 3, 30, 9, tzinfo=UTC),
    ]
    assert all(s.start.astimezone(london).hour == 10 for s in slots)
    assert [s.label(LONDON) for s in slots][2] == "Sun 29 Mar, 10:00 am"


def test_the_hour_the_clocks_skip_is_not_offered_and_the_repeated_one_once() -> None:
    night = [WorkingPeriod(day="sun", start="00:00", end="03:00")]
    spring = list(working_slots(night, LONDON, 30, datetime(2026, 3, 29).date(), 1))
    # 01:00 and 01:30 do not exist that night in London.
    assert [s.label(LONDON) for s in spring] == [
        "Sun 29 Mar, 12:00 am",
        "Sun 29 Mar, 12:30 am",
        "Sun 29 Mar, 2:00 am",
        "Sun 29 Mar, 2:30 am",
    ]
    autumn = list(working_slots(night, LONDON, 30, datetime(2026, 10, 25).date(), 1))
    assert len(autumn) == 6 and len({s.start for s in autumn}) == 6
    assert autumn == sorted(autumn, key=lambda s: s.start)


def test_days_follow_the_agents_midnight_not_utcs() -> None:
    # 16:30 UTC on Tuesday 10 March is 00:30 on Wednesday 11 March in Singapore.
    now = datetime(2026, 3, 10, 16, 30, tzinfo=UTC)
    wednesday_night = [
        WorkingPeriod(day="wed", start="00:00", end="01:00"),
        WorkingPeriod(day="wed", start="09:00", end="10:00"),
    ]
    slots = free_slots(wednesday_night, SG, 30, [], now, count=5, min_notice=timedelta(0))
    assert [s.label(SG) for s in slots][:2] == ["Wed 11 Mar, 12:30 am", "Wed 11 Mar, 9:00 am"]
    assert slots[0].start == now  # 00:30 local, not yet started
    tomorrow = parse_when("tomorrow", now, SG)
    assert tomorrow is not None
    assert tomorrow.start == datetime(2026, 3, 12, tzinfo=SINGAPORE)


@given(
    now=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
    timezone=st.sampled_from([SG, LONDON, "America/New_York", "Asia/Kolkata"]),
    slot_minutes=st.sampled_from([15, 30, 45, 60, 90, 240]),
    booked_offsets=st.lists(st.integers(min_value=0, max_value=14 * 24 * 4), max_size=30),
    count=st.integers(min_value=1, max_value=6),
)
def test_offers_are_free_in_hours_ahead_and_distinct(
    now: datetime, timezone: str, slot_minutes: int, booked_offsets: list[int], count: int
) -> None:
    zone = ZoneInfo(timezone)
    booked = [
        (now + timedelta(minutes=15 * n), now + timedelta(minutes=15 * n + 60))
        for n in booked_offsets
    ]
    hours = [*WITH_SATURDAY, WorkingPeriod(day="sun", start="19:30", end="23:59")]
    slots = free_slots(hours, timezone, slot_minutes, booked, now, count=count)
    assert len(slots) <= count and len(set(slots)) == len(slots)
    for slot in slots:
        assert slot.start >= now + timedelta(hours=2)
        assert slot.start < now + timedelta(days=14)
        assert slot.end - slot.start == timedelta(minutes=slot_minutes)
        assert all(slot.end <= b_start or b_end <= slot.start for b_start, b_end in booked)
        start = slot.start.astimezone(zone)
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[start.weekday()]
        assert any(
            p.day == day and p.start <= f"{start:%H:%M}" and f"{start:%H:%M}" < p.end for p in hours
        )
