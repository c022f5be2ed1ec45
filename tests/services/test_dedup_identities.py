"""Dedup and leads without phone numbers: business-scoped user IDs, portfolios and merges."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.dedup import __main__ as dedup_main
from shared.broker import Broker
from shared.models import InboundMessage, ThreadWork, UserEvent, utcnow
from shared.repositories.consents import ConsentRepository
from shared.repositories.lead_merges import LeadMerges
from shared.repositories.leads import LeadRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import (
    RunningService,
    ServiceRunner,
    Tenant,
    Tenants,
    eventually,
    fetch_event,
)

USER_ID = "SG.1349120865530274"
NUMBER = "6597771234"


@pytest.fixture
async def dedup(services: ServiceRunner) -> RunningService:
    return await services.start("dedup", dedup_main.setup)


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent()


async def in_portfolio(store: Store, tenant: Tenant, portfolio: str) -> None:
    await store.db["agents"].update_one(
        {"_id": tenant.agent_id}, {"$set": {"business_portfolio_id": portfolio}}
    )


def inbound(
    tenant: Tenant,
    provider_id: str,
    *,
    wa_id: str | None = None,
    user_id: str | None = USER_ID,
    parent: str | None = None,
    username: str | None = "@rachel.homes",
    text: str = "Hi, any 3-bedroom condo in the East?",
    offset_ms: int = 0,
) -> InboundMessage:
    sent_at = utcnow() + timedelta(milliseconds=offset_ms)
    return InboundMessage(
        event_id=f"evt-{tenant.agent_id}-{provider_id}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        provider_message_id=provider_id,
        lead_wa_id=wa_id,
        lead_user_id=user_id,
        lead_parent_user_id=parent,
        lead_username=username,
        lead_name="Rachel",
        type="text",
        text=text,
        sent_at=sent_at,
        received_at=sent_at,
    )


async def send(broker: Broker, *messages: InboundMessage) -> None:
    for message in messages:
        await broker.publish(message, message_id=message.event_id)


async def test_a_lead_known_only_by_user_id_is_stored_without_a_phone_and_goes_to_the_brain(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    await send(broker, inbound(tenant, "wamid.u1"))
    work = await fetch_event(broker, "brain", ThreadWork)
    assert work is not None

    lead = await store.db["leads"].find_one({"_id": work.lead_id})
    assert lead is not None
    assert "phone" not in lead
    assert lead["user_ids"] == [
        {"portfolio": f"agent:{tenant.agent_id}", "user_id": USER_ID, "org_id": tenant.org_id}
    ]
    assert [u["username"] for u in lead["usernames"]] == ["@rachel.homes"]
    message = await store.db["messages"].find_one({"thread_id": work.thread_id})
    assert message is not None and message["from"] == USER_ID
    assert dedup.outcome_count("dead_lettered") == 0


async def test_a_number_whatsapp_reports_in_a_range_unknown_to_the_phone_library_is_kept(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    # Country code 999 is not assigned in the library's metadata; WhatsApp vouches for it.
    await send(broker, inbound(tenant, "wamid.n1", wa_id="999123456789", user_id=None))
    work = await fetch_event(broker, "brain", ThreadWork)
    assert work is not None

    lead = await store.db["leads"].find_one({"_id": work.lead_id})
    assert lead is not None and lead["phone"] == "+999123456789"
    assert dedup.outcome_count("dead_lettered") == 0


async def test_a_message_with_no_usable_identifier_is_dead_lettered_with_the_reason(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    await send(broker, inbound(tenant, "wamid.bad", user_id="not-a-bsuid"))
    dead = await broker.fetch(broker.topology.dead_letter_queue("dedup"), timeout=5)
    assert dead is not None
    assert "not-a-bsuid" in str(dead.headers["x-dead-reason"])
    assert await store.db["leads"].count_documents({}) == 0


async def test_forty_simultaneous_messages_from_a_new_user_id_make_exactly_one_lead(
    services: ServiceRunner, broker: Broker, store: Store, settings: Settings, tenant: Tenant
) -> None:
    replicas = [await services.start("dedup", dedup_main.setup) for _ in range(2)]
    messages = [inbound(tenant, f"wamid.burst-{n}", offset_ms=n) for n in range(40)]
    await asyncio.gather(*(broker.publish(m, message_id=m.event_id) for m in messages))

    async def done() -> bool:
        return sum(r.outcome_count("ok") for r in replicas) >= 40

    await eventually(done, timeout=30)
    assert all(r.outcome_count("dead_lettered") == 0 for r in replicas)
    assert await store.db["leads"].count_documents({}) == 1
    assert await store.db["threads"].count_documents({}) == 1
    assert await store.db["messages"].count_documents({}) == 40


async def test_agents_of_one_portfolio_share_a_user_id_lead_and_of_two_portfolios_do_not(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    same = await tenants.agent(
        tenant.org_id, number="+6591110002", app="SamePortfolio", app_id=None
    )
    other = await tenants.agent(
        tenant.org_id, number="+6591110003", app="OtherPortfolio", app_id=None
    )
    await in_portfolio(store, tenant, "bp_lim")
    await in_portfolio(store, same, "bp_lim")
    await in_portfolio(store, other, "bp_tan")
    await send(broker, *(inbound(t, "wamid.x") for t in (tenant, same, other)))
    await dedup.wait_for("ok", 3)

    threads = await store.db["threads"].find({}).to_list()
    by_agent = {t["agent_id"]: t["lead_id"] for t in threads}
    assert by_agent[tenant.agent_id] == by_agent[same.agent_id]
    assert by_agent[other.agent_id] != by_agent[tenant.agent_id]
    assert await store.db["leads"].count_documents({}) == 2


async def test_a_parent_user_id_joins_the_leads_of_two_portfolios(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    other = await tenants.agent(
        tenant.org_id, number="+6591110003", app="OtherPortfolio", app_id=None
    )
    await in_portfolio(store, tenant, "bp_lim")
    await in_portfolio(store, other, "bp_tan")
    await send(broker, inbound(tenant, "wamid.a", user_id="SG.111"))
    await dedup.wait_for("ok", 1)
    await send(broker, inbound(other, "wamid.b", user_id="SG.222"))
    await dedup.wait_for("ok", 2)
    assert await store.db["leads"].count_documents({"merged_into": None}) == 2

    parent = "SG.ENT.11815799212886844830"
    await send(broker, inbound(tenant, "wamid.c", user_id="SG.111", parent=parent))
    await dedup.wait_for("ok", 3)
    await send(broker, inbound(other, "wamid.d", user_id="SG.222", parent=parent))
    await dedup.wait_for("ok", 4)

    threads = await store.db["threads"].find({}).to_list()
    assert len({t["lead_id"] for t in threads}) == 1
    assert await store.db["leads"].count_documents({"merged_into": None}) == 1


async def test_a_number_revealed_later_merges_the_user_id_lead_with_the_lead_that_had_it(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    colleague = await tenants.agent(
        tenant.org_id, number="+6591110002", app="Colleague", app_id=None
    )
    # The person wrote to the colleague by number long ago, then to this agent by username.
    await send(broker, inbound(colleague, "wamid.old", wa_id=NUMBER, user_id=None, offset_ms=-9))
    await dedup.wait_for("ok", 1)
    await send(broker, inbound(tenant, "wamid.new"))
    await dedup.wait_for("ok", 2)
    before = {t["agent_id"]: t async for t in store.db["threads"].find({})}
    phone_lead = before[colleague.agent_id]["lead_id"]
    user_id_lead = before[tenant.agent_id]["lead_id"]
    assert phone_lead != user_id_lead
    # The username lead said STOP to this organization before the number was known.
    await ConsentRepository(store).record(
        org_id=tenant.org_id,
        lead_id=user_id_lead,
        agent_id=tenant.agent_id,
        opted_out=True,
        how="lead-message",
        at=utcnow(),
    )

    await send(broker, inbound(tenant, "wamid.both", wa_id=NUMBER, offset_ms=5))
    await dedup.wait_for("ok", 3)

    threads = await store.db["threads"].find({}).to_list()
    assert {t["lead_id"] for t in threads} == {phone_lead}, "the lead with the number survives"
    assert len(threads) == 2, "each agent keeps its thread"
    messages = await store.db["messages"].find({}).to_list()
    assert len(messages) == 3 and {m["lead_id"] for m in messages} == {phone_lead}
    survivor = await store.db["leads"].find_one({"_id": phone_lead})
    assert survivor is not None
    assert survivor["phone"] == "+" + NUMBER
    assert [u["user_id"] for u in survivor["user_ids"]] == [USER_ID]
    assert survivor["first_touch"]["agent_id"] == colleague.agent_id, "the earliest first touch"
    absorbed = await store.db["leads"].find_one({"_id": user_id_lead})
    assert absorbed is not None
    assert (absorbed["merged_into"], absorbed["merge_complete"]) == (phone_lead, True)
    assert await ConsentRepository(store).opted_out(tenant.org_id, phone_lead), "opt-out wins"
    audit = await store.db["audit_log"].find({"action": "lead.merge"}).to_list()
    assert [(a["org_id"], a["target"]) for a in audit] == [(tenant.org_id, phone_lead)]

    # Later messages by user ID alone land in the merged lead's thread.
    await send(broker, inbound(tenant, "wamid.later", offset_ms=9))
    work = None
    for _ in range(4):
        work = await fetch_event(broker, "brain", ThreadWork)
    assert work is not None and work.lead_id == phone_lead


async def test_two_merges_of_the_same_leads_at_once_agree_on_one_survivor(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    colleague = await tenants.agent(
        tenant.org_id, number="+6591110002", app="Colleague", app_id=None
    )
    await send(broker, inbound(colleague, "wamid.p", wa_id=NUMBER, user_id=None))
    await send(broker, inbound(tenant, "wamid.u"))
    await dedup.wait_for("ok", 2)
    ids = [t["lead_id"] async for t in store.db["threads"].find({})]

    merges = LeadMerges(store)
    results = await asyncio.gather(merges.merge(ids[0], ids[1]), merges.merge(ids[1], ids[0]))

    assert len(set(results)) == 1
    assert await store.db["leads"].count_documents({"merged_into": None}) == 1
    assert {t["lead_id"] async for t in store.db["threads"].find({})} == {results[0]}


def identity_event(tenant: Tenant, kind: str, **fields: str) -> UserEvent:
    return UserEvent(
        event_id=f"evt-{kind}-{utcnow().timestamp()}",
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        type=kind,
        at=utcnow(),
        **fields,
    )


async def test_a_lead_who_changed_number_keeps_their_lead_under_the_new_one(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    await send(broker, inbound(tenant, "wamid.old", wa_id=NUMBER, user_id=None))
    await dedup.wait_for("ok", 1)
    event = identity_event(tenant, "changed-number", lead_wa_id="6598880000", previous_wa_id=NUMBER)
    await broker.publish(event, message_id=event.event_id)
    await dedup.wait_for("ok", 2)
    await send(broker, inbound(tenant, "wamid.new", wa_id="6598880000", user_id=None))
    await dedup.wait_for("ok", 3)

    leads = await store.db["leads"].find({}).to_list()
    assert len(leads) == 1
    assert (leads[0]["phone"], leads[0]["former_phones"]) == ("+6598880000", ["+" + NUMBER])
    assert await store.db["threads"].count_documents({}) == 1


async def test_a_new_user_id_joins_the_lead_its_number_names_and_a_stranger_makes_nothing(
    dedup: RunningService, broker: Broker, store: Store, tenant: Tenant
) -> None:
    await send(broker, inbound(tenant, "wamid.old", wa_id=NUMBER, user_id=None))
    await dedup.wait_for("ok", 1)
    known = identity_event(tenant, "changed-user-id", lead_wa_id=NUMBER, lead_user_id=USER_ID)
    stranger = identity_event(tenant, "changed-user-id", lead_user_id="SG.999")
    for event in (known, stranger):
        await broker.publish(event, message_id=event.event_id)
    await dedup.wait_for("ok", 3)

    leads = await store.db["leads"].find({}).to_list()
    assert len(leads) == 1
    assert [u["user_id"] for u in leads[0]["user_ids"]] == [USER_ID]


async def test_a_merge_across_organizations_shows_each_only_what_came_through_it(
    dedup: RunningService, broker: Broker, store: Store, tenants: Tenants, tenant: Tenant
) -> None:
    elsewhere = await tenants.agent(number="+6591110009", app="OtherAgency", app_id=None)
    # Another agency knew the number first; this agency meets the person by username.
    first = inbound(elsewhere, "wamid.y", wa_id=NUMBER, user_id=None, username=None, offset_ms=-50)
    await send(broker, first.model_copy(update={"lead_name": "Rachel Tan (Y)"}))
    await dedup.wait_for("ok", 1)
    await send(broker, inbound(tenant, "wamid.x1", offset_ms=-10))
    await dedup.wait_for("ok", 2)
    await send(broker, inbound(tenant, "wamid.x2", wa_id=NUMBER))
    await dedup.wait_for("ok", 3)

    [thread] = await store.db["threads"].find({"org_id": tenant.org_id}).to_list()
    lead = await LeadRepository(store).get(thread["lead_id"])
    assert lead is not None and lead.first_touch is not None
    assert lead.first_touch["org_id"] == elsewhere.org_id  # the registry's earliest
    ours = lead.view_for(tenant.org_id)
    assert ours.first_touch is not None and ours.first_touch["agent_id"] == tenant.agent_id
    assert ours.names == ("Rachel",) and ours.username == "@rachel.homes"
    theirs = lead.view_for(elsewhere.org_id)
    assert theirs.names == ("Rachel Tan (Y)",) and theirs.username is None
    assert theirs.user_ids == ()
    audit = await store.db["audit_log"].find({"action": "lead.merge"}).to_list()
    assert {a["org_id"] for a in audit} == {tenant.org_id}
