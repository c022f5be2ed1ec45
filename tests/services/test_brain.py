"""Brain: a thread's unanswered messages get one reply in the agent's persona, once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from services.brain import __main__ as brain_main
from services.brain.reply.handler import Brain
from shared.broker import Broker, Subscription, Subscriptions
from shared.identity import WhatsAppUser
from shared.models import InboundMessage, SendCommand, ThreadWork, utcnow
from shared.repositories.agents import AgentDirectory
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.messages import MessageRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import (
    LEAD_PHONE,
    LEAD_WA_ID,
    RunningService,
    ServiceRunner,
    Tenant,
    Tenants,
    drain,
    eventually,
    fetch_event,
)


async def subscribe(brain: Brain) -> Subscriptions:
    """The brain's table of subscriptions for a brain a test built itself."""
    return Subscriptions(Subscription(ThreadWork, brain.handle))


async def start_brain(services: ServiceRunner, store: Store, settings: Settings) -> RunningService:
    """The brain consuming its stage, wired as services/brain/__main__.py wires it."""
    return await services.start("brain", brain_main.setup)


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent(bot_name="Mia")


@dataclass
class SeededThread:
    """A thread with one unanswered inbound message, and the work item that announces it."""

    work: ThreadWork
    message_id: str


async def seed_thread(store: Store, tenant: Tenant) -> SeededThread:
    """Store a lead's first message as dedup does, through the repositories."""
    now = utcnow()
    source = {"source": "organic"}
    lead, _ = await LeadRepository(store).resolve(
        WhatsAppUser(phone=LEAD_PHONE),
        Sighting(
            org_id=tenant.org_id,
            agent_id=tenant.agent_id,
            portfolio=f"agent:{tenant.agent_id}",
            at=now,
            name="Rachel Lim",
            source=source,
        ),
    )
    thread, _ = await ThreadRepository(store).resolve(
        org_id=tenant.org_id, agent_id=tenant.agent_id, lead_id=lead.id, at=now, source=source
    )
    message = InboundMessage(
        event_id="evt-1",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        provider_message_id="wamid.first",
        lead_wa_id=LEAD_WA_ID,
        lead_name="Rachel Lim",
        type="text",
        text="Hi, any 3-bedroom condo in the East?",
        sent_at=now,
        received_at=now,
    )
    stored, _created = await MessageRepository(store).store_inbound(
        message, thread_id=thread.id, lead_id=lead.id, sender=LEAD_PHONE
    )
    await ThreadRepository(store).touch_inbound(tenant.org_id, thread.id, now)
    work = ThreadWork(
        event_id=f"wrk-{stored.id}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        thread_id=thread.id,
        lead_id=lead.id,
    )
    return SeededThread(work, stored.id)


