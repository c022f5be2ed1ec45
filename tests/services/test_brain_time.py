"""Follow-ups, reminders and offered times on the platform's clock, across daylight-saving
changes and for a lead in another time zone than the agent.

The brain runs as a consumer and the sweeper is called directly; both read the frozen
clock, which the test sets to the instants that matter. What was planned is read from
`scheduled_messages`, what was sent from outbound's queue.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.brain.followups.sweeper import Sweeper
from services.brain.reply.slots import WEEKDAY_KEYS
from shared.broker import Broker
from shared.clock import Clock
from shared.local_time import when_label
from shared.quiet_hours import QuietHours
from shared.repositories.agents import DEFAULT_HOURS, AgentDirectory
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import ServiceRunner, Tenant, Tenants
from tests.services.test_brain import start_brain
from tests.services.test_brain_scheduler import (
    FOLLOW_UP_BODY,
    REMINDER_BODY,
    Chat,
    approved_template,
    published,
    set_agent,
)

NEW_YORK, LONDON, SINGAPORE = "America/New_York", "Europe/London", "Asia/Singapore"
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
LONDON_LEAD = "+447911123456"


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def local(moment: datetime, timezone: str) -> str:
    """A moment on a wall clock: "Mon 21:30"."""
    return moment.astimezone(ZoneInfo(timezone)).strftime("%a %H:%M")


async def agent_in(store: Store, tenants: Tenants, timezone: str) -> Tenant:
    """An agent in `timezone`, default quiet hours, follow-up and reminder templates."""
    tenant = await tenants.agent(bot_name="Mia")
    await set_agent(
        store,
        tenant,
        timezone=timezone,
        quiet_hours=QuietHours().model_dump(),
        follow_up_template_id=await approved_template(store, tenant, "nudge", FOLLOW_UP_BODY),
        reminder_template_id=await approved_template(store, tenant, "remind", REMINDER_BODY),
    )
    return tenant


async def chat_with(
    tenant: Tenant,
    services: ServiceRunner,
    store: Store,
    broker: Broker,
    settings: Settings,
    phone: str | None = None,
) -> Chat:
    brain = await start_brain(services, store, settings)
    chat = Chat(store, broker, brain, tenant, **({"phone": phone} if phone else {}))
    await chat.start()
    return chat


def sweeper(broker: Broker, store: Store, settings: Settings) -> Sweeper:
    """A brain replica's sweeper, on the platform's clock."""
    agents = AgentDirectory.for_store(store, settings)
    return Sweeper(broker, store, agents, settings, owner=f"replica-{uuid.uuid4().hex[:6]}")


# The bot answers on a Friday evening; each follow-up is due whole days (72, 168, 336 and
# 720 hours) after that reply, absolute time. In New York the clocks spring forward in
# between, so 20:30 EST becomes 21:30 EDT: inside quiet hours, held until 09:00 the next
# morning. In London they fall back, so 21:30 BST becomes 20:30 GMT: outside, sent when due.
FOLLOW_UPS = {
    "new-york-spring-forward": (
        NEW_YORK,
        utc(3, 7, 1, 30),  # Fri 6 Mar, 20:30 EST
        ["Mon 21:30", "Fri 21:30", "Fri 21:30", "Sun 21:30"],
        [utc(3, 10, 13), utc(3, 14, 13), utc(3, 21, 13), utc(4, 6, 13)],  # 09:00 EDT
    ),
    "london-fall-back": (
        LONDON,
        utc(10, 23, 20, 30),  # Fri 23 Oct, 21:30 BST
        ["Mon 20:30", "Fri 20:30", "Fri 20:30", "Sun 20:30"],
        [utc(10, 26, 20, 30), utc(10, 30, 20, 30), utc(11, 6, 20, 30), utc(11, 22, 20, 30)],
    ),
}


@pytest.mark.parametrize(
    ("timezone", "replied", "due_local", "sent_at"), FOLLOW_UPS.values(), ids=FOLLOW_UPS
)
async def test_follow_ups_are_due_whole_days_after_the_reply_and_wait_out_quiet_hours(
    clock: Clock,
    services: ServiceRunner,
    store: Store,
    broker: Broker,
    settings: Settings,
    tenants: Tenants,
    timezone: str,
    replied: datetime,
    due_local: list[str],
    sent_at: list[datetime],
) -> None:
    tenant = await agent_in(store, tenants, timezone)
    clock.freeze(replied)
    chat = await chat_with(tenant, services, store, broker, settings)
    await chat.says("Hi, any 3-bedroom condo in Bishan?")
    [first] = await chat.pending("follow_up")
    assert first.anchor_at == replied
    sweeping = sweeper(broker, store, settings)

    for step, days in enumerate((3, 7, 14, 30), 1):
        [pending] = await chat.pending("follow_up")
        assert pending.step == step
        assert pending.due_at == replied + days * DAY
        assert local(pending.due_at, timezone) == due_local[step - 1]
        clock.freeze(pending.due_at)
        if sent_at[step - 1] > pending.due_at:
            assert await sweeping.sweep() == 0, f"step {step} went in quiet hours"
            [held] = await chat.pending("follow_up")
            assert held.due_at == sent_at[step - 1]
            assert local(held.due_at, timezone).endswith("09:00")
            clock.freeze(sent_at[step - 1] - MINUTE)
            assert await sweeping.sweep() == 0, f"step {step} went before 09:00"
        clock.freeze(sent_at[step - 1])
        assert await sweeping.sweep() == 1, f"step {step} did not go"
        [command] = await published(broker)
        assert command.purpose == "follow_up" and command.created_at == sent_at[step - 1]
    assert await chat.pending("follow_up") == []


async def test_reminders_of_a_ten_oclock_appointment_after_the_clocks_change_go_on_time(
    clock: Clock,
    services: ServiceRunner,
    store: Store,
    broker: Broker,
    settings: Settings,
    tenants: Tenants,
) -> None:
    tenant = await agent_in(store, tenants, NEW_YORK)
    clock.freeze(utc(3, 5, 17))  # Thursday 5 March, 12:00 EST
    chat = await chat_with(tenant, services, store, broker, settings)
    # The time asked for is free: the bot books it at once.
    reply = await chat.says(
        "Hi, looking to buy a 3 bedroom condo in Bishan, budget 2m. "
        "Can I book a call on Monday at 10am?"
    )
    assert "Mon 9 Mar, 10:00 am" in " ".join(b.text for b in reply.bubbles)
    booked = await chat.appointment()
    assert booked is not None
    # New York springs forward on Sunday 8 March: Monday 10:00 EDT is 14:00 UTC.
    assert booked.start == utc(3, 9, 14)

    reminders = await chat.pending("reminder")
    assert [r.due_at for r in reminders] == [utc(3, 8, 14), utc(3, 9, 13)]
    assert [local(r.due_at, NEW_YORK) for r in reminders] == ["Sun 10:00", "Mon 09:00"]
    sweeping = sweeper(broker, store, settings)
    texts = []
    for reminder in reminders:
        clock.freeze(reminder.due_at - MINUTE)
        assert await sweeping.sweep() == 0
        clock.freeze(reminder.due_at)
        assert await sweeping.sweep() == 1
        [command] = await published(broker)
        assert command.purpose == "reminder"
        texts.append(command.bubbles[0].text)
        assert command.fallback[0].params[1] == "Mon 9 Mar, 10:00 am"
    assert "is tomorrow, Mon 9 Mar at 10:00 am" in texts[0]
    assert "is today at 10:00 am" in texts[1]


async def test_a_lead_abroad_is_offered_the_agents_hours_and_nudged_on_the_agents_clock(
    clock: Clock,
    services: ServiceRunner,
    store: Store,
    broker: Broker,
    settings: Settings,
    tenants: Tenants,
) -> None:
    # A Singapore agent, a lead with a London number. The documented rule: working hours,
    # offered times and quiet hours are the agent's; the lead reads times in the agent's zone.
    tenant = await agent_in(store, tenants, SINGAPORE)
    clock.freeze(utc(3, 30, 2))  # Monday 30 March, 10:00 in Singapore, 03:00 in London
    chat = await chat_with(tenant, services, store, broker, settings, phone=LONDON_LEAD)
    await chat.says("Hi, I'm moving to Singapore. Can I book a call with Daniel?")

    thread = await ThreadRepository(store).get(tenant.org_id, chat.thread_id)
    assert thread is not None and len(thread.offered) >= 2
    hours = {(p.day, p.start, p.end) for p in DEFAULT_HOURS}
    for offered in thread.offered:
        start = datetime.fromisoformat(offered["start"])
        in_singapore = start.astimezone(ZoneInfo(SINGAPORE))
        day = WEEKDAY_KEYS[in_singapore.weekday()]
        assert (day, "09:00", "18:00") in hours, offered
        assert 9 <= in_singapore.hour < 18, offered
        assert offered["label"] == when_label(start, SINGAPORE)

    # The lead went quiet: the follow-up is due at 10:00 in Singapore, 03:00 in London, and
    # goes (the agent's day); at 22:00 in Singapore, 15:00 in London, one would wait.
    [first] = await chat.pending("follow_up")
    assert local(first.due_at, SINGAPORE) == "Thu 10:00"
    assert local(first.due_at, LONDON) == "Thu 03:00"
    sweeping = sweeper(broker, store, settings)
    clock.freeze(first.due_at)
    assert await sweeping.sweep() == 1
    [command] = await published(broker)
    assert command.destination == LONDON_LEAD and command.purpose == "follow_up"

    [second] = await chat.pending("follow_up")
    clock.freeze(second.due_at + 12 * HOUR)  # Monday 22:00 in Singapore, 15:00 in London
    assert local(clock.now(), LONDON) == "Mon 15:00"
    assert await sweeping.sweep() == 0
    [held] = await chat.pending("follow_up")
    assert local(held.due_at, SINGAPORE) == "Tue 09:00"
    assert await published(broker) == []
