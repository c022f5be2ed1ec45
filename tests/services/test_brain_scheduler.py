"""Follow-ups and reminders: planned by the brain's replies, sent once by its sweepers.

The brain runs as a consumer (real RabbitMQ and store) with the real clock; the sweepers get
an injected clock, so days pass in an instant. What they publish is read from outbound's
queue; what they decided is read from `scheduled_messages`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.brain.followups.sweeper import Sweeper
from shared.broker import Broker
from shared.identity import WhatsAppUser
from shared.ids import derived_id
from shared.models import InboundMessage, SendCommand, ThreadWork, utcnow
from shared.quiet_hours import QuietHours
from shared.repositories.agents import AgentDirectory
from shared.repositories.appointments import Appointment, AppointmentRepository
from shared.repositories.consents import ConsentRepository
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.messages import MessageRepository
from shared.repositories.schedules import ScheduledMessage, ScheduleKind, ScheduleRepository
from shared.repositories.templates import TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import (
    LEAD_PHONE,
    RunningService,
    ServiceRunner,
    Tenant,
    Tenants,
    drain,
    fetch_event,
)
from tests.services.test_brain import start_brain

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
FOLLOW_UP_BODY = "Hi {{1}}, just checking in. Reply here whenever you'd like to continue."
REMINDER_BODY = "Hi {{1}}, a reminder of your appointment on {{2}}."


def quiet_hours_out_of_the_way() -> QuietHours:
    """An evening quiet hour (Singapore) away from now and from working hours.

    The sweepers' moments are now plus whole days (follow-ups) and an hour or a day before
    an appointment in working hours (reminders): none of them falls in it.
    """
    hour = datetime.now(ZoneInfo("Asia/Singapore")).hour
    start = 22 if 18 <= hour <= 20 else 19
    return QuietHours(start=f"{start}:00", end=f"{start + 1}:00")


@dataclass
class Clock:
    """An injectable clock the test moves."""

    at: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Templates:
    """The agent's approved follow-up and reminder templates."""

    follow_up: str
    reminder: str


async def approved_template(store: Store, tenant: Tenant, name: str, body: str) -> str:
    """An APPROVED template of the tenant's agent; its id."""
    templates = TemplateRepository(store)
    template = await templates.claim(tenant.org_id, tenant.agent_id, name, "en", "UTILITY", body)
    await templates.set_status(
        tenant.org_id, tenant.agent_id, name, "en", status="APPROVED", provider_id=f"gs-{name}"
    )
    return template.id


async def set_agent(store: Store, tenant: Tenant, **fields: Any) -> None:
    await store.db["agents"].update_one({"_id": tenant.agent_id}, {"$set": fields})


@pytest.fixture
async def tenant(tenants: Tenants, store: Store) -> Tenant:
    tenant = await tenants.agent(bot_name="Mia")
    await set_agent(store, tenant, quiet_hours=quiet_hours_out_of_the_way().model_dump())
    return tenant


@pytest.fixture
async def templates(store: Store, tenant: Tenant) -> Templates:
    """The agent has follow-up and reminder templates (set before any service starts)."""
    chosen = Templates(
        follow_up=await approved_template(store, tenant, "checking_in", FOLLOW_UP_BODY),
        reminder=await approved_template(store, tenant, "appointment", REMINDER_BODY),
    )
    await set_agent(
        store,
        tenant,
        follow_up_template_id=chosen.follow_up,
        reminder_template_id=chosen.reminder,
    )
    return chosen