async def test_unanswered_message_gets_one_reply_greeting_with_the_bot_name(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    seeded = await seed_thread(store, tenant)
    await start_brain(services, store, settings)
    await broker.publish(seeded.work, message_id=seeded.work.event_id)

    command = await fetch_event(broker, "outbound", SendCommand)
    assert command is not None
    assert command.destination == LEAD_PHONE
    assert (command.org_id, command.agent_id) == (tenant.org_id, tenant.agent_id)
    assert (command.thread_id, command.lead_id) == (seeded.work.thread_id, seeded.work.lead_id)
    assert command.bubbles, "a reply has at least one bubble"
    first = command.bubbles[0].text
    assert "Mia" in first and first.startswith("Hi"), first

    message = await store.db["messages"].find_one({"_id": seeded.message_id})
    assert message is not None
    assert message["answered"] is True
    assert message["answered_by"] == command.command_id
    replies = await store.db["replies"].find({}).to_list()
    assert [r["_id"] for r in replies] == [command.command_id]
    assert replies[0]["published"] is True


async def test_work_delivered_twice_is_answered_once(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    seeded = await seed_thread(store, tenant)
    brain = await start_brain(services, store, settings)
    await broker.publish(seeded.work, message_id=seeded.work.event_id)
    await brain.wait_for("ok", 1)
    await broker.publish(seeded.work, message_id=seeded.work.event_id)
    await brain.wait_for("ok", 2)

    commands = await drain(broker, broker.topology.queue("outbound"))
    command_ids = {SendCommand.model_validate_json(c.body).command_id for c in commands}
    assert len(command_ids) == 1
    assert len(commands) == 1
    assert await store.db["replies"].count_documents({}) == 1


async def test_work_delivered_twice_at_once_to_two_replicas_is_answered_once(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    seeded = await seed_thread(store, tenant)
    replicas = [await start_brain(services, store, settings) for _ in range(2)]
    await asyncio.gather(
        *(broker.publish(seeded.work, message_id=seeded.work.event_id) for _ in range(2))
    )

    async def both_done() -> bool:
        return sum(r.outcome_count("ok") for r in replicas) >= 2

    await eventually(both_done)
    commands = await drain(broker, broker.topology.queue("outbound"))
    command_ids = {SendCommand.model_validate_json(c.body).command_id for c in commands}
    assert len(command_ids) == 1
    assert await store.db["replies"].count_documents({}) == 1
    outbound = await store.db["messages"].count_documents({"direction": "out"})
    assert outbound == len(SendCommand.model_validate_json(commands[0].body).bubbles)


async def test_suspended_agent_gets_no_reply(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    seeded = await seed_thread(store, tenant)
    await store.db["agents"].update_one({"_id": tenant.agent_id}, {"$set": {"status": "suspended"}})
    brain = await start_brain(services, store, settings)
    await broker.publish(seeded.work, message_id=seeded.work.event_id)
    await brain.wait_for("ok", 1)

    assert await broker.queue_depth(broker.topology.queue("outbound")) == 0
    assert await store.db["replies"].count_documents({}) == 0
    message = await store.db["messages"].find_one({"_id": seeded.message_id})
    assert message is not None and message["answered"] is False


async def test_a_failing_recall_still_answers_safely_and_is_counted(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    from services.brain.metrics import LAYER_FALLBACKS

    class BrokenRecall:
        async def recall(self, *_: object) -> None:
            raise ConnectionError("listings unreadable")

    seeded = await seed_thread(store, tenant)
    agents = AgentDirectory.for_store(store, settings)
    brain = Brain(broker, store, agents, settings)
    brain._recaller = BrokenRecall()  # type: ignore[assignment]
    counter = LAYER_FALLBACKS.labels("recall", "store", "ConnectionError")
    before = counter._value.get()
    await services.start("brain", lambda _runtime: subscribe(brain))
    await broker.publish(seeded.work, message_id=seeded.work.event_id)

    command = await fetch_event(broker, "outbound", SendCommand)
    assert command is not None
    texts = [b.text for b in command.bubbles]
    assert texts[0].startswith("Hi") and texts[-1].endswith("?")  # greeted, asked; cited nothing
    assert not any("$" in t for t in texts)
    assert counter._value.get() == before + 1


async def test_a_reply_stored_by_a_run_that_died_is_published_and_nothing_answered_twice(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    from shared.models import Bubble
    from shared.repositories.replies import ReplyRepository

    seeded = await seed_thread(store, tenant)
    # A run stored its reply to the message, then died before marking the message answered.
    work = seeded.work
    stored = SendCommand(
        event_id="rpl_died",
        command_id="rpl_died",
        org_id=work.org_id,
        agent_id=work.agent_id,
        thread_id=work.thread_id,
        lead_id=work.lead_id,
        destination=LEAD_PHONE,
        bubbles=[Bubble(text="Hi Rachel! I'm Mia.")],
        created_at=utcnow(),
    )
    await ReplyRepository(store).create(stored, [seeded.message_id], "rules")
    brain = await start_brain(services, store, settings)
    await broker.publish(work, message_id=work.event_id)
    await brain.wait_for("ok", 1)

    commands = await drain(broker, broker.topology.queue("outbound"))
    assert [SendCommand.model_validate_json(c.body).command_id for c in commands] == ["rpl_died"]
    message = await store.db["messages"].find_one({"_id": seeded.message_id})
    assert message is not None and message["answered_by"] == "rpl_died"
    assert await store.db["replies"].count_documents({}) == 1
