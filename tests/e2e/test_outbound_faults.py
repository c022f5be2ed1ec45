"""Gupshup misbehaving while leads talk: 429 bursts, timeouts, 5xx and resets.

Afterwards every reply the platform made reached each lead exactly once, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead

# Consumed in this order by each agent's sends; "accept" means Gupshup kept the message
# even though its answer was lost or an error.
FAULTS: list[dict[str, Any]] = [
    {"mode": "429_burst", "count": 4},
    {"mode": "timeout", "count": 1, "delay_ms": 3000, "accept": True},
    {"mode": "timeout", "count": 1, "delay_ms": 3000, "accept": False},
    {"mode": "500", "count": 1, "accept": True},
    {"mode": "503", "count": 2},
    {"mode": "reset", "count": 1, "accept": True},
    {"mode": "500", "count": 1, "accept": False},
    {"mode": "429", "count": 2},
]
QUESTIONS = [
    "Hi, any 3-bedroom condo in Tampines?",
    "Budget is around 1.5m",
    "We want to move in next year",
    "Can I view it this weekend?",
    "Thanks!",
]


async def drive_faults(stack: Stack, app: str, stop: asyncio.Event) -> int:
    """Inject each fault once the previous one is used up; the number injected."""
    injected = 0
    for fault in FAULTS:
        if stop.is_set():
            break
        await stack.control("POST", "/sandbox/v1/faults", {"app": app, **fault})
        injected += 1
        while not stop.is_set():
            listed = await stack.control("GET", "/sandbox/v1/faults")
            if not any(f["app"] == app for f in listed["faults"]):
                break
            await asyncio.sleep(0.05)
    return injected


async def progress(stack: Stack, agents: list[OnboardedAgent]) -> dict[str, Any]:
    """Lead messages answered, replies not finished by outbound, bubbles still open."""
    ids = [a.agent.id for a in agents]
    db = stack.store.db
    answered = await db["messages"].count_documents(
        {"agent_id": {"$in": ids}, "direction": "in", "answered": True}
    )
    pending = (
        await db["replies"]
        .find(
            {"org_id": {"$in": [a.org.id for a in agents]}, "outbound_done": {"$ne": True}},
            {"_id": 1},
        )
        .to_list()
    )
    open_sends = (
        await db["sends"]
        .find(
            {"agent_id": {"$in": ids}, "state": {"$in": ["sending", "unknown"]}},
            {"state": 1, "error": 1},
        )
        .to_list()
    )
    return {"answered": answered, "pending": pending, "open_sends": open_sends}


def settled(said: int) -> Callable[[dict[str, Any]], bool]:
    """All `said` lead messages answered and every reply's bubbles finished with."""
    return lambda p: p["answered"] == said and not p["pending"] and not p["open_sends"]


async def test_faults_at_gupshup_lose_and_double_no_message(stack: Stack) -> None:
    agents = [await stack.onboard(), await stack.onboard()]
    for agent in agents:
        # Gupshup reports what it accepted: the evidence that settles an ambiguous send.
        await stack.control(
            "POST",
            f"/sandbox/v1/apps/{agent.app}/rules",
            {"status_delays_ms": {"enqueued": 50, "sent": 300}},
        )
    leads = {agent.agent.id: [new_lead() for _ in range(3)] for agent in agents}
    stop = asyncio.Event()
    drivers = [asyncio.create_task(drive_faults(stack, a.app, stop)) for a in agents]

    said = 0
    for question in QUESTIONS:
        said += sum(len(phones) for phones in leads.values())
        await asyncio.gather(
            *(
                stack.lead_says(agent, lead, question)
                for agent in agents
                for lead in leads[agent.agent.id]
            )
        )
        await eventually(lambda: progress(stack, agents), settled(said), timeout=90)
        if all(d.done() for d in drivers):
            break
    stop.set()
    assert [await d for d in drivers] == [len(FAULTS)] * 2, "every fault was met by a send"
    faults = await stack.control("GET", "/sandbox/v1/faults")
    assert faults["faults"] == []

    db = stack.store.db
    for agent in agents:
        for lead in leads[agent.agent.id]:
            [thread] = (
                await db["threads"]
                .find({"agent_id": agent.agent.id, "lead_id": await lead_id(stack, lead)})
                .to_list()
            )
            made = (
                await db["messages"]
                .find({"thread_id": thread["_id"], "direction": "out"})
                .to_list()
            )
            made.sort(key=lambda m: (m["sent_at"], int(m["send_id"].rsplit(".", 1)[1])))
            received = await stack.sent_to(agent, lead)
            # Exactly the bubbles made, each once, in the order they were made.
            assert [m["text"] for m in received] == [m["text"] for m in made], lead
            assert len(made) >= 2
    sends = await db["sends"].find({"agent_id": {"$in": [a.agent.id for a in agents]}}).to_list()
    assert {s["state"] for s in sends} == {"submitted"}
    # Both ways out of an ambiguous send were taken: settled by a status, and sent again.
    assert any(s.get("resolved_by") == "status" for s in sends)
    counted = await send_outcomes(stack, agents)
    assert counted["resent"] >= 2 and counted["ambiguous"] >= 2 * 4, counted
    assert await stack.store.db["replies"].count_documents({"outbound_done": False}) == 0


async def send_outcomes(stack: Stack, agents: list[OnboardedAgent]) -> dict[str, float]:
    """The outbound service's own count of sends by outcome, for these agents."""
    url = f"http://127.0.0.1:{stack.settings.outbound_port}/metrics"
    async with stack.http.get(url) as response:
        text = await response.text()
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "realtybot_outbound_sends":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["agent"] in {
                a.agent.id for a in agents
            }:
                outcome = sample.labels["outcome"]
                counted[outcome] = counted.get(outcome, 0) + sample.value
    return counted


async def lead_id(stack: Stack, phone_digits: str) -> str:
    lead = await stack.store.db["leads"].find_one({"phone": "+" + phone_digits})
    assert lead is not None
    return str(lead["_id"])
