"""What leads mean by a time, and which offered slot they choose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.brain.reply.slots import Slot
from services.brain.reply.when import TimeWindow, parse_when, pick_offered

SG = "Asia/Singapore"
LONDON = "Europe/London"
SINGAPORE = ZoneInfo(SG)
# Wednesday 25 November 2026, 10:00 in Singapore.
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=SINGAPORE)


def local(day: int, hour: int, minute: int = 0, month: int = 11, year: int = 2026) -> datetime:
    """A Singapore wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=SINGAPORE)


def window(text: str, now: datetime = NOW, timezone: str = SG) -> TimeWindow:
    """The window a phrase names (it must name one)."""
    found = parse_when(text, now, timezone)
    assert found is not None, text
    assert found.start.tzinfo is not None and found.end.tzinfo is not None
    return found


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("tomorrow 3pm", local(26, 15)),
        ("Tomorrow at 3 PM please", local(26, 15)),
        ("tmr 3pm can?", local(26, 15)),
        ("3pm tomorrow", local(26, 15)),
        ("today at 5", local(25, 17)),
        ("next Monday at 7", local(30, 19)),  # 7 am is outside sensible hours
        ("next monday at 9", local(30, 9)),
        ("28 Nov 2pm", local(28, 14)),
        ("28th November at 2 pm", local(28, 14)),
        ("Nov 28, 2pm", local(28, 14)),
        ("28/11 at 14:30", local(28, 14, 30)),
        ("3.30pm", local(25, 15, 30)),
        ("3:30 p.m.", local(25, 15, 30)),
        ("at 7:30", local(25, 19, 30)),
        ("07:30 tomorrow", local(26, 7, 30)),
        ("19:30", local(25, 19, 30)),
        ("noon tomorrow", local(26, 12)),
        ("Thursday 2pm", local(26, 14)),
        ("can we do Sun 11am", local(29, 11)),
        ("Saturday 10am", local(28, 10)),
        ("wed at 9", local(2, 9, month=12)),  # today's 9:00 has passed: next Wednesday
        ("tomorrow morning at 10", local(26, 10)),
        ("Friday evening at 7", local(27, 19)),
        ("day after tomorrow 4pm", local(27, 16)),
        ("what about 4 o'clock", local(25, 16)),
        ("2026-12-01 10am", local(1, 10, month=12)),
        ("1/12/2026 at 11am", local(1, 11, month=12)),
        ("5 Jan 10am", local(5, 10, month=1, year=2027)),  # January is next year's
        ("in 2 hours", local(25, 12)),
    ],
)
def test_exact_times(text: str, start: datetime) -> None:
    found = window(text)
    assert found.exact
    assert found.start == start and found.end == found.start


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("Sat afternoon", local(28, 12), local(28, 17)),
        ("Saturday morning", local(28, 9), local(28, 12)),
        ("saturday", local(28, 0), local(29, 0)),
        ("this weekend", local(28, 0), local(30, 0)),
        ("next weekend", local(5, 0, month=12), local(7, 0, month=12)),
        ("next week", local(30, 0), local(7, 0, month=12)),
        ("this week", NOW, local(30, 0)),
        ("evening", local(25, 17), local(25, 21)),
        ("in the morning", NOW, local(25, 12)),  # the rest of this morning
        ("tonight", local(25, 17), local(25, 21)),
        ("tmr morning", local(26, 9), local(26, 12)),
        ("lunch time on friday", local(27, 12), local(27, 14)),
        ("after work", local(25, 18), local(25, 21)),
        ("Friday", local(27, 0), local(28, 0)),
        ("this Wednesday", NOW, local(26, 0)),
        ("Tuesday next week", local(1, 0, month=12), local(2, 0, month=12)),
        ("next week Tuesday", local(1, 0, month=12), local(2, 0, month=12)),
        ("next Tuesday", local(1, 0, month=12), local(2, 0, month=12)),
        ("Dec 3", local(3, 0, month=12), local(4, 0, month=12)),
        ("3rd december", local(3, 0, month=12), local(4, 0, month=12)),
        ("on the 28th", local(28, 0), local(29, 0)),
        ("in 2 days", local(27, 0), local(28, 0)),
        ("today", NOW, local(26, 0)),
    ],
)
def test_windows(text: str, start: datetime, end: datetime) -> None:
    found = window(text)
    assert not found.exact
    assert (found.start, found.end) == (start, end)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hi",
        "how much is it?",
        "3 bedroom condo, budget 1.5m",
        "priced at 1.2m, is that fair?",
        "looking for 2-3 bedrooms",
        "I'm free 24/7",
        "the sun is out today",  # "today" is a day, but "sun" is not Sunday here
        "2 decent units near the MRT",
        "may I know the price",
        "1200 sqft at 5 rooms",
        "call me at 91234567",
        "today at 9",  # passed already: not tomorrow, not a time in the past
        "this morning at 8",
    ],
)
def test_no_time_or_only_a_past_one_gives_none(text: str) -> None:
    found = parse_when(text, NOW, SG)
    if text == "the sun is out today":
        assert found == TimeWindow(NOW.astimezone(UTC), local(26, 0), exact=False)
    else:
        assert found is None, (text, found)


