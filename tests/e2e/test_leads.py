"""Leads end to end: relayed copies, attribution, conversions, colleagues, concurrency."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from cli.local_stack import StackProcesses
from tests.e2e.conftest import OnboardedAgent, Stack, free_port
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply


async def say(
    stack: Stack, agent: OnboardedAgent, lead: str, text: str, *, message_id: str, timestamp_ms: int
) -> None:
    """A lead's message with a chosen provider id and WhatsApp timestamp."""
    result = await stack.control(
        "POST",
        "/sandbox/v1/inbound",
        {
            "app": agent.app,
            "from": lead,
            "name": "Rachel Lim",
            "text": text,
            "id": message_id,
            "timestamp": timestamp_ms,
        },
    )
    assert result["callback_status"] == 200


async def test_a_relayed_copy_is_ignored_but_a_real_repetition_is_answered(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    sent_at = int(time.time() * 1000)
    await say(
        stack, agent, lead, "ok", message_id=f"wamid.{uuid.uuid4().hex}", timestamp_ms=sent_at
    )
    first = await settled_reply(stack, agent, lead)
    # Gupshup relays the same message again under another id: same text, same timestamp.
    await say(
        stack, agent, lead, "ok", message_id=f"wamid.{uuid.uuid4().hex}", timestamp_ms=sent_at
    )
    await asyncio.sleep(1.5)
    assert len(await stack.sent_to(agent, lead)) == len(first)
    # The lead really says "ok" again, a few seconds later: that is answered.
    await say(
        stack,
        agent,
        lead,
        "ok",
        message_id=f"wamid.{uuid.uuid4().hex}",
        timestamp_ms=sent_at + 5_000,
    )
    again = await settled_reply(stack, agent, lead, expected_at_least=len(first) + 1)
    assert len(again) == len(first) + 1
    stored = await stack.store.db["messages"].count_documents(
        {"agent_id": agent.agent.id, "direction": "in"}
    )
    assert stored == 2


async def test_first_touch_is_kept_and_every_thread_has_its_own_source(stack: Stack) -> None:
    first_agent = await stack.onboard()
    other_org_agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(first_agent, lead, "Hi, saw your flyer #TAMPINES24")
    await settled_reply(stack, first_agent, lead)
    await stack.lead_says(other_org_agent, lead, "Hello, code: PARC88 from the roadshow")
    await settled_reply(stack, other_org_agent, lead)

    registry = await stack.store.db["leads"].find_one({"phone": f"+{lead}"})
    assert registry is not None
    touch = registry["first_touch"]
    assert (touch["agent_id"], touch["source"], touch["campaign_code"]) == (
        first_agent.agent.id,
        "campaign",
        "TAMPINES24",
    )
    threads = {
        t["agent_id"]: t["source"]
        for t in await stack.store.db["threads"].find({"lead_id": registry["_id"]}).to_list()
    }
    assert threads[other_org_agent.agent.id] == {"source": "campaign", "campaign_code": "PARC88"}

    # Each organization sees its own view: the second never sees the first's first touch.
    second_view = await stack.admin("GET", f"/v1/leads/{registry['_id']}", other_org_agent.org_key)
    assert second_view["first_touch"] is None
    first_view = await stack.admin("GET", f"/v1/leads/{registry['_id']}", first_agent.org_key)
    assert first_view["first_touch"]["campaign_code"] == "TAMPINES24"


async def thread_of(stack: Stack, agent: OnboardedAgent) -> dict[str, Any]:
    threads = await stack.admin("GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key)
    assert len(threads["items"]) == 1
    thread: dict[str, Any] = threads["items"][0]
    return thread


async def test_conversions_are_reported_per_agent_and_source(stack: Stack) -> None:
    agent = await stack.onboard()
    colleague = await stack.onboard(agent.org, org_key=agent.org_key)
    leads = [new_lead() for _ in range(3)]
    await stack.lead_says(agent, leads[0], "Hi #EXPO2026")
    await stack.lead_says(agent, leads[1], "Hello")
    await stack.lead_says(colleague, leads[2], "Hello there")
    for who, lead in ((agent, leads[0]), (agent, leads[1]), (colleague, leads[2])):
        await settled_reply(stack, who, lead)

    agent_threads = await stack.admin(
        "GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key
    )
    by_source = {t["source"]["source"]: t["thread_id"] for t in agent_threads["items"]}
    key = agent.org_key
    campaign, organic = by_source["campaign"], by_source["organic"]
    await stack.admin(
        "POST", f"/v1/threads/{campaign}/conversion", key, {"kind": "booked"}, expect=201
    )
    repeat = await stack.admin(
        "POST", f"/v1/threads/{campaign}/conversion", key, {"kind": "booked"}, expect=201
    )
    assert repeat["recorded"] is False  # once per thread and kind
    await stack.admin(
        "POST", f"/v1/threads/{campaign}/conversion", key, {"kind": "won"}, expect=201
    )
    await stack.admin(
        "POST", f"/v1/threads/{organic}/conversion", key, {"kind": "lost"}, expect=201
    )

    report = await stack.admin("GET", "/v1/reports/attribution", key)
    rows = {(r["agent_id"], r["source"]): r for r in report["rows"]}
    assert rows[(agent.agent.id, "campaign")] == {
        "agent_id": agent.agent.id,
        "source": "campaign",
        "leads": 1,
        "booked": 1,
        "won": 1,
        "lost": 0,
        "converted": 1,
        "conversion_rate": 1.0,
    }
    assert rows[(agent.agent.id, "organic")]["lost"] == 1
    assert rows[(agent.agent.id, "organic")]["conversion_rate"] == 0.0
    assert rows[(colleague.agent.id, "organic")]["leads"] == 1
    empty = await stack.admin("GET", "/v1/reports/attribution?from=2020-01-01&to=2020-02-01", key)
    assert empty["rows"] == []


async def test_colleagues_see_each_others_thread_metadata_and_other_agencies_nothing(
    stack: Stack,
) -> None:
    mine = await stack.onboard()
    colleague = await stack.onboard(mine.org, org_key=mine.org_key)
    rival = await stack.onboard()
    lead = new_lead()
    for agent in (mine, colleague, rival):
        await stack.lead_says(agent, lead, "Hi, looking for a condo in Bishan")
        await settled_reply(stack, agent, lead)

    thread = await thread_of(stack, mine)
    colleague_thread = await thread_of(stack, colleague)
    await stack.admin(
        "POST",
        f"/v1/threads/{colleague_thread['thread_id']}/conversion",
        mine.org_key,
        {"kind": "booked"},
        expect=201,
    )
    seen = await stack.admin("GET", f"/v1/threads/{thread['thread_id']}", mine.org_key)
    assert [o["agent_id"] for o in seen["other_threads"]] == [colleague.agent.id]
    other = seen["other_threads"][0]
    assert other["appointment_booked"] is True and other["stage"] == "qualifying"
    assert other["last_contact_at"] is not None and "text" not in other

    # Messages of one thread never show in another, even for the same lead and agency.
    own = await stack.admin("GET", f"/v1/threads/{thread['thread_id']}/messages", mine.org_key)
    theirs = await stack.admin(
        "GET", f"/v1/threads/{colleague_thread['thread_id']}/messages", mine.org_key
    )
    own_ids = {m["message_id"] for m in own["items"]}
    assert own_ids and not own_ids & {m["message_id"] for m in theirs["items"]}

    rival_view = await stack.admin(
        "GET", f"/v1/threads/{(await thread_of(stack, rival))['thread_id']}", rival.org_key
    )
    assert rival_view["other_threads"] == []  # not even that other threads exist

    await stack.admin("PATCH", "/v1/organization", mine.org_key, {"cross_agent_visibility": "none"})
    hidden = await stack.admin("GET", f"/v1/threads/{thread['thread_id']}", mine.org_key)
    assert hidden["other_threads"] == []


async def test_one_lead_from_many_simultaneous_webhooks_across_two_dedup_processes(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    second = StackProcesses(
        {**stack.processes.env, "DEDUP_PORT": str(free_port())}, stack.processes.sandbox_port
    )
    second.start(("dedup",), sandbox=False)
    try:
        await second.wait_ready()
        lead = new_lead()
        base = int(time.time() * 1000)
        deliveries = 40
        await asyncio.gather(
            *(
                say(
                    stack,
                    agent,
                    lead,
                    f"message {n}",
                    message_id=f"wamid.{uuid.uuid4().hex}",
                    timestamp_ms=base + n,
                )
                for n in range(deliveries)
            )
        )
        messages = stack.store.db["messages"]
        await eventually(
            lambda: messages.count_documents({"agent_id": agent.agent.id, "direction": "in"}),
            lambda n: n == deliveries,
            timeout=60,
        )
        # Both replicas really took part.
        for port in (stack.processes.env["DEDUP_PORT"], second.env["DEDUP_PORT"]):
            async with stack.http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
            stored = [
                line
                for line in metrics.splitlines()
                if line.startswith('realtybot_inbound_messages_total{outcome="stored"}')
            ]
            assert stored and float(stored[0].split()[-1]) > 0, f"dedup on {port} took no part"
    finally:
        assert second.stop() == {"dedup": 0}
    assert await stack.store.db["leads"].count_documents({"phone": f"+{lead}"}) == 1
    assert await stack.store.db["threads"].count_documents({"agent_id": agent.agent.id}) == 1
