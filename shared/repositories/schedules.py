"""Scheduled messages: follow-ups to leads who went quiet and appointment reminders.

One document per planned message, its `_id` derived from what it follows (the bot's reply
and the step, or the appointment, its start and how long before it), so planning the same
message twice stores it once, on MongoDB and FerretDB alike. A planned message is `pending`
until the brain's sweeper handles it when due (`sent` or `skipped`, with the reason) or a
newer plan replaces it (`cancelled`, with the reason). Writes to one thread's schedule are
made under the thread's lease, so no two of them interleave.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pymongo import ASCENDING

from shared.ids import derived_id
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, is_duplicate, with_retry

ScheduleKind = Literal["follow_up", "reminder"]
ScheduleStatus = Literal["pending", "sent", "cancelled", "skipped"]


def follow_up_id(thread_id: str, step: int, anchor: str) -> str:
    """The id of step `step` of the follow-ups after the reply `anchor`."""
    return derived_id("fup", thread_id, str(step), anchor)


def reminder_id(appointment_id: str, hours_before: float, start: datetime) -> str:
    """The id of the reminder `hours_before` an appointment starting at `start`."""
    return derived_id("rem", appointment_id, f"{hours_before:g}", _iso(start))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def store_time(moment: datetime) -> datetime:
    """A time as the store keeps it (milliseconds), so what is written equals what is read."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class ScheduledMessage(StoredRecord):
    """A follow-up or reminder planned for a thread."""

    org_id: str
    agent_id: str
    thread_id: str
    lead_id: str
    kind: ScheduleKind
    step: int  # follow-ups: 1, 2 ... in the sequence; reminders: 1, 2 ... in time order
    due_at: datetime
    status: ScheduleStatus = "pending"
    reason: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    command_id: str | None = None  # the send command it became
    # Follow-ups: the bot reply the lead left unanswered, and when it was made.
    anchor: str | None = None
    anchor_at: datetime | None = None
    # Reminders: the appointment, its start when the reminder was planned, and the lead time.
    appointment_id: str | None = None
    appointment_start: datetime | None = None
    hours_before: float | None = None


class ScheduleRepository:
    """Plan, find and settle a thread's scheduled messages."""

    def __init__(self, store: Store) -> None:
        self._schedules = store.db["scheduled_messages"]

    async def plan(self, schedule: ScheduledMessage) -> bool:
        """Store a planned message; False when it was planned already (whatever its status)."""
        doc = schedule.model_dump(by_alias=True)
        try:
            await with_retry(lambda: self._schedules.insert_one(doc))
        except Exception as exc:
            if is_duplicate(exc):
                return False
            raise
        return True

    async def get(self, org_id: str, schedule_id: str) -> ScheduledMessage | None:
        """One scheduled message of the organization."""
        doc = await with_retry(
            lambda: self._schedules.find_one({"_id": schedule_id, "org_id": org_id})
        )
        return ScheduledMessage.model_validate(doc) if doc else None

    async def due(self, now: datetime, limit: int) -> list[ScheduledMessage]:
        """Pending messages due by `now`, the most overdue first.

        The one query across organizations: finding what is due is the sweeper's job for
        all of them; everything it then does to a message filters by the message's org_id.
        """
        cursor = (
            self._schedules.find({"status": "pending", "due_at": {"$lte": now}})
            .sort([("due_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        docs = await with_retry(lambda: cursor.to_list())
        return [ScheduledMessage.model_validate(doc) for doc in docs]

    async def for_thread(
        self, org_id: str, thread_id: str, kind: ScheduleKind | None = None
    ) -> list[ScheduledMessage]:
        """A thread's scheduled messages (of one kind), by due time."""
        query: Document = {"org_id": org_id, "thread_id": thread_id}
        if kind is not None:
            query["kind"] = kind
        cursor = self._schedules.find(query).sort([("due_at", ASCENDING), ("_id", ASCENDING)])
        docs = await with_retry(lambda: cursor.to_list())
        return [ScheduledMessage.model_validate(doc) for doc in docs]

    async def cancel_pending(
        self,
        org_id: str,
        thread_id: str,
        kind: ScheduleKind,
        reason: str,
        at: datetime,
        keep: list[str] | None = None,
    ) -> int:
        """Cancel a thread's pending messages of a kind, except `keep`; how many."""
        query: Document = {
            "org_id": org_id,
            "thread_id": thread_id,
            "kind": kind,
            "status": "pending",
        }
        if keep:
            query["_id"] = {"$nin": keep}
        change = {"status": "cancelled", "reason": reason, "finished_at": store_time(at)}
        result = await with_retry(lambda: self._schedules.update_many(query, {"$set": change}))
        return int(result.modified_count)

    async def finish(
        self,
        org_id: str,
        schedule_id: str,
        status: Literal["sent", "skipped"],
        at: datetime,
        *,
        reason: str | None = None,
        command_id: str | None = None,
    ) -> None:
        """Record what became of a due message."""
        change: Document = {"status": status, "reason": reason, "finished_at": store_time(at)}
        if command_id is not None:
            change["command_id"] = command_id
        await with_retry(
            lambda: self._schedules.update_one(
                {"_id": schedule_id, "org_id": org_id, "status": "pending"}, {"$set": change}
            )
        )

    async def postpone(self, org_id: str, schedule_id: str, due_at: datetime) -> None:
        """Move a pending message's due time (it may not go yet)."""
        await with_retry(
            lambda: self._schedules.update_one(
                {"_id": schedule_id, "org_id": org_id, "status": "pending"},
                {"$set": {"due_at": store_time(due_at)}},
            )
        )
