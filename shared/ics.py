"""iCalendar (RFC 5545) files for appointments: one VEVENT in a VCALENDAR.

Times are written in UTC (`...Z`), so no VTIMEZONE is needed; text values are escaped
(backslash, semicolon, comma, newline) and lines are folded at 75 octets without splitting
a UTF-8 character, with CRLF line ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PRODUCT_ID = "-//realtybot//appointments//EN"
MEDIA_TYPE = "text/calendar"
MAX_LINE_OCTETS = 75


@dataclass(frozen=True)
class CalendarEvent:
    """What a calendar file says about one appointment."""

    uid: str
    stamp: datetime  # when the appointment was last changed
    start: datetime
    end: datetime
    summary: str
    description: str
    organizer_name: str
    organizer_uri: str  # e.g. "tel:+6591234567"
    cancelled: bool = False
    sequence: int = 0


def escape_text(value: str) -> str:
    """A TEXT value with RFC 5545's escapes (section 3.3.11)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "".join(ch for ch in value if ch in "\t\n" or (ch >= " " and ch != "\x7f"))
    for raw, escaped in (("\\", "\\\\"), (";", "\\;"), (",", "\\,"), ("\n", "\\n")):
        value = value.replace(raw, escaped)
    return value


def quote_parameter(value: str) -> str:
    """A parameter value in double quotes (which it may not contain), controls removed."""
    cleaned = "".join(ch for ch in value if ch >= " " and ch not in '"\x7f')
    return f'"{cleaned}"'


def fold(line: str) -> str:
    """A content line folded into lines of at most 75 octets (continuations start with a
    space), never inside a UTF-8 character."""
    parts: list[str] = []
    current, size, limit = "", 0, MAX_LINE_OCTETS
    for ch in line:
        width = len(ch.encode())
        if size + width > limit:
            parts.append(current)
            current, size, limit = "", 0, MAX_LINE_OCTETS - 1  # the leading space counts
        current += ch
        size += width
    parts.append(current)
    return "\r\n ".join(parts)


def utc_stamp(moment: datetime) -> str:
    """A DATE-TIME in UTC form: 20261128T070000Z."""
    if moment.tzinfo is None:
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def render(event: CalendarEvent) -> str:
    """The calendar file of one event."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODUCT_ID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{escape_text(event.uid)}",
        f"DTSTAMP:{utc_stamp(event.stamp)}",
        f"DTSTART:{utc_stamp(event.start)}",
        f"DTEND:{utc_stamp(event.end)}",
        f"SEQUENCE:{event.sequence}",
        f"STATUS:{'CANCELLED' if event.cancelled else 'CONFIRMED'}",
        f"SUMMARY:{escape_text(event.summary)}",
        f"DESCRIPTION:{escape_text(event.description)}",
        f"ORGANIZER;CN={quote_parameter(event.organizer_name)}:{event.organizer_uri}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(fold(line) + "\r\n" for line in lines)
