"""Planning follow-ups to leads who went quiet, and appointment reminders.

Every bot reply replaces the thread's pending follow-ups with step 1 of a new sequence
(`FOLLOW_UP_DELAYS_HOURS` after that reply), unless the reply hands the thread over, closes
the conversation, the lead said they are not interested, or the lead has a booking; a
booking or a reschedule plans its reminders (`REMINDER_HOURS_BEFORE` its start, those still
ahead) and retires the ones of an older time; a cancellation retires them. Planning runs
under the thread's lease and is idempotent under the reply's id.

Every plan and every outcome is in `scheduled_messages` with its reason; the counters in
`services.brain.metrics` give the totals. `sweeper.py` sends what is due.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from services.brain.metrics import SCHEDULED
from services.brain.reply.model import Context, Decision, Understanding
from shared.logs import get_logger
from shared.models import utcnow
from shared.repositories.appointments import Appointment, AppointmentRepository
from shared.repositories.schedules import (
    ScheduledMessage,
    ScheduleKind,
    ScheduleRepository,
    follow_up_id,
    reminder_id,
    store_time,
)
from shared.settings import Settings
from shared.store import Store

log = get_logger(__name__)
Clock = Callable[[], datetime]

# Replies after which the lead gets no follow-up, and the reason their pending ones end.
NO_FOLLOW_UP_AFTER = {
    "handoff": "handed_off",
    "close": "conversation_closed",
    "confirm_booking": "booked",
    "reschedule": "booked",
}


class Scheduler:
    """Plan a thread's follow-ups and reminders (called under the thread's lease)."""

    def __init__(self, store: Store, settings: Settings, now: Clock = utcnow) -> None:
        self._schedules = ScheduleRepository(store)
        self._appointments = AppointmentRepository(store)
        self._delays = [timedelta(hours=h) for h in settings.follow_up_delays_hours]
        self._reminders = sorted(settings.reminder_hours_before, reverse=True)
        self._now = now

    @property
    def follow_up_steps(self) -> int:
        """How many follow-ups a sequence has."""
        return len(self._delays)

    async def after_reply(
        self, context: Context, understanding: Understanding, decision: Decision, reply_id: str
    ) -> None:
        """Plan what follows a bot reply: a new follow-up sequence, or a booking's reminders.

        Idempotent under the reply's id, so a re-run after a crash plans the same messages.
        """
        now = self._now()
        booked = await self._appointments.active_for_thread(context.org_id, context.thread_id, now)
        if decision.action in ("confirm_booking", "reschedule", "cancel"):
            await self.plan_reminders(context.org_id, context.thread_id, context.lead_id, booked)
        reason = NO_FOLLOW_UP_AFTER.get(decision.action)
        if reason is None and booked is not None:
            reason = "booked"
        if reason is None and "not_interested" in understanding.requests:
            reason = "not_interested"
        keep: list[str] = []
        if reason is None and self._delays:
            first = ScheduledMessage(
                id=follow_up_id(context.thread_id, 1, reply_id),
                org_id=context.org_id,
                agent_id=context.agent_id,
                thread_id=context.thread_id,
                lead_id=context.lead_id,
                kind="follow_up",
                step=1,
                due_at=store_time(now + self._delays[0]),
                created_at=store_time(now),
                anchor=reply_id,
                anchor_at=store_time(now),
            )
            await self._plan(first)
            keep.append(first.id)
        await self._cancel(
            context.org_id, context.thread_id, "follow_up", reason or "lead_replied", keep
        )

    async def plan_reminders(
        self, org_id: str, thread_id: str, lead_id: str, appointment: Appointment | None
    ) -> None:
        """Reminders for the thread's booked appointment (those still ahead); others retired."""
        now = self._now()
        keep: list[str] = []
        if appointment is not None:
            for step, hours in enumerate(self._reminders, 1):
                due = appointment.start - timedelta(hours=hours)
                if due <= now:
                    continue
                reminder = ScheduledMessage(
                    id=reminder_id(appointment.id, hours, appointment.start),
                    org_id=org_id,
                    agent_id=appointment.agent_id,
                    thread_id=thread_id,
                    lead_id=lead_id,
                    kind="reminder",
                    step=step,
                    due_at=store_time(due),
                    created_at=store_time(now),
                    appointment_id=appointment.id,
                    appointment_start=store_time(appointment.start),
                    hours_before=hours,
                )
                await self._plan(reminder)
                keep.append(reminder.id)
        reason = "appointment_moved" if appointment is not None else "appointment_cancelled"
        await self._cancel(org_id, thread_id, "reminder", reason, keep)

    def next_follow_up(self, done: ScheduledMessage, now: datetime) -> ScheduledMessage | None:
        """The step after a follow-up that went (or was skipped), or None after the last.

        Step k is due its delay after the reply the sequence follows; when that time has
        passed already (the service was down), one gap between the delays after now.
        """
        index = done.step  # the next step's index among the delays
        if done.anchor is None or done.anchor_at is None or index >= len(self._delays):
            return None
        due = done.anchor_at + self._delays[index]
        if due <= now:
            due = now + (self._delays[index] - self._delays[index - 1])
        return done.model_copy(
            update={
                "id": follow_up_id(done.thread_id, index + 1, done.anchor),
                "step": index + 1,
                "due_at": store_time(due),
                "created_at": store_time(now),
                "status": "pending",
                "reason": None,
                "finished_at": None,
                "command_id": None,
            }
        )

    async def plan(self, schedule: ScheduledMessage) -> None:
        """Store a planned message (once, whoever plans it)."""
        await self._plan(schedule)

    async def _plan(self, schedule: ScheduledMessage) -> None:
        if await self._schedules.plan(schedule):
            SCHEDULED.labels(schedule.kind, "planned").inc()
            log.info(
                "message scheduled",
                kind=schedule.kind,
                step=schedule.step,
                due_at=schedule.due_at.isoformat(),
                thread_id=schedule.thread_id,
            )

    async def _cancel(
        self, org_id: str, thread_id: str, kind: ScheduleKind, reason: str, keep: list[str]
    ) -> None:
        cancelled = await self._schedules.cancel_pending(
            org_id, thread_id, kind, reason, self._now(), keep
        )
        if cancelled:
            SCHEDULED.labels(kind, "cancelled").inc(cancelled)
            log.info("scheduled messages cancelled", kind=kind, reason=reason, count=cancelled)
