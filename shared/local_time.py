"""Times as people read them, in a given time zone (always English, whatever the locale)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def when_label(moment: datetime, timezone: str) -> str:
    """A moment as a lead reads it in a time zone: "Sat 28 Nov, 3:00 pm"."""
    local = moment.astimezone(ZoneInfo(timezone))
    hour = local.hour % 12 or 12
    meridiem = "am" if local.hour < 12 else "pm"
    return (
        f"{DAY_NAMES[local.weekday()]} {local.day} {MONTH_NAMES[local.month - 1]}, "
        f"{hour}:{local.minute:02d} {meridiem}"
    )
