"""Dedup: one lead per number, one thread per agent and lead, each message stored once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.dedup import __main__ as dedup_main
from shared.broker import Broker
from shared.models import InboundMessage, ThreadWork, UserEvent, utcnow
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


async def start_dedup(services: ServiceRunner, store: Store, settings: Settings) -> RunningService:
    """Dedup consuming its stage, wired by services/dedup/__main__.py."""
    return await services.start("dedup", dedup_main.setup)


@pytest.fixture
async def dedup(services: ServiceRunner, store: Store, settings: Settings) -> RunningService:
    return await start_dedup(services, store, settings)


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent()


def inbound(
    tenant: Tenant,
    provider_id: str = "wamid.first",
    *,
    wa_id: str = LEAD_WA_ID,
    text: str = "Hi, any 3-bedroom condo in the East?",
    offset_ms: int = 0,
) -> InboundMessage:
    sent_at = utcnow() + timedelta(milliseconds=offset_ms)
    return InboundMessage(
        event_id=f"evt-{provider_id}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        provider_message_id=provider_id,
        lead_wa_id=wa_id,
        lead_name="Rachel Lim",
        type="text",
        text=text,
        sent_at=sent_at,
        received_at=sent_at,
    )


async def test_first_message_creates_lead_thread_and_message_and_thread_work(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    message = inbound(tenant)
    await broker.publish(message, message_id=message.event_id)
    work = await fetch_event(broker, "brain", ThreadWork)
    assert work is not None

    leads = await store.db["leads"].find({}).to_list()
    assert [lead["phone"] for lead in leads] == [LEAD_PHONE]
    threads = await store.db["threads"].find({}).to_list()
    assert len(threads) == 1
    thread = threads[0]
    assert (thread["org_id"], thread["agent_id"], thread["lead_id"]) == (
        tenant.org_id,
        tenant.agent_id,
        leads[0]["_id"],
    )
    messages = await store.db["messages"].find({}).to_list()
    assert len(messages) == 1
    stored = messages[0]
    assert stored["provider_message_id"] == "wamid.first"
    assert stored["thread_id"] == thread["_id"]
    assert stored["org_id"] == tenant.org_id
    assert stored["direction"] == "in"
    assert stored["answered"] is False
    assert stored["text"] == message.text

    assert (work.org_id, work.agent_id) == (tenant.org_id, tenant.agent_id)
    assert (work.thread_id, work.lead_id) == (thread["_id"], leads[0]["_id"])


async def test_duplicate_message_is_stored_once_and_dispatched_once(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    message = inbound(tenant)
    await broker.publish(message, message_id=message.event_id)
    await dedup.wait_for("ok", 1)
    await broker.publish(message, message_id=message.event_id)
    await dedup.wait_for("ok", 2)

    assert await store.db["messages"].count_documents({}) == 1
    works = await drain(broker, broker.topology.queue("brain"))
    assert len(works) == 1


async def test_two_agents_of_one_organization_share_the_lead_but_not_the_thread(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    colleague = await tenants.agent(
        tenant.org_id, number="+6591110002", app="LimRealtySG", app_id=None
    )
    for agent in (tenant, colleague):
        message = inbound(agent, "wamid.same-id-at-both-apps")
        await broker.publish(message, message_id=f"{agent.agent_id}:{message.event_id}")
    await dedup.wait_for("ok", 2)

    leads = await store.db["leads"].find({}).to_list()
    assert len(leads) == 1
    threads = await store.db["threads"].find({}).to_list()
    assert sorted(t["agent_id"] for t in threads) == sorted([tenant.agent_id, colleague.agent_id])
    assert {t["lead_id"] for t in threads} == {leads[0]["_id"]}
    assert await store.db["messages"].count_documents({}) == 2
    works = await drain(broker, broker.topology.queue("brain"))
    assert len(works) == 2


async def test_concurrent_messages_from_a_new_number_create_exactly_one_lead(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    replicas = [await start_dedup(services, store, settings) for _ in range(2)]
    messages = [inbound(tenant, f"wamid.burst-{n}", offset_ms=n) for n in range(10)]
    await asyncio.gather(*(broker.publish(m, message_id=m.event_id) for m in messages))

    async def all_handled() -> int:
        return sum(r.outcome_count("ok") for r in replicas)

    async def done() -> bool:
        return await all_handled() >= 10

    await eventually(done, timeout=20)
    assert all(r.outcome_count("ok") > 0 for r in replicas), "both replicas took part"
    assert all(r.outcome_count("dead_lettered") == 0 for r in replicas)
    assert await store.db["leads"].count_documents({"phone": LEAD_PHONE}) == 1
    assert await store.db["leads"].count_documents({}) == 1
    assert await store.db["threads"].count_documents({}) == 1
    assert await store.db["messages"].count_documents({}) == 10
    lead = await store.db["leads"].find_one({})
    assert lead is not None
    assert [n["name"] for n in lead["names"]] == ["Rachel Lim"]


async def test_invalid_lead_number_is_dead_lettered_with_a_readable_reason(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    message = inbound(tenant, wa_id="12")
    await broker.publish(message, message_id=message.event_id)
    dead = await broker.fetch(broker.topology.dead_letter_queue("dedup"), timeout=5)
    assert dead is not None
    reason = str(dead.headers["x-dead-reason"])
    assert "'12'" in reason and "phone number" in reason
    assert dedup.outcome_count("retried") == 0  # retrying cannot make the number valid
    assert await store.db["leads"].count_documents({}) == 0
    assert await broker.queue_depth(broker.topology.queue("brain")) == 0


async def test_opt_out_user_event_records_the_consent(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    event = UserEvent(
        event_id="evt-optout",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        type="opted-out",
        lead_wa_id=LEAD_WA_ID,
        at=utcnow(),
    )
    await broker.publish(event, message_id=event.event_id)
    await dedup.wait_for("ok", 1)

    lead = await store.db["leads"].find_one({"phone": LEAD_PHONE})
    assert lead is not None
    consents = await store.db["consents"].find({}).to_list()
    assert len(consents) == 1
    consent = consents[0]
    assert consent["opted_out"] is True
    assert (consent["org_id"], consent["lead_id"], consent["agent_id"]) == (
        tenant.org_id,
        lead["_id"],
        tenant.agent_id,
    )
    assert await broker.queue_depth(broker.topology.queue("brain")) == 0


async def test_out_of_order_consent_events_keep_the_latest_decision(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    # Gupshup delivers callbacks out of order: an older opt-in must not undo a newer opt-out.
    now = utcnow()
    for event_type, at in (("opted-out", now), ("opted-in", now - timedelta(minutes=5))):
        event = UserEvent(
            event_id=f"evt-{event_type}",
            org_id=tenant.org_id,
            agent_id=tenant.agent_id,
            type=event_type,
            lead_wa_id=LEAD_WA_ID,
            at=at,
        )
        await broker.publish(event, message_id=event.event_id)
        await dedup.wait_for("ok", 1 if event_type == "opted-out" else 2)

    consent = await store.db["consents"].find_one({"org_id": tenant.org_id})
    assert consent is not None
    assert consent["opted_out"] is True