def test_a_weekday_already_over_this_week_means_next_weeks() -> None:
    thursday = local(26, 15)
    assert window("Tuesday", now=thursday).start == local(1, 0, month=12)
    assert window("Tuesday 3pm", now=thursday).start == local(1, 15, month=12)
    # On the day itself: today while it lasts, next week once it is over.
    assert window("Thursday", now=thursday).start == thursday
    assert window("Thursday 4pm", now=thursday).start == local(26, 16)
    assert window("Thursday 2pm", now=thursday).start == local(3, 14, month=12)
    saturday_evening = local(28, 19)
    assert window("Sat afternoon", now=saturday_evening).start == local(5, 12, month=12)
    assert window("this weekend", now=saturday_evening).start == saturday_evening
    # Late on Sunday, "this weekend" is nearly over, "next weekend" is the one after.
    sunday = local(29, 20)
    assert window("this weekend", now=sunday).end == local(30, 0)
    assert window("next weekend", now=sunday).start == local(5, 0, month=12)


def test_dates_already_over_mean_next_year() -> None:
    assert window("3 Nov 2pm").start == local(3, 14, year=2027)
    assert window("25 Nov 9am").start == local(25, 9, year=2027)  # today, but 9:00 is over
    assert parse_when("3 Nov 2025 2pm", NOW, SG) is None  # a year in the past is kept
    assert parse_when("31/2", NOW, SG) is None  # no such day


def test_the_agents_midnight_decides_today_and_tomorrow() -> None:
    # 16:30 UTC on Tuesday 10 March is already Wednesday 00:30 in Singapore.
    now = datetime(2026, 3, 10, 16, 30, tzinfo=UTC)
    assert window("tomorrow 10am", now=now).start == datetime(2026, 3, 12, 10, tzinfo=SINGAPORE)
    assert window("today at 3pm", now=now).start == datetime(2026, 3, 11, 15, tzinfo=SINGAPORE)
    assert window("Wednesday", now=now).start == now
    assert window("tomorrow", now=now).start == datetime(2026, 3, 12, tzinfo=SINGAPORE)
    # Just before the agent's midnight, tomorrow is minutes away.
    late = datetime(2026, 3, 10, 15, 59, tzinfo=UTC)  # 23:59 in Singapore
    assert window("tomorrow 9am", now=late).start == datetime(2026, 3, 11, 9, tzinfo=SINGAPORE)


def test_daylight_saving_in_london() -> None:
    london = ZoneInfo(LONDON)
    # Saturday 28 March 2026, 12:00 GMT; clocks go forward at 01:00 GMT on Sunday 29 March.
    saturday = datetime(2026, 3, 28, 12, tzinfo=UTC)
    sunday_ten = window("tomorrow 10am", now=saturday, timezone=LONDON).start
    assert sunday_ten == datetime(2026, 3, 29, 9, tzinfo=UTC)  # 10:00 BST
    assert sunday_ten.astimezone(london).hour == 10
    monday = window("Monday at 9", now=saturday, timezone=LONDON)
    assert monday.start == datetime(2026, 3, 30, 8, tzinfo=UTC)
    friday = window("Friday 9am", now=datetime(2026, 3, 25, 12, tzinfo=UTC), timezone=LONDON)
    assert friday.start == datetime(2026, 3, 27, 9, tzinfo=UTC)  # still GMT
    # The Sunday of the change is 23 hours long.
    day = window("Sunday", now=saturday, timezone=LONDON)
    assert day.end - day.start == timedelta(hours=23)
    assert window("tomorrow evening", now=saturday, timezone=LONDON).start == datetime(
        2026, 3, 29, 16, tzinfo=UTC
    )


