"""What a lead means by a time: "tomorrow 3pm", "Sat afternoon", "the second one".

Pure functions, read in the agent's time zone against an injected `now`. The rules, where
English is ambiguous:
- A clock time without am/pm ("at 7", "at 5:30") is read in sensible hours: 8 to 11 are
  morning, 12 is noon, 1 to 7 are afternoon or evening (so "at 7" is 7 pm); with a part of
  the day ("morning at 7") the part decides. "07:30" and "19:30" are taken as written.
- "Saturday" and "this Saturday" are the coming one (today's if it is not over); "next
  Saturday" is the one in next week (weeks start on Monday), as are "this weekend" and "next
  weekend", "this week" and "next week".
- Dates are day first ("28/11"); without a year, the next one that is not over.
- Parts of the day: morning 9-12, lunch 12-14, afternoon 12-17, evening and tonight 17-21,
  after work 18-21.
- Nothing in the past is returned: a weekday or part of the day already over means the next
  one; a time named for today that has passed ("today at 9" at noon) gives None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
PARTS: dict[str, tuple[time, time]] = {
    "morning": (time(9), time(12)),
    "lunch": (time(12), time(14)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time(21)),
    "after work": (time(18), time(21)),
}


@dataclass(frozen=True)
class TimeWindow:
    """When the lead wants to meet (UTC).

    `exact`: the lead named a moment ("tomorrow 3pm"): `start`, and `end` equals it.
    Otherwise the lead named a span ("Saturday afternoon", "next week") and any time inside
    it will do.
    """

    start: datetime
    end: datetime
    exact: bool


class Offered(Protocol):
    """A time offered to the lead, as `pick_offered` reads it (a free slot, typically)."""

    @property
    def start(self) -> datetime: ...

    def label(self, timezone: str) -> str: ...


OfferedT = TypeVar("OfferedT", bound=Offered)


@dataclass(frozen=True)
class Clock:
    """A time of day as written: the hour, the minute and whether am/pm is known."""

    hour: int
    minute: int
    meridiem: str | None  # "am", "pm", or None when unsaid
    as_written: bool = False  # 24-hour or zero-padded ("19:30", "07:30"): no guessing

    def resolve(self, part: str | None) -> time | None:
        """The time of day meant, given the part of the day named with it (if any)."""
        hour = self.hour
        if self.meridiem is not None:
            if not 1 <= hour <= 12:
                return None
            hour = hour % 12 + (12 if self.meridiem == "pm" else 0)
        elif not self.as_written:
            if part == "morning":
                hour = hour if hour == 12 else hour % 12
            elif part is not None:
                hour = hour % 12 + 12
            elif 1 <= hour <= 7:
                hour += 12
        if not (0 <= hour <= 23 and 0 <= self.minute <= 59):
            return None
        return time(hour, self.minute)

    def matches(self, moment: time) -> bool:
        """True when a time of day could be what was written (am or pm when unsaid)."""
        if self.minute != moment.minute:
            return False
        if self.meridiem is not None or self.as_written:
            return self.resolve(None) == moment
        return self.hour % 12 == moment.hour % 12


# --- reading the text -------------------------------------------------------------------

_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b\.?"
)
_UNITS = (
    r"(?![:\d]|\.\d|\s*(?:%|k\b|m\b|mil|bed|br\b|bhk|room|sqft|sq|psf|year|yr|min|hour|hr|"
    r"day|week|month|/))"
)
_CLOCK_MERIDIEM = re.compile(
    r"(?<![\d/.:$])(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?)(?![a-z])"
)
_CLOCK_COLON = re.compile(r"(?<![\d/.:$])(\d{1,2}):(\d{2})(?![\d:])")
_CLOCK_AT = re.compile(
    r"\b(?:at|@|around|abt|about|by|after|from)\s+(\d{1,2})(?:\.(\d{2}))?\b" + _UNITS
)
_CLOCK_OCLOCK = re.compile(r"\b(\d{1,2})\s*o'?\s*clock\b")
_NOON = re.compile(r"\b(noon|midday)\b")
_PART = re.compile(
    r"\b(morning|mornings|lunch\s*time|lunchtime|lunch|afternoon|afternoons|arvo|"
    r"evening|evenings|tonight|tonite|night|after\s+work)\b"
)
_TODAY = re.compile(r"\b(today|tdy|this\s+(?=morning|afternoon|evening)|tonight|tonite)\b")
_DAY_AFTER = re.compile(r"\b(?:the\s+)?day\s+after\s+(?:tomorrow|tmr|tmrw|tml)\b")
_TOMORROW = re.compile(r"\b(tomorrow|tomorow|tommorow|tommorrow|tmr|tmrw|tml|tmw)\b")
_WEEKDAY = re.compile(
    r"\b(?:(this|next|coming|on|by|until|every)\s+)?"
    r"(mon|tue|tues|wed|weds|thu|thur|thurs|fri|sat|sun)(?:day|nesday|sday|rsday|urday)?\b"
    r"(?:\s+(next\s+week))?"
)
_AMBIGUOUS_ABBREVIATIONS = {"mon", "wed", "sat", "sun"}
_DAY_MONTH = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"(?:\s+(\d{4}))?\b")
_MONTH_DAY = re.compile(
    r"\b" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b(?!\s*(?:a\.?m|p\.?m|:|\.\d))"
    r"(?:,?\s+(\d{4})\b)?"
)
# Day first; with dashes only when a year follows ("2-3 bedrooms" is no date), never 24/7.
_NUMERIC_DATE = re.compile(
    r"(?<![\d.:/$-])(?!24/7\b)(\d{1,2})(?:/(\d{1,2})(?:/(\d{4}|\d{2}))?|-(\d{1,2})-(\d{4}|\d{2}))"
    r"(?![\d:/-])"
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DAY_OF_MONTH = re.compile(r"\bthe\s+(\d{1,2})(?:st|nd|rd|th)\b(?!\s+(?:one|option|slot))")
_IN_DAYS = re.compile(r"\bin\s+(\d{1,2}|a|one|two|three)\s+days?\b")
_IN_HOURS = re.compile(r"\bin\s+(\d{1,2}|an|a|one|two|three)\s+(hours?|hrs?)\b")
_WEEKEND = re.compile(r"\b(?:(this|next|coming|the)\s+)?(weekend|wkend)\b")
_WEEK = re.compile(r"\b(this|next)\s+week\b(?!\s*(?:mon|tue|wed|thu|fri|sat|sun))")
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}


def _normalize(text: str) -> str:
    # Same length as the text, so positions found here point at the original spelling.
    table = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2013": "-", "\u2014": "-"})
    return text.translate(table).lower()


def find_clock(text: str) -> Clock | None:
    """The first clock time written in the (normalized) text."""
    found: list[tuple[int, Clock]] = []
    for match in _CLOCK_MERIDIEM.finditer(text):
        meridiem = "am" if match.group(3).startswith("a") else "pm"
        clock = Clock(int(match.group(1)), int(match.group(2) or 0), meridiem)
        found.append((match.start(), clock))
    for match in _CLOCK_COLON.finditer(text):
        hour_text = match.group(1)
        as_written = int(hour_text) >= 13 or (len(hour_text) == 2 and hour_text.startswith("0"))
        found.append((match.start(), Clock(int(hour_text), int(match.group(2)), None, as_written)))
    for match in _CLOCK_AT.finditer(text):
        found.append((match.start(1), Clock(int(match.group(1)), int(match.group(2) or 0), None)))
    for match in _CLOCK_OCLOCK.finditer(text):
        found.append((match.start(), Clock(int(match.group(1)), 0, None)))
    for match in _NOON.finditer(text):
        found.append((match.start(), Clock(12, 0, "pm")))
    if not found:
        return None
    # Where one time is read several ways ("at 3:30pm"), the most explicit reading wins.
    found.sort(key=lambda item: (item[0], item[1].meridiem is None))
    first = found[0][0]
    same_place = [c for at, c in found if abs(at - first) <= 4]
    return next((c for c in same_place if c.meridiem or c.as_written), same_place[0])


def find_part(text: str) -> str | None:
    """The part of the day named: morning, lunch, afternoon, evening or after work."""
    match = _PART.search(text)
    if match is None:
        return None
    word = match.group(1)
    if word.startswith("morning"):
        return "morning"
    if word.startswith("lunch"):
        return "lunch"
    if word.startswith("afternoon") or word == "arvo":
        return "afternoon"
    if word.startswith("after"):
        return "after work"
    return "evening"


def _weekday_matches(
    text: str, original: str, lenient: bool = False
) -> list[tuple[int, str | None, int, bool]]:
    """Weekdays named: (position, prefix, weekday number, followed by "next week").

    `lenient`: take "sat", "sun" ... as days even without anything saying so (a reply to
    offered times).
    """
    found = []
    for match in _WEEKDAY.finditer(text):
        stem = match.group(2)
        number = [w[:3] for w in WEEKDAYS].index(stem[:3])
        word = match.group(0)[len(match.group(1) or "") :].strip().split()[0]
        if stem in _AMBIGUOUS_ABBREVIATIONS and word == stem and not lenient:
            # "sat", "sun", "wed", "mon" are English words too: only as a day when written
            # as one, or with something that says so around them.
            at = match.start(2)
            capitalised = original[at : at + 1].isupper()
            context = match.group(1) is not None or re.match(
                r"\s+(?:morning|afternoon|evening|night|at\b|\d)", text[match.end(2) :]
            )
            if not (capitalised or context):
                continue
        found.append((match.start(), match.group(1), number, match.group(3) is not None))
    return found


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_number(word: str) -> int:
    return [m[:3] for m in MONTHS].index(word[:3]) + 1


def _next_weekday(today: date, weekday: int) -> date:
    return today + timedelta(days=(weekday - today.weekday()) % 7)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


DayChoices = list[date]


def _dated(year: int | None, month: int, day: int, today: date) -> DayChoices:
    if year is not None:
        if year < 100:
            year += 2000
        found = _safe_date(year, month, day)
        return [found] if found else []
    return [d for y in (today.year, today.year + 1) if (d := _safe_date(y, month, day))]


def find_days(text: str, original: str, today: date) -> DayChoices | None:
    """The dates the first day named may mean, in order of preference (None: no day named)."""
    found: list[tuple[int, DayChoices]] = []
    if match := _DAY_AFTER.search(text):
        found.append((match.start(), [today + timedelta(days=2)]))
    elif match := _TOMORROW.search(text):
        found.append((match.start(), [today + timedelta(days=1)]))
    if match := _TODAY.search(text):
        found.append((match.start(), [today]))
    week_after = re.search(r"\bnext\s+week\b", text) is not None
    for at, prefix, weekday, next_week in _weekday_matches(text, original):
        if prefix == "next" or next_week or (week_after and prefix != "this"):
            found.append((at, [_monday(today) + timedelta(days=7 + weekday)]))
        else:
            coming = _next_weekday(today, weekday)
            found.append((at, [coming, coming + timedelta(days=7)]))
    for match in _ISO_DATE.finditer(text):
        year, month, day = (int(g) for g in match.groups())
        found.append((match.start(), _dated(year, month, day, today)))
    # "28 Nov" and "Nov 28": the groups of the day and of the month, the year is third.
    for pattern, day_group, month_group in ((_DAY_MONTH, 1, 2), (_MONTH_DAY, 2, 1)):
        for match in pattern.finditer(text):
            day, month = int(match.group(day_group)), _month_number(match.group(month_group))
            found.append((match.start(), _dated(_year(match.group(3)), month, day, today)))
    for match in _NUMERIC_DATE.finditer(text):
        month = int(match.group(2) or match.group(4))
        if 1 <= month <= 12:
            written = _year(match.group(3) or match.group(5))
            found.append((match.start(), _dated(written, month, int(match.group(1)), today)))
    for match in _DAY_OF_MONTH.finditer(text):
        following = today.replace(day=1) + timedelta(days=32)
        months = ((today.year, today.month), (following.year, following.month))
        day = int(match.group(1))
        found.append((match.start(), [d for y, m in months if (d := _safe_date(y, m, day))]))
    if match := _IN_DAYS.search(text):
        count = _NUMBER_WORDS.get(match.group(1)) or int(match.group(1))
        found.append((match.start(), [today + timedelta(days=count)]))
    if not found:
        return None
    return min(found, key=lambda item: item[0])[1]


def _year(text: str | None) -> int | None:
    return int(text) if text else None


def _local(day: date, moment: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def _span(text: str, today: date, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    """A weekend or a week named, as UTC bounds."""
    if match := _WEEKEND.search(text):
        monday = _monday(today) + timedelta(days=7 if match.group(1) == "next" else 0)
        saturday = monday + timedelta(days=5)
        return _local(saturday, time(), zone), _local(monday + timedelta(days=7), time(), zone)
    if match := _WEEK.search(text):
        monday = _monday(today) + timedelta(days=7 if match.group(1) == "next" else 0)
        return _local(monday, time(), zone), _local(monday + timedelta(days=7), time(), zone)
    return None


def parse_when(text: str, now: datetime, timezone: str) -> TimeWindow | None:
    """The time or span the lead's words name, in the agent's time zone; None if none is."""
    zone = ZoneInfo(timezone)
    now = now.astimezone(UTC)
    today = now.astimezone(zone).date()
    lowered = _normalize(text)
    clock = find_clock(lowered)
    part = find_part(lowered)
    days = find_days(lowered, text, today)
    if days is None:
        span = _span(lowered, today, zone)
        if span is not None:
            start, end = span
            return TimeWindow(max(start, now), end, exact=False) if end > now else None
        if match := _IN_HOURS.search(lowered):
            hours = _NUMBER_WORDS.get(match.group(1)) or int(match.group(1))
            start = _round_up(now + timedelta(hours=hours))
            return TimeWindow(start, start, exact=True)
        if clock is None and part is None:
            return None
        days = [today, today + timedelta(days=1)]
    if re.search(r"\b(tonight|tonite)\b", lowered):
        part = part if part in ("evening", "after work") else "evening"
    for day in days:
        if clock is not None:
            moment = clock.resolve(part)
            if moment is None:
                return None
            start = _local(day, moment, zone)
            if start > now:
                return TimeWindow(start, start, exact=True)
            continue
        if part is not None:
            begin, finish = PARTS[part]
            start, end = _local(day, begin, zone), _local(day, finish, zone)
        else:
            start, end = _local(day, time(), zone), _local(day + timedelta(days=1), time(), zone)
        if end > now:
            return TimeWindow(max(start, now), end, exact=False)
    return None


def _round_up(moment: datetime) -> datetime:
    quarter = 15 * 60
    seconds = -(-moment.timestamp() // quarter) * quarter
    return datetime.fromtimestamp(seconds, UTC)


# --- choosing among offered slots -------------------------------------------------------

_NEGATION = re.compile(
    r"\b(none|neither|nope|nothing|not|no\s+good|can'?t|cannot|don'?t|doesn'?t|won'?t|"
    r"isn'?t|unable|busy|other\s+(?:time|day|slot)s?)\b"
)
_ORDINALS = {
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "fifth": 5,
    "5th": 5,
    "former": 1,
}
_LAST = re.compile(r"\b(last|latter|final)\b")
_ORDINAL = re.compile(
    r"\b(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|former)\b(?!\s+(?:of\b|"
    + _MONTH
    + r"))"
)
_CHOICE_WORDS = r"(?:one|option|slot|timing|choice)"
_NUMBERED = re.compile(r"(?:\b(?:option|opt|no\.?|number|slot|choice)\s*|#)(\d)\b")
_ONLY_NUMBER = re.compile(r"^\W*(\d)\W*$")
_FILLER = {"the", "one", "pls", "please", "plz", "ok", "okay", "is", "fine", "works", "good"}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.casefold())


def _by_position(text: str, offered: Sequence[OfferedT]) -> OfferedT | None:
    """The slot chosen by its place in the list: "1", "option 2", "the second", "last"."""
    for pattern in (_ONLY_NUMBER, _NUMBERED):
        if match := pattern.search(text):
            index = int(match.group(1))
            return offered[index - 1] if 1 <= index <= len(offered) else None
    words = re.findall(r"[a-z0-9']+", text)
    short = len([w for w in words if w not in _FILLER]) <= 2
    match = _ORDINAL.search(text)
    if match and (
        short
        or re.match(r"\s+" + _CHOICE_WORDS, text[match.end() :])
        or text[: match.start()].rstrip().endswith("the")
    ):
        index = _ORDINALS[match.group(1)]
        return offered[index - 1] if index <= len(offered) else None
    match = _LAST.search(text)
    if match and (short or re.match(r"\s+" + _CHOICE_WORDS, text[match.end() :])):
        return offered[-1]
    return None


def pick_offered(
    text: str, offered: Sequence[OfferedT], timezone: str, now: datetime | None = None
) -> OfferedT | None:
    """The offered slot the lead's reply chooses, or None when it chooses none or is unclear.

    Understands a list reply's id or title equal to a slot's label, a position ("1",
    "option 2", "the second", "the last one"), or what sets one slot apart: its day
    ("Saturday works", "tomorrow" when `now` is given), time ("the 3pm one") or part of day.
    """
    if not offered:
        return None
    zone = ZoneInfo(timezone)
    key = _key(text)
    for slot in offered:
        if key and key == _key(slot.label(timezone)):
            return slot
    lowered = _normalize(text).strip()
    if _NEGATION.search(lowered):
        return None
    chosen = _by_position(lowered, offered)
    if chosen is not None:
        return chosen
    tests: list[Callable[[datetime], bool]] = []
    clock = find_clock(lowered)
    if clock is None and (bare := re.search(r"\bthe\s+(\d{1,2})\s+(?:one|option|slot)\b", lowered)):
        clock = Clock(int(bare.group(1)), 0, None)
    if clock is not None:
        tests.append(lambda local, c=clock: c.matches(local.time()))  # type: ignore[misc]
    part = find_part(lowered)
    if part is not None:
        begin, finish = PARTS[part]
        tests.append(lambda local, b=begin, f=finish: b <= local.time() < f)  # type: ignore[misc]
    today = (now or offered[0].start).astimezone(zone).date()
    weekdays = {number for _, _, number, _ in _weekday_matches(lowered, text, lenient=True)}
    days = find_days(lowered, text, today)
    if now is None and any(p.search(lowered) for p in (_TODAY, _TOMORROW, _DAY_AFTER, _IN_DAYS)):
        days = None  # "tomorrow" means nothing without knowing today
    if weekdays:
        tests.append(lambda local: local.weekday() in weekdays)
    elif days is not None:
        tests.append(lambda local, ds=set(days): local.date() in ds)  # type: ignore[misc]
    if not tests:
        return None
    matching = [
        slot for slot in offered if all(test(slot.start.astimezone(zone)) for test in tests)
    ]
    return matching[0] if len(matching) == 1 else None