class Chat:
    """A lead writing to the agent, as dedup stores it; the brain's replies."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        brain: RunningService,
        tenant: Tenant,
        phone: str = LEAD_PHONE,
    ) -> None:
        self.store, self.broker, self.brain, self.tenant = store, broker, brain, tenant
        self.phone = phone
        self.thread_id = ""
        self.lead_id = ""
        self.answered = 0

    async def start(self) -> None:
        now = utcnow()
        source = {"source": "organic"}
        lead, _ = await LeadRepository(self.store).resolve(
            WhatsAppUser(phone=self.phone),
            Sighting(
                org_id=self.tenant.org_id,
                agent_id=self.tenant.agent_id,
                portfolio=f"agent:{self.tenant.agent_id}",
                at=now,
                name="Rachel Lim",
                source=source,
            ),
        )
        thread, _ = await ThreadRepository(self.store).resolve(
            org_id=self.tenant.org_id,
            agent_id=self.tenant.agent_id,
            lead_id=lead.id,
            at=now,
            source=source,
        )
        self.thread_id, self.lead_id = thread.id, lead.id

    async def writes(self, text: str, *, work: bool = True) -> None:
        """The lead's message is stored (unanswered) and the thread's work published.

        Without `work`, the brain has not got to it yet.
        """
        now = utcnow()
        message = InboundMessage(
            event_id=f"evt-{uuid.uuid4().hex}",
            org_id=self.tenant.org_id,
            agent_id=self.tenant.agent_id,
            provider_message_id=f"wamid.{uuid.uuid4().hex}",
            lead_wa_id=self.phone.lstrip("+"),
            lead_name="Rachel Lim",
            type="text",
            text=text,
            sent_at=now,
            received_at=now,
        )
        stored, _ = await MessageRepository(self.store).store_inbound(
            message, thread_id=self.thread_id, lead_id=self.lead_id, sender=self.phone
        )
        await ThreadRepository(self.store).touch_inbound(self.tenant.org_id, self.thread_id, now)
        if not work:
            return
        item = ThreadWork(
            event_id=f"wrk-{stored.id}",
            org_id=self.tenant.org_id,
            agent_id=self.tenant.agent_id,
            thread_id=self.thread_id,
            lead_id=self.lead_id,
        )
        await self.broker.publish(item, message_id=item.event_id)

    async def says(self, text: str) -> SendCommand:
        """The lead writes; the brain's reply to it."""
        await self.writes(text)
        self.answered += 1
        await self.brain.wait_for("ok", self.answered)
        reply = await fetch_event(self.broker, "outbound", SendCommand)
        assert reply is not None and reply.purpose == "reply"
        return reply

    async def schedules(self, kind: ScheduleKind | None = None) -> list[ScheduledMessage]:
        return await ScheduleRepository(self.store).for_thread(
            self.tenant.org_id, self.thread_id, kind
        )

    async def pending(self, kind: ScheduleKind) -> list[ScheduledMessage]:
        return [s for s in await self.schedules(kind) if s.status == "pending"]

    async def appointment(self) -> Appointment | None:
        return await AppointmentRepository(self.store).active_for_thread(
            self.tenant.org_id, self.thread_id
        )

    async def books_the_last_time_offered(self) -> Appointment:
        """The lead asks for a call and picks the last time offered (the furthest ahead)."""
        await self.says(
            "Hi, looking to buy a 3 bedroom condo in Bishan, budget 2m, next year. "
            "Can I book a call?"
        )
        return await self.picks_the_last_time_offered()

    async def picks_the_last_time_offered(self) -> Appointment:
        thread = await ThreadRepository(self.store).get(self.tenant.org_id, self.thread_id)
        assert thread is not None and thread.offered, thread
        await self.says(f"option {len(thread.offered)}")
        appointment = await self.appointment()
        assert appointment is not None
        return appointment


@pytest.fixture
async def chat(
    services: ServiceRunner,
    store: Store,
    broker: Broker,
    settings: Settings,
    tenant: Tenant,
    templates: Templates,
) -> Chat:
    brain = await start_brain(services, store, settings)
    chat = Chat(store, broker, brain, tenant)
    await chat.start()
    return chat


MakeSweeper = Callable[..., Awaitable[Sweeper]]


@pytest.fixture
async def sweeper_for(
    settings: Settings, store: Store, broker: Broker
) -> AsyncIterator[MakeSweeper]:
    """Sweepers as brain replicas run them: each with its own broker connection."""
    made: list[tuple[Sweeper, Broker]] = []

    async def make(clock: Clock, **overrides: Any) -> Sweeper:
        replica = Broker(settings, f"brain-{uuid.uuid4().hex[:6]}")
        await replica.connect()
        configured = settings.model_copy(update=overrides)
        sweeper = Sweeper(
            replica,
            store,
            AgentDirectory.for_store(store, configured),
            configured,
            now=clock,
            owner=f"replica-{uuid.uuid4().hex[:6]}",
        )
        made.append((sweeper, replica))
        return sweeper

    yield make
    for sweeper, replica in made:
        await sweeper.stop(grace_seconds=5)
        await replica.close()


async def published(broker: Broker) -> list[SendCommand]:
    """Every send command waiting for outbound now."""
    messages = await drain(broker, broker.topology.queue("outbound"))
    return [SendCommand.model_validate_json(m.body) for m in messages]


