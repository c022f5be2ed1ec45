"""Calendar files (RFC 5545): structure, UTC times, escaping and line folding."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ics import CalendarEvent, escape_text, fold, render

EVENT = CalendarEvent(
    uid="apt_123@realtybot",
    stamp=datetime(2026, 11, 20, 8, 30, 15, tzinfo=UTC),
    start=datetime(2026, 11, 28, 15, tzinfo=timezone(timedelta(hours=8))),
    end=datetime(2026, 11, 28, 15, 30, tzinfo=timezone(timedelta(hours=8))),
    summary="Appointment with Jason Tan",
    description="Viewing; bring ID, and your questions.\nSee you!",
    organizer_name='Jason "JT" Tan',
    organizer_uri="tel:+6591234567",
    sequence=2,
)


def unfold(text: str) -> list[str]:
    """The content lines of a calendar file, continuations joined."""
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    return text[:-2].replace("\r\n ", "").split("\r\n")


def properties(text: str) -> dict[str, str]:
    """Property name (with parameters) -> raw value, for the VEVENT's lines."""
    lines = unfold(text)
    event = lines[lines.index("BEGIN:VEVENT") + 1 : lines.index("END:VEVENT")]
    return dict(line.split(":", 1) for line in event)


def test_one_event_in_a_calendar_with_utc_times() -> None:
    text = render(EVENT)
    lines = unfold(text)
    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"]
    assert lines[-2:] == ["END:VEVENT", "END:VCALENDAR"]
    assert any(line.startswith("PRODID:") for line in lines)
    found = properties(text)
    assert found["UID"] == "apt_123@realtybot"
    assert found["DTSTAMP"] == "20261120T083015Z"
    assert found["DTSTART"] == "20261128T070000Z"
    assert found["DTEND"] == "20261128T073000Z"
    assert found["SEQUENCE"] == "2" and found["STATUS"] == "CONFIRMED"
    assert found["SUMMARY"] == "Appointment with Jason Tan"
    # A parameter value is quoted and may not hold quotes itself.
    assert found['ORGANIZER;CN="Jason JT Tan"'] == "tel:+6591234567"


def test_text_is_escaped() -> None:
    found = properties(render(EVENT))
    assert found["DESCRIPTION"] == "Viewing\\; bring ID\\, and your questions.\\nSee you!"
    assert escape_text("a\\b") == "a\\\\b"
    assert escape_text("one\r\ntwo\rthree") == "one\\ntwo\\nthree"
    assert escape_text("bell\x07\ttab") == "bell\ttab"  # no control characters but tab


def test_a_cancelled_appointment_says_so() -> None:
    cancelled = CalendarEvent(**{**EVENT.__dict__, "cancelled": True, "sequence": 3})
    found = properties(render(cancelled))
    assert found["STATUS"] == "CANCELLED" and found["SEQUENCE"] == "3"


def test_long_lines_are_folded_at_75_octets_without_splitting_characters() -> None:
    description = "Viewing at Tampines 新加坡公寓 " * 20 + "é" * 100
    text = render(CalendarEvent(**{**EVENT.__dict__, "description": description}))
    for line in text.split("\r\n"):
        assert len(line.encode()) <= 75
        line.encode().decode()  # every piece is whole UTF-8
    assert properties(text)["DESCRIPTION"] == escape_text(description)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render(CalendarEvent(**{**EVENT.__dict__, "start": datetime(2026, 11, 28, 15)}))


@given(st.text(max_size=400))
def test_folding_round_trips(value: str) -> None:
    line = "DESCRIPTION:" + escape_text(value)
    folded = fold(line)
    assert folded.replace("\r\n ", "") == line
    assert all(len(part.encode()) <= 75 for part in folded.split("\r\n"))
    assert not re.search(r"\r\n(?! )", folded)
