"""Sending due follow-ups and reminders, each once, from any number of brain replicas.

The sweeper, started by every brain replica, looks every `SCHEDULER_INTERVAL_SECONDS` for
pending messages that are due. For each one it takes the thread's lease (so it never
interleaves with a reply being made, or with another replica's sweeper), checks again
whether the message should still go, and stores and publishes a send command whose id
derives from the message's, as the brain does with replies. A restart or a second replica
therefore finds the stored command instead of making another, and outbound's per-bubble
claims send it once. Quiet hours hold a message in the schedule (its due time moves to
their end), so a lead who writes overnight overtakes it before it is ever a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from datetime import datetime, timedelta

from services.brain.followups.scheduler import Clock, Scheduler
from services.brain.followups.texts import follow_up_text, reminder_text
from services.brain.metrics import SCHEDULED, SKIPPED, SWEEPS
from services.brain.reply.model import Profile
from services.brain.repositories import ThreadData
from shared.broker import Broker
from shared.ids import derived_id
from shared.local_time import when_label
from shared.logs import get_logger
from shared.models import Bubble, utcnow
from shared.quiet_hours import QuietHours
from shared.replies import ReplyOutbox, send_command
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.leads import LeadRecord
from shared.repositories.leases import ThreadLeases
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.replies import ReplyRepository
from shared.repositories.schedules import ScheduledMessage, ScheduleRepository
from shared.repositories.templates import first_name_of
from shared.repositories.threads import Thread
from shared.settings import Settings
from shared.store import Store
from shared.whatsapp import window_open

log = get_logger(__name__)

# A follow-up skipped for one of these still leaves the later steps of its sequence.
STEP_ONLY_REASONS = ("window_closed",)


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
        self._data = ThreadData.open(store)
        self._outbox = ReplyOutbox(store, broker)
        self._replies = ReplyRepository(store)
        self._orgs = OrganizationRepository(store)
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
        thread = await self._data.threads.get(schedule.org_id, schedule.thread_id)
        lead = await self._data.leads.get(schedule.lead_id)
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
            profile = Profile.stored(thread.profile)
            text = follow_up_text(schedule.step, steps, agent, name, profile)
            template_id, params = agent.follow_up_template_id, [first_name_of(name)]
        else:
            start = schedule.appointment_start or now
            text = reminder_text(agent, name, start, now)
            template_id = agent.reminder_template_id
            params = [first_name_of(name), when_label(start, agent.timezone)]
        fallback = await self._data.templates.filled(agent.org_id, agent.id, template_id, params)
        window_is_open = window_open(thread.last_inbound_at, now)
        if not window_is_open and not fallback:
            await self._skip(schedule, "window_closed", now)  # free text may not go, no template
            return 0
        command = send_command(
            command_id,
            schedule,
            lead.address_for(agent.portfolio),
            [Bubble(text=text)],
            now,
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
            template=not window_is_open,
        )
        return 1

    async def _reason_not_to_send(
        self,
        schedule: ScheduledMessage,
        agent: Agent | None,
        thread: Thread | None,
        lead: LeadRecord | None,
        now: datetime,
    ) -> str | None:
        """Why a due message must not go now (None: it may)."""
        if agent is None or agent.org_id != schedule.org_id:
            return "agent_gone"
        if not agent.active:
            return "agent_suspended"
        if thread is None or lead is None:
            return "thread_gone"
        if thread.state != "bot":
            return f"thread_{thread.state}"  # the agent has it (human) or it is closed
        if await self._data.consents.opted_out(schedule.org_id, schedule.lead_id):
            return "opted_out"
        if schedule.kind == "follow_up":
            since = schedule.created_at  # when the follow-up was planned
            if await self._data.messages.lead_wrote_since(
                schedule.org_id, schedule.thread_id, since
            ):
                return "lead_wrote_since"
            if await self._data.appointments.active_for_thread(
                schedule.org_id, schedule.thread_id, now
            ):
                return "booked"
            return None
        appointment = await self._data.appointments.get(
            schedule.org_id, schedule.appointment_id or ""
        )
        if appointment is None or not appointment.active:
            return "appointment_cancelled"
        if appointment.start != schedule.appointment_start:
            return "appointment_moved"
        if appointment.start <= now:
            return "appointment_started"
        return None

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


def _lead_name(thread: Thread, lead: LeadRecord, org_id: str) -> str | None:
    """The lead's name as this organization knows it (never a name another one saw)."""
    named = thread.profile.get("name")
    if named:
        return str(named)
    names = lead.names_in(org_id)
    return names[-1] if names else None