async def test_a_reply_plans_the_first_follow_up_three_days_later(chat: Chat) -> None:
    before = utcnow()
    reply = await chat.says("Hi, any 3-bedroom condo in the East?")

    [first] = await chat.schedules("follow_up")
    assert (first.status, first.step, first.anchor) == ("pending", 1, reply.command_id)
    assert first.org_id == chat.tenant.org_id and first.lead_id == chat.lead_id
    assert before - timedelta(milliseconds=1) + 72 * HOUR <= first.due_at <= utcnow() + 72 * HOUR


async def test_a_lead_message_before_it_is_due_stops_the_follow_up(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    first_reply = await chat.says("Hi, any 3-bedroom condo in the East?")
    # Answered: the next reply replaces the sequence with one that follows it.
    second_reply = await chat.says("Budget about 1.5m")
    schedules = {s.anchor: s for s in await chat.schedules("follow_up")}
    assert schedules[first_reply.command_id].status == "cancelled"
    assert schedules[first_reply.command_id].reason == "lead_replied"
    assert schedules[second_reply.command_id].status == "pending"

    # Not answered (yet): when it is due, the follow-up sees the lead wrote and stays quiet.
    await chat.writes("Sorry, was busy", work=False)
    clock = Clock(schedules[second_reply.command_id].due_at + timedelta(minutes=1))
    assert await (await sweeper_for(clock)).sweep() == 0
    [skipped] = [s for s in await chat.schedules("follow_up") if s.status == "skipped"]
    assert skipped.reason == "lead_wrote_since"
    assert await chat.pending("follow_up") == []  # the sequence ends there
    assert await published(broker) == []


async def test_two_sweepers_at_once_publish_one_command(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.schedules("follow_up")
    clock = Clock(first.due_at + timedelta(minutes=1))
    replicas = [await sweeper_for(clock) for _ in range(2)]

    counts = await asyncio.gather(*(r.sweep() for r in replicas))
    # A replica that found the thread's lease taken tries again at its next sweep.
    counts += await asyncio.gather(*(r.sweep() for r in replicas))

    assert sum(counts) == 1
    [command] = await published(broker)
    assert command.purpose == "follow_up" and command.thread_id == chat.thread_id
    assert command.destination == LEAD_PHONE
    done = {s.step: s for s in await chat.schedules("follow_up")}
    assert done[1].status == "sent" and done[1].command_id == command.command_id
    assert done[2].status == "pending"
    stored = await chat.store.db["replies"].find_one({"_id": command.command_id})
    assert stored is not None and stored["published"] is True and stored["answers"] == []
    assert stored["engine"] == "scheduler"


async def test_a_restarted_sweeper_does_not_send_again(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.schedules("follow_up")
    clock = Clock(first.due_at + timedelta(minutes=1))
    assert await (await sweeper_for(clock)).sweep() == 1
    [command] = await published(broker)

    restarted = await sweeper_for(clock)
    assert await restarted.sweep() == 0
    assert await published(broker) == []
    [sent] = [s for s in await chat.schedules("follow_up") if s.step == 1]
    assert sent.status == "sent" and sent.command_id == command.command_id


@pytest.mark.parametrize("dies", ["before_publishing", "before_marking_sent"])
async def test_a_sweep_interrupted_midway_is_finished_with_the_same_command(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper, dies: str
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.schedules("follow_up")
    clock = Clock(first.due_at + timedelta(minutes=1))
    crashing = await sweeper_for(clock)

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("process killed")

    target = crashing._outbox if dies == "before_publishing" else crashing._schedules
    setattr(target, "publish" if dies == "before_publishing" else "finish", crash)
    await crashing.sweep()
    assert (await chat.schedules("follow_up"))[0].status == "pending"

    assert await (await sweeper_for(clock)).sweep() == 0  # nothing new: the stored one goes
    commands = await published(broker)
    assert {c.command_id for c in commands} == {c.command_id for c in commands[:1]}
    assert len(commands) == 1
    steps = {s.step: s for s in await chat.schedules("follow_up")}
    assert steps[1].status == "sent" and steps[1].command_id == commands[0].command_id
    assert steps[2].status == "pending"
    assert await chat.store.db["replies"].count_documents({"engine": "scheduler"}) == 1


async def test_the_sequence_goes_on_day_3_7_14_and_30_then_stops(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper, templates: Templates
) -> None:
    await chat.says("Hi, I'd like to rent a 2 bedroom condo in Orchard")
    [first] = await chat.schedules("follow_up")
    assert first.anchor_at is not None
    clock = Clock(first.anchor_at)
    sweeper = await sweeper_for(clock)
    texts = []
    for step, days in enumerate((3, 7, 14, 30), 1):
        clock.at = first.anchor_at + days * DAY - timedelta(minutes=1)
        assert await sweeper.sweep() == 0, f"step {step} went early"
        clock.at = first.anchor_at + days * DAY + timedelta(minutes=1)
        assert await sweeper.sweep() == 1, f"step {step} did not go"
        [command] = await published(broker)
        assert command.purpose == "follow_up"
        # The window closed long ago: the agent's template stands in for the text.
        [fallback] = command.fallback
        assert (fallback.template_id, fallback.params) == (templates.follow_up, ["Rachel"])
        texts.append(command.bubbles[0].text)
    clock.at = first.anchor_at + 365 * DAY
    assert await sweeper.sweep() == 0

    schedules = await chat.schedules("follow_up")
    assert [(s.step, s.status) for s in schedules] == [(n, "sent") for n in (1, 2, 3, 4)]
    assert [s.due_at - first.anchor_at for s in schedules] == [d * DAY for d in (3, 7, 14, 30)]
    assert len(set(texts)) == 4 and all(t.startswith("Hi Rachel,") for t in texts)
    assert "2-bedroom condo to rent in Orchard" in texts[0]
    assert "won't keep checking in" in texts[-1]
    assert not any("?" in t for t in texts)  # a nudge, not a question


async def test_without_a_template_a_closed_window_skips_the_step_not_the_sequence(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper, store: Store, tenant: Tenant
) -> None:
    await set_agent(store, tenant, follow_up_template_id=None)
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.schedules("follow_up")
    sweeper = await sweeper_for(Clock(first.due_at + timedelta(minutes=1)))

    assert await sweeper.sweep() == 0
    assert await published(broker) == []
    steps = {s.step: s for s in await chat.schedules("follow_up")}
    assert (steps[1].status, steps[1].reason) == ("skipped", "window_closed")
    assert steps[2].status == "pending"  # a template set meanwhile would carry it


async def test_a_booking_stops_follow_ups_and_plans_two_reminders(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper, templates: Templates
) -> None:
    booked = await chat.books_the_last_time_offered()

    follow_ups = await chat.schedules("follow_up")
    assert [(s.status, s.reason) for s in follow_ups] == [("cancelled", "booked")]
    reminders = await chat.pending("reminder")
    assert [r.due_at for r in reminders] == [booked.start - 24 * HOUR, booked.start - HOUR]
    assert {r.appointment_id for r in reminders} == {booked.id}

    clock = Clock(booked.start - 24 * HOUR + timedelta(minutes=1))
    sweeper = await sweeper_for(clock)
    assert await sweeper.sweep() == 1
    [day_before] = await published(broker)
    clock.at = booked.start - HOUR + timedelta(minutes=1)
    assert await sweeper.sweep() == 1
    [hour_before] = await published(broker)

    assert day_before.purpose == hour_before.purpose == "reminder"
    local = booked.start.astimezone(ZoneInfo("Asia/Singapore"))
    clock_label = f"{local.hour % 12 or 12}:{local.minute:02d} {'am' if local.hour < 12 else 'pm'}"
    assert "your appointment with Daniel Tan is tomorrow" in day_before.bubbles[0].text
    assert f"today at {clock_label}" in hour_before.bubbles[0].text
    assert [b.template_id for b in day_before.fallback] == [templates.reminder]
    assert day_before.fallback[0].params[0] == "Rachel"
    assert clock_label in day_before.fallback[0].params[1]
    assert [r.status for r in await chat.schedules("reminder")] == ["sent", "sent"]
    assert await chat.pending("follow_up") == []  # a booked lead gets no follow-ups


async def test_a_reschedule_moves_the_reminders(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    booked = await chat.books_the_last_time_offered()
    await chat.says("Something came up, can we reschedule?")
    moved = await chat.picks_the_last_time_offered()
    assert moved.id == booked.id and moved.start != booked.start

    reminders = await chat.schedules("reminder")
    old = [r for r in reminders if r.appointment_start == booked.start]
    new = [r for r in reminders if r.appointment_start == moved.start]
    assert [(r.status, r.reason) for r in old] == [("cancelled", "appointment_moved")] * 2
    assert [r.due_at for r in new] == [moved.start - 24 * HOUR, moved.start - HOUR]
    assert {r.status for r in new} == {"pending"}

    clock = Clock()
    sweeper = await sweeper_for(clock)
    went = []
    for reminder in new:
        clock.at = reminder.due_at + timedelta(minutes=1)
        assert await sweeper.sweep() == 1
        went += [c.command_id for c in await published(broker)]
    assert went == [derived_id("sch", r.id) for r in new]  # the new time's, and only those
    assert [r.status for r in await chat.pending("reminder")] == []


async def test_a_cancel_retires_the_reminders(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    booked = await chat.books_the_last_time_offered()
    await chat.says("Sorry, I need to cancel")

    reminders = await chat.schedules("reminder")
    assert [(r.status, r.reason) for r in reminders] == [("cancelled", "appointment_cancelled")] * 2
    # No longer booked: the lead may be nudged again.
    assert len(await chat.pending("follow_up")) == 1
    sweeper = await sweeper_for(Clock(booked.start - HOUR + timedelta(minutes=1)))
    await sweeper.sweep()
    assert [c for c in await published(broker) if c.purpose == "reminder"] == []


async def test_an_appointment_cancelled_elsewhere_gets_no_reminder(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    booked = await chat.books_the_last_time_offered()
    # The agent cancels it in the dashboard: no reply of the bot is involved.
    await AppointmentRepository(chat.store).cancel(chat.tenant.org_id, booked.id)

    sweeper = await sweeper_for(Clock(booked.start - HOUR + timedelta(minutes=1)))
    assert await sweeper.sweep() == 0
    assert await published(broker) == []
    reasons = {r.reason for r in await chat.schedules("reminder")}
    assert reasons == {"appointment_cancelled"}


async def opts_out(chat: Chat) -> None:
    await ConsentRepository(chat.store).record(
        org_id=chat.tenant.org_id,
        lead_id=chat.lead_id,
        agent_id=chat.tenant.agent_id,
        opted_out=True,
        how="gupshup-opted-out",
        at=utcnow(),
    )


async def test_an_opt_out_stops_the_follow_ups(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.pending("follow_up")
    await opts_out(chat)

    sweeper = await sweeper_for(Clock(first.due_at + 365 * DAY))
    assert await sweeper.sweep() == 0
    assert await published(broker) == []
    [skipped] = await chat.schedules("follow_up")
    assert (skipped.status, skipped.reason) == ("skipped", "opted_out")


async def test_an_opt_out_stops_the_reminders(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    booked = await chat.books_the_last_time_offered()
    await opts_out(chat)

    clock = Clock(booked.start - 24 * HOUR + timedelta(minutes=1))
    sweeper = await sweeper_for(clock)
    assert await sweeper.sweep() == 0
    clock.at = booked.start - HOUR + timedelta(minutes=1)
    assert await sweeper.sweep() == 0
    assert await published(broker) == []
    reminders = await chat.schedules("reminder")
    assert [(r.status, r.reason) for r in reminders] == [("skipped", "opted_out")] * 2


async def test_quiet_hours_hold_a_follow_up_which_the_lead_then_overtakes(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper, store: Store, tenant: Tenant
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.pending("follow_up")
    due = first.due_at + timedelta(minutes=1)
    local = due.astimezone(ZoneInfo("Asia/Singapore"))
    start, end = local - HOUR, local + 2 * HOUR
    quiet = QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}")
    await set_agent(store, tenant, quiet_hours=quiet.model_dump())
    clock = Clock(due)
    sweeper = await sweeper_for(clock)

    assert await sweeper.sweep() == 0
    [held] = await chat.pending("follow_up")
    assert held.id == first.id
    assert end - timedelta(minutes=1) <= held.due_at.astimezone(end.tzinfo) <= end
    # Overnight, the lead writes (the brain answers when it gets to it).
    await chat.writes("Hello? Anyone there?", work=False)

    clock.at = held.due_at + timedelta(minutes=1)
    assert await sweeper.sweep() == 0
    assert await published(broker) == []
    [overtaken] = await chat.schedules("follow_up")
    assert (overtaken.status, overtaken.reason) == ("skipped", "lead_wrote_since")


async def test_the_sweeper_runs_in_the_background_and_stops_on_request(
    chat: Chat, broker: Broker, sweeper_for: MakeSweeper
) -> None:
    await chat.says("Hi, any 3-bedroom condo in the East?")
    [first] = await chat.pending("follow_up")
    clock = Clock(first.due_at + timedelta(minutes=1))
    replicas = [await sweeper_for(clock, scheduler_interval_seconds=0.05) for _ in range(2)]
    for replica in replicas:
        replica.start()

    command = await fetch_event(broker, "outbound", SendCommand)
    assert command is not None and command.purpose == "follow_up"
    await asyncio.sleep(0.3)  # several more sweeps of both replicas
    for replica in replicas:
        await asyncio.wait_for(replica.stop(grace_seconds=5), timeout=6)
    assert await published(broker) == []
