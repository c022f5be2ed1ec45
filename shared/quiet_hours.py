"""Quiet hours: when business-initiated messages (follow-ups, reminders) must wait.

Hours are wall-clock times in the agent's time zone, so they follow daylight-saving
changes; a quiet period may wrap past midnight (21:00 to 09:00, the default).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class QuietHours(BaseModel):
    """From `start` to `end` (local time) nothing business-initiated is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(default="21:00", pattern=HHMM)
    end: str = Field(default="09:00", pattern=HHMM)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ (omit quiet hours to have none)")
        return self

    def wait_seconds(self, now: datetime, timezone: str) -> float:
        """How long from `now` until sending is allowed again (0 outside quiet hours)."""
        zone = ZoneInfo(timezone)
        # In UTC, so the wait below is absolute time: two datetimes of one zone would be
        # subtracted as wall-clock times, an hour off across a daylight-saving change.
        now = now.astimezone(UTC)
        local = now.astimezone(zone)
        start, end = _clock(self.start), _clock(self.end)
        moment = local.time()
        # A period from 21:00 to 09:00 wraps past midnight.
        quiet = start <= moment < end if start < end else moment >= start or moment < end
        if not quiet:
            return 0.0
        day = local.date() if moment < end else local.date() + timedelta(days=1)
        # Wall-clock end of the quiet period; fold=0 picks the earlier of a repeated hour.
        resume = datetime.combine(day, end, tzinfo=zone)
        return max((resume - now).total_seconds(), 0.0)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