PHRASES = [
    "tomorrow 3pm",
    "today at 5",
    "Sat afternoon",
    "Saturday morning",
    "this weekend",
    "next weekend",
    "next Monday at 7",
    "next week",
    "this week",
    "28 Nov 2pm",
    "28/11 at 14:30",
    "3.30pm",
    "evening",
    "in the morning",
    "tonight",
    "Friday",
    "Tuesday 9am",
    "wed at 9",
    "on the 28th",
    "noon",
    "at 8",
    "lunch",
    "in 3 hours",
]


@given(
    text=st.sampled_from(PHRASES),
    now=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
    ),
    timezone=st.sampled_from([SG, LONDON, "America/New_York", "Asia/Kolkata", "Pacific/Auckland"]),
)
def test_never_a_time_in_the_past(text: str, now: datetime, timezone: str) -> None:
    found = parse_when(text, now, timezone)
    if found is not None:
        assert found.start >= now and found.end >= found.start
        assert found.exact == (found.start == found.end)
        assert found.start - now < timedelta(days=400)


@given(st.text(max_size=60))
def test_any_text_is_read_without_error(text: str) -> None:
    found = parse_when(text, NOW, SG)
    assert found is None or found.start >= NOW


# --- choosing among offered slots -------------------------------------------------------

OFFERED = [
    Slot(local(25, 15).astimezone(UTC), local(25, 15, 30).astimezone(UTC)),  # Wed 3:00 pm
    Slot(local(26, 10).astimezone(UTC), local(26, 10, 30).astimezone(UTC)),  # Thu 10:00 am
    Slot(local(28, 17).astimezone(UTC), local(28, 17, 30).astimezone(UTC)),  # Sat 5:00 pm
]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("the first one", 0),
        ("First one pls", 0),
        ("1", 0),
        ("2.", 1),
        ("option 2", 1),
        ("Option 3 please", 2),
        ("#2", 1),
        ("no. 3", 2),
        ("the second", 1),
        ("second", 1),
        ("2nd", 1),
        ("the 2nd one works", 1),
        ("third option", 2),
        ("the last one", 2),
        ("last", 2),
        ("the 3pm one", 0),
        ("3pm works", 0),
        ("3pm is good for me", 0),
        ("the 10am", 1),
        ("Saturday works", 2),
        ("sat can", 2),
        ("Thursday", 1),
        ("tomorrow is fine", 1),
        ("the morning one", 1),
        ("evening slot", 2),
        ("Sat 28 Nov, 5:00 pm", 2),  # a list reply's title
        ("sat 28 nov 5:00 pm", 2),
        ("28 Nov", 2),
        ("Thursday 10am", 1),
    ],
)
def test_pick_offered(text: str, index: int) -> None:
    assert pick_offered(text, OFFERED, SG, now=NOW) == OFFERED[index]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hmm",
        "none of these work",
        "not the first one",
        "can't make it",
        "any other time?",
        "4",  # only three were offered
        "option 5",
        "first, can you tell me the price?",
        "what about Monday?",
        "the 11am one",
        "pm",
        "ok",
    ],
)
def test_pick_offered_refuses_what_is_unclear(text: str) -> None:
    assert pick_offered(text, OFFERED, SG, now=NOW) is None


def test_pick_offered_needs_one_match_and_a_list() -> None:
    same_day = [
        Slot(local(28, 10).astimezone(UTC), local(28, 10, 30).astimezone(UTC)),
        Slot(local(28, 15).astimezone(UTC), local(28, 15, 30).astimezone(UTC)),
    ]
    assert pick_offered("Saturday works", same_day, SG) is None  # which of the two?
    assert pick_offered("Saturday 3pm", same_day, SG) == same_day[1]
    assert pick_offered("the afternoon one", same_day, SG) == same_day[1]
    assert pick_offered("the first one", [], SG) is None
    # Without `now`, "tomorrow" means nothing; an explicit day still does.
    assert pick_offered("tomorrow", OFFERED, SG) is None
    assert pick_offered("Thursday", OFFERED, SG) == OFFERED[1]


@given(text=st.text(max_size=40))
def test_pick_offered_returns_an_offered_slot_or_none(text: str) -> None:
    chosen = pick_offered(text, OFFERED, SG, now=NOW)
    assert chosen is None or chosen in OFFERED
