"""Follow-ups to leads who went quiet, and appointment reminders.

Planning: every bot reply replaces the thread's pending follow-ups with step 1 of a new
sequence (`FOLLOW_UP_DELAYS_HOURS` after that reply), unless the reply hands the thread
over, closes the conversation, the lead said they are not interested, or the lead has a
booking; a booking or a reschedule plans its reminders (`REMINDER_HOURS_BEFORE` its start,
those still ahead) and retires the ones of an older time; a cancellation retires them.

Sending: the sweeper, started by every brain replica, looks every
`SCHEDULER_INTERVAL_SECONDS` for pending messages that are due. For each one it takes the
thread's lease (so it never interleaves with a reply being made, or with another replica's
sweeper), checks again whether the message should still go, and stores and publishes a send
command whose id derives from the message's, as the brain does with replies. A restart or a
second replica therefore finds the stored command instead of making another, and outbound's
per-bubble claims send it once. Quiet hours hold a message in the schedule (its due time
moves to their end), so a lead who writes overnight overtakes it before it is ever a command.

Every plan and every outcome is in `scheduled_messages` with its reason; the counters below
give the totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.brain.model import Context, Decision, Profile, Understanding
from shared.broker import Broker
from shared.ids import derived_id
from shared.local_time import when_label
from shared.logs import get_logger
from shared.models import Bubble, SendCommand, utcnow
from shared.quiet_hours import QuietHours
from shared.replies import ReplyOutbox
from shared.repositories.agents import Agent, AgentDirectory, Persona
from shared.repositories.appointments import Appointment, AppointmentRepository
from shared.repositories.consents import ConsentRepository
from shared.repositories.leases import ThreadLeases
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.replies import ReplyRepository
from shared.repositories.schedules import (
    ScheduledMessage,
    ScheduleKind,
    ScheduleRepository,
    follow_up_id,
    reminder_id,
    store_time,
)
from shared.repositories.templates import TemplateRepository, first_name_of
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Document, Store, with_retry
from shared.whatsapp import SESSION_WINDOW

log = get_logger(__name__)
Clock = Callable[[], datetime]

SCHEDULED = Counter(
    "realtybot_scheduled_messages_total",
    "Follow-ups and reminders by kind and outcome: planned, cancelled (replaced before they "
    "were due), sent, skipped (see the reasons), held (quiet hours), failed (tried again).",
    ["kind", "outcome"],
)
SKIPPED = Counter(
    "realtybot_scheduled_messages_skipped_total",
    "Due follow-ups and reminders that were not sent, by kind and reason.",
    ["kind", "reason"],
)
SWEEPS = Counter(
    "realtybot_scheduler_sweeps_total",
    "Looks for due follow-ups and reminders, by outcome (ok, failed).",
    ["outcome"],
)

# Replies after which the lead gets no follow-up, and the reason their pending ones end.
NO_FOLLOW_UP_AFTER = {
    "handoff": "handed_off",
    "close": "conversation_closed",
    "confirm_booking": "booked",
    "reschedule": "booked",
}
# A follow-up skipped for one of these still leaves the later steps of its sequence.
STEP_ONLY_REASONS = ("window_closed",)
HELLO = {"friendly": "Hi", "professional": "Hello", "casual": "Hey"}
THINGS = {
    "condo": "condo",
    "hdb": "HDB flat",
    "landed": "landed home",
    "executive_condo": "executive condo",
    "commercial": "commercial space",
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


class Sweeper:
    """Send due follow-ups and reminders, each once, from any number of brain replicas."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        agents: AgentDirectory,
        settings: Settings,
        now: Clock = utcnow,
        owner: str | None = None,
    ) -> None:
        self._agents = agents
        self._now = now
        self._interval = settings.scheduler_interval_seconds
        self._batch = settings.scheduler_batch_size
        self._scheduler = Scheduler(store, settings, now)
        self._schedules = ScheduleRepository(store)
        self._leases = ThreadLeases(store, settings.lease_seconds)
        self._outbox = ReplyOutbox(store, broker)
        self._replies = ReplyRepository(store)
        self._threads = ThreadRepository(store)
        self._consents = ConsentRepository(store)
        self._appointments = AppointmentRepository(store)
        self._templates = TemplateRepository(store)
        self._orgs = OrganizationRepository(store)
        self._leads = store.db["leads"]
        self._messages = store.db["messages"]
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:sweeper"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep in the background until `stop`."""
        self._task = asyncio.create_task(self.run(), name="scheduled-messages-sweeper")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish the message in hand (within `grace_seconds`), then stop sweeping."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_seconds)
        except TimeoutError:
            # Whatever it held is safe to drop: its lease expires, the message stays pending.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def run(self) -> None:
        """Sweep every interval until stopped."""
        while not self._stopping.is_set():
            try:
                await self.sweep()
                SWEEPS.labels("ok").inc()
            except Exception as exc:
                SWEEPS.labels("failed").inc()
                log.warning("sweep failed; trying again next interval", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def sweep(self) -> int:
        """Handle the messages due now; how many send commands were published."""
        due = await self._schedules.due(self._now(), self._batch)
        random.shuffle(due)  # replicas sweeping at once start at different threads
        published = 0
        for schedule in due:
            if self._stopping.is_set():
                break
            try:
                published += await self._handle(schedule)
            except Exception as exc:
                SCHEDULED.labels(schedule.kind, "failed").inc()
                log.warning(
                    "scheduled message failed; tried again next sweep",
                    kind=schedule.kind,
                    thread_id=schedule.thread_id,
                    error=str(exc),
                    exc_info=exc,
                )
        return published

    async def _handle(self, schedule: ScheduledMessage) -> int:
        """Under the thread's lease: send the message if it is still due and wanted."""
        lease = await self._leases.acquire(schedule.thread_id, self._owner)
        if lease is None:
            return 0  # a reply is being made, or another sweeper has it: next sweep
        try:
            # A command an interrupted sweep (or reply) stored goes out before anything else.
            await self._outbox.publish_pending(schedule.org_id, schedule.thread_id)
            current = await self._schedules.get(schedule.org_id, schedule.id)
            if current is None or current.status != "pending" or current.due_at > self._now():
                return 0  # done by another replica, replaced or moved meanwhile
            return await self._send(current)
        finally:
            await self._leases.release(lease)

    async def _send(self, schedule: ScheduledMessage) -> int:
        now = self._now()
        command_id = derived_id("sch", schedule.id)
        if await self._replies.exists(schedule.org_id, command_id):
            # Stored (and now published) by a sweep interrupted before it finished.
            await self._sent(schedule, command_id, now)
            return 0
        agent = await self._agents.by_id(schedule.agent_id)
        thread = await self._threads.get(schedule.org_id, schedule.thread_id)
        lead = await with_retry(lambda: self._leads.find_one({"_id": schedule.lead_id}))
        reason = await self._reason_not_to_send(schedule, agent, thread, lead, now)
        if reason is not None:
            await self._skip(schedule, reason, now)
            return 0
        assert agent is not None and thread is not None and lead is not None
        wait = await self._quiet_wait(agent, now)
        if wait > 0:
            await self._schedules.postpone(
                schedule.org_id, schedule.id, now + timedelta(seconds=wait)
            )
            SCHEDULED.labels(schedule.kind, "held").inc()
            log.info("held for quiet hours", kind=schedule.kind, thread_id=schedule.thread_id)
            return 0
        name = _lead_name(thread, lead, agent.org_id)
        if schedule.kind == "follow_up":
            steps = self._scheduler.follow_up_steps
            text = follow_up_text(schedule.step, steps, agent, name, _profile(thread))
            template_id, params = agent.follow_up_template_id, [first_name_of(name)]
        else:
            start = schedule.appointment_start or now
            text = reminder_text(agent, name, start, now)
            template_id = agent.reminder_template_id
            params = [first_name_of(name), when_label(start, agent.timezone)]
        fallback = await self._templates.filled(agent.org_id, agent.id, template_id, params)
        last_inbound = thread.get("last_inbound_at")
        window_open = last_inbound is not None and now - last_inbound <= SESSION_WINDOW
        if not window_open and not fallback:
            await self._skip(schedule, "window_closed", now)  # free text may not go, no template
            return 0
        command = SendCommand(
            event_id=command_id,
            command_id=command_id,
            org_id=schedule.org_id,
            agent_id=schedule.agent_id,
            thread_id=schedule.thread_id,
            lead_id=schedule.lead_id,
            destination=lead["phone"],
            bubbles=[Bubble(text=text)],
            created_at=now,
            purpose=schedule.kind,
            fallback=fallback,
        )
        stored = await self._outbox.record(command, [], "scheduler")
        await self._outbox.publish(stored)
        await self._sent(schedule, stored.command_id, now)
        log.info(
            "scheduled message sent",
            kind=schedule.kind,
            step=schedule.step,
            thread_id=schedule.thread_id,
            command_id=stored.command_id,
            template=not window_open,
        )
        return 1

    async def _reason_not_to_send(
        self,
        schedule: ScheduledMessage,
        agent: Agent | None,
        thread: Document | None,
        lead: Document | None,
        now: datetime,
    ) -> str | None:
        """Why a due message must not go now (None: it may)."""
        if agent is None or agent.org_id != schedule.org_id:
            return "agent_gone"
        if not agent.active:
            return "agent_suspended"
        if thread is None or lead is None:
            return "thread_gone"
        if thread.get("state", "bot") != "bot":
            return f"thread_{thread['state']}"  # the agent has it (human) or it is closed
        if await self._consents.opted_out(schedule.org_id, schedule.lead_id):
            return "opted_out"
        if schedule.kind == "follow_up":
            if await self._lead_wrote_since(schedule):
                return "lead_wrote_since"
            if await self._appointments.active_for_thread(schedule.org_id, schedule.thread_id, now):
                return "booked"
            return None
        appointment = await self._appointments.get(schedule.org_id, schedule.appointment_id or "")
        if appointment is None or not appointment.active:
            return "appointment_cancelled"
        if appointment.start != schedule.appointment_start:
            return "appointment_moved"
        if appointment.start <= now:
            return "appointment_started"
        return None

    async def _lead_wrote_since(self, schedule: ScheduledMessage) -> bool:
        """Whether the lead wrote after the follow-up was planned, or awaits an answer."""
        found = await with_retry(
            lambda: self._messages.find_one(
                {
                    "org_id": schedule.org_id,
                    "thread_id": schedule.thread_id,
                    "direction": "in",
                    "$or": [{"received_at": {"$gt": schedule.created_at}}, {"answered": False}],
                },
                {"_id": 1},
            )
        )
        return found is not None

    async def _quiet_wait(self, agent: Agent, now: datetime) -> float:
        """Seconds until business-initiated messages may go in the agent's time zone."""
        quiet = agent.quiet_hours
        if quiet is None:
            org = await self._orgs.get(agent.org_id)
            quiet = org.settings.quiet_hours if org else QuietHours()
        return quiet.wait_seconds(now, agent.timezone)

    async def _sent(self, schedule: ScheduledMessage, command_id: str, now: datetime) -> None:
        # The next step is planned before this one is marked: a crash in between re-runs
        # this one, which plans the same next step again (once).
        await self._plan_next(schedule, now)
        await self._schedules.finish(
            schedule.org_id, schedule.id, "sent", now, command_id=command_id
        )
        SCHEDULED.labels(schedule.kind, "sent").inc()

    async def _skip(self, schedule: ScheduledMessage, reason: str, now: datetime) -> None:
        if reason in STEP_ONLY_REASONS:
            await self._plan_next(schedule, now)
        await self._schedules.finish(schedule.org_id, schedule.id, "skipped", now, reason=reason)
        SCHEDULED.labels(schedule.kind, "skipped").inc()
        SKIPPED.labels(schedule.kind, reason).inc()
        log.info(
            "scheduled message skipped",
            kind=schedule.kind,
            step=schedule.step,
            reason=reason,
            thread_id=schedule.thread_id,
        )

    async def _plan_next(self, schedule: ScheduledMessage, now: datetime) -> None:
        if schedule.kind != "follow_up":
            return
        following = self._scheduler.next_follow_up(schedule, now)
        if following is not None:
            await self._scheduler.plan(following)


def _profile(thread: Document) -> Profile:
    known = {k: v for k, v in (thread.get("profile") or {}).items() if k in Profile.model_fields}
    return Profile.model_validate(known)


def _lead_name(thread: Document, lead: Document, org_id: str) -> str | None:
    """The lead's name as this organization knows it (never a name another one saw)."""
    named = (thread.get("profile") or {}).get("name")
    if named:
        return str(named)
    names = [n["name"] for n in lead.get("names", []) if n.get("org_id") == org_id]
    return names[-1] if names else None


def _hello(persona: Persona, name: str | None) -> str:
    first = (name or "").split(" ")[0]
    return f"{HELLO[persona.tone]} {first}," if first else f"{HELLO[persona.tone]},"


def _signed(persona: Persona, text: str) -> str:
    return f"{text}\n{persona.signature}" if persona.signature else text


def describe_search(profile: Profile) -> str:
    """What the lead is looking for, from their profile: "your search for a condo in Bishan"."""
    words = []
    if profile.bedrooms:
        words.append(f"{profile.bedrooms}-bedroom")
    thing = THINGS.get(profile.property_type or "")
    words.append(thing or "home")
    if profile.intent == "rent":
        words.append("to rent")
    if profile.area:
        words.append(f"in {profile.area}")
    if len(words) == 1 and thing is None:
        return "your property search"
    phrase = " ".join(words)
    article = "an" if phrase[0] in "aeiou8" or phrase.startswith(("HDB", "11-", "18-")) else "a"
    return f"your search for {article} {phrase}"


def follow_up_text(step: int, steps: int, agent: Agent, name: str | None, profile: Profile) -> str:
    """A short nudge in the agent's persona, by step: no questions, no pressure."""
    persona = agent.persona
    hello = _hello(persona, name)
    search = describe_search(profile)
    if step >= steps:
        text = (
            f"{hello} it's {persona.bot_name}, {agent.name}'s assistant. I won't keep checking "
            f"in, but I'm here whenever you'd like help with {search}."
        )
    elif step == 1:
        text = (
            f"{hello} just checking in on {search}. Whenever you're ready, I'm happy to help "
            f"with listings, prices or a time to talk with {agent.name}."
        )
    elif step == 2:
        text = (
            f"{hello} {agent.name} is keeping an eye out for you on {search}. Message here "
            "any time you'd like an update."
        )
    else:
        text = (
            f"{hello} hope all is well! If you're still thinking about {search}, "
            f"{agent.name} and I are here to help."
        )
    return _signed(persona, text)


def reminder_text(agent: Agent, name: str | None, start: datetime, now: datetime) -> str:
    """The appointment's reminder, its day said as the lead reads it today."""
    zone = ZoneInfo(agent.timezone)
    day, clock = when_label(start, agent.timezone).split(", ")
    days_ahead = (start.astimezone(zone).date() - now.astimezone(zone).date()).days
    if days_ahead == 0:
        when = f"today at {clock}"
    elif days_ahead == 1:
        when = f"tomorrow, {day} at {clock}"
    else:
        when = f"on {day} at {clock}"
    text = (
        f"{_hello(agent.persona, name)} a reminder: your appointment with {agent.name} is "
        f"{when}. If you need another time, just reply here."
    )
    return _signed(agent.persona, text)
