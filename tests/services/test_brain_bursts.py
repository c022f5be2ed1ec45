"""Bursts across two brain replicas: each thread's burst answered once, in the order sent,
and a message arriving after the reply gets the next reply."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from shared.broker import Broker
from shared.identity import WhatsAppUser
from shared.models import InboundMessage, SendCommand, ThreadWork, utcnow
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.messages import MessageRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import ServiceRunner, Tenant, Tenants, drain, eventually
from tests.services.test_brain import start_brain

QUIET = 1.0
# The provider timestamps of the burst count from here.
BASE = utcnow().replace(microsecond=0) - timedelta(minutes=5)
# Sent in this order (provider timestamps), delivered to us in another: the later budget
# must win, so the reply's profile shows which order was used.
BURST = [
    ("Looking to buy for my family", 0),
    ("budget 1.2m", 1),
    ("sorry, make that 1.5m", 2),
]
ARRIVAL = [2, 0, 1]  # the order the webhooks arrive in


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent(bot_name="Mia")


async def new_thread(store: Store, tenant: Tenant, n: int) -> tuple[str, str, str]:
    phone = f"+659123{n:04d}"
    now = utcnow()
    source = {"source": "organic"}
    lead, _ = await LeadRepository(store).resolve(
        WhatsAppUser(phone=phone),
        Sighting(
            org_id=tenant.org_id,
            agent_id=tenant.agent_id,
            portfolio=f"agent:{tenant.agent_id}",
            at=now,
            name=None,
            source=source,
        ),
    )
    thread, _ = await ThreadRepository(store).resolve(
        org_id=tenant.org_id, agent_id=tenant.agent_id, lead_id=lead.id, at=now, source=source
    )
    return thread.id, lead.id, phone


async def arrive(
    store: Store,
    broker: Broker,
    tenant: Tenant,
    thread: tuple[str, str, str],
    text: str,
    sent_offset: int,
) -> None:
    """Store a lead's message and announce it, as dedup does."""
    thread_id, lead_id, phone = thread
    message = InboundMessage(
        event_id=f"evt-{thread_id}-{text}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        provider_message_id=f"wamid.{thread_id}.{sent_offset}.{random.random()}",
        lead_wa_id=phone.lstrip("+"),
        lead_name=None,
        type="text",
        text=text,
        sent_at=BASE + timedelta(seconds=sent_offset),
        received_at=utcnow(),
    )
    stored, _ = await MessageRepository(store).store_inbound(
        message, thread_id=thread_id, lead_id=lead_id, sender=phone
    )
    await ThreadRepository(store).touch_inbound(tenant.org_id, thread_id, message.sent_at)
    work = ThreadWork(
        event_id=f"wrk-{stored.id}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        thread_id=thread_id,
        lead_id=lead_id,
    )
    await broker.publish(work, message_id=work.event_id)


@pytest.mark.parametrize("settings", [{"burst_quiet_seconds": QUIET}], indirect=True)
async def test_interleaved_bursts_on_two_replicas_are_each_answered_once_in_sent_order(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    replicas = [await start_brain(services, store, settings) for _ in range(2)]
    threads = [await new_thread(store, tenant, n) for n in range(4)]
    # Interleaved: the first arriving message of every thread, then the second ...
    for position in ARRIVAL:
        for thread in threads:
            text, offset = BURST[position]
            await arrive(store, broker, tenant, thread, text, offset)
            await asyncio.sleep(0.05)

    async def all_answered() -> bool:
        return await store.db["replies"].count_documents({"org_id": tenant.org_id}) >= 4

    await eventually(all_answered, timeout=20)
    await asyncio.sleep(QUIET + 0.5)  # room for a second reply to a burst, which must not come
    replies = await store.db["replies"].find({"org_id": tenant.org_id}).to_list()
    assert sorted(r["thread_id"] for r in replies) == sorted(t[0] for t in threads)
    assert all(len(r["answers"]) == 3 for r in replies)
    for thread_id, _, _ in threads:
        state = await store.db["threads"].find_one({"_id": thread_id})
        assert state is not None
        assert state["profile"]["budget"] == 1_500_000  # the last one sent, not the last to arrive
        assert state["profile"]["intent"] == "own_stay"
    assert sum(r.outcome_count("deferred") for r in replicas) > 0  # they waited for quiet
    commands = await drain(broker, broker.topology.queue("outbound"))
    assert len(commands) == 4
    assert {SendCommand.model_validate_json(c.body).thread_id for c in commands} == {
        t[0] for t in threads
    }

    # A message arriving after the reply is not lost: it gets the next reply, alone.
    await arrive(store, broker, tenant, threads[0], "3 bedrooms please", 10)

    async def answered_again() -> bool:
        return await store.db["replies"].count_documents({"thread_id": threads[0][0]}) == 2

    await eventually(answered_again, timeout=20)
    latest = await store.db["replies"].find_one(
        {"thread_id": threads[0][0]}, sort=[("created_at", -1)]
    )
    assert latest is not None and len(latest["answers"]) == 1
