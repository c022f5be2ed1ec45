"""Chaos: services killed with SIGKILL at random moments while leads keep writing.

Afterwards every webhook Gupshup got a 2xx for is stored exactly once and answered exactly
once, no reply reached a lead twice, each thread's replies arrived in the order they were
made, and nothing sits in a dead-letter queue unexplained. `make chaos` runs a long version
(CHAOS_LEADS, CHAOS_MESSAGES, CHAOS_KILL_EVERY); `make test` runs this short one.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.broker import Broker
from tests.e2e.conftest import OnboardedAgent, Stack, running_stack
from tests.e2e.test_pipeline import eventually, new_lead

LEADS = int(os.environ.get("CHAOS_LEADS", "8"))
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "3"))  # per lead
KILL_EVERY = float(os.environ.get("CHAOS_KILL_EVERY", "1.5"))  # seconds, about
VICTIMS = ("ingress", "router", "dedup", "brain", "outbound")
TEXTS = [
    "Hi, looking for a condo",
    "budget around 1.5m",
    "Tampines or Bedok",
    "3 bedrooms",
    "within 6 months",
    "can I book a viewing?",
]


@pytest.fixture(scope="module")
async def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {
        "LEASE_SECONDS": "3",  # a killed brain's thread is taken over soon
        "ANSWER_CLAIM_STALE_SECONDS": "10",
        "BURST_QUIET_SECONDS": "0.3",
        "RETRY_DELAYS_MS": "[200, 500, 1000, 2000, 5000]",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    async with running_stack(tmp_path_factory.mktemp("chaos-logs"), env) as stack:
        yield stack


async def deliver(stack: Stack, agent: OnboardedAgent, lead: str, text: str) -> None:
    """Post a lead's message as Gupshup does: again, same id, until it gets a 2xx."""
    body: dict[str, Any] = {
        "app": agent.app,
        "from": lead,
        "name": "Rachel Lim",
        "text": text,
        "id": f"wamid.{uuid.uuid4().hex}",
        "timestamp": int(time.time() * 1000),
    }
    deadline = time.monotonic() + 60
    while True:
        async with stack.http.post(f"{stack.sandbox_url}/sandbox/v1/inbound", json=body) as r:
            result = await r.json()
        if result.get("callback_status") == 200:
            return
        assert time.monotonic() < deadline, f"never accepted: {result}"
        await asyncio.sleep(0.3)


async def chaos(stack: Stack, stop: asyncio.Event, killed: list[str]) -> None:
    """Kill a random service now and then; restart what died, as the cluster would."""
    processes = stack.processes
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    first_round = rng.sample(VICTIMS, len(VICTIMS))  # every service dies at least once
    next_kill = time.monotonic() + rng.uniform(0.5, KILL_EVERY)
    while not stop.is_set() or first_round:
        if time.monotonic() >= next_kill:
            victim = first_round.pop() if first_round else rng.choice(VICTIMS)
            process = processes.processes.get(victim)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed.append(victim)
            next_kill = time.monotonic() + rng.uniform(KILL_EVERY / 2, KILL_EVERY * 1.5)
        processes.supervise()
        await asyncio.sleep(0.05)
    # Whatever is still down comes back before the checks.
    while any(p.poll() is not None for p in processes.processes.values()) or processes.restart_at:
        processes.supervise()
        await asyncio.sleep(0.05)
    await processes.wait_ready(timeout=60)


async def settled(stack: Stack, agents: list[OnboardedAgent], said: int) -> dict[str, Any]:
    ids = [a.agent.id for a in agents]
    db = stack.store.db
    return {
        "stored": await db["messages"].count_documents(
            {"agent_id": {"$in": ids}, "direction": "in"}
        ),
        "unanswered": await db["messages"].count_documents(
            {"agent_id": {"$in": ids}, "direction": "in", "answered": False}
        ),
        "unfinished": await db["replies"].count_documents(
            {"org_id": {"$in": [a.org.id for a in agents]}, "outbound_done": {"$ne": True}}
        ),
        "open_sends": await db["sends"].count_documents(
            {"agent_id": {"$in": ids}, "state": {"$in": ["sending", "unknown"]}}
        ),
        "said": said,
    }


def done(p: dict[str, Any]) -> bool:
    return (
        p["stored"] == p["said"]
        and p["unanswered"] == 0
        and p["unfinished"] == 0
        and p["open_sends"] == 0
    )


@pytest.mark.timeout(900)
async def test_killed_services_lose_double_and_reorder_nothing(chaos_stack: Stack) -> None:
    stack = chaos_stack
    agents = [await stack.onboard(), await stack.onboard()]
    for agent in agents:
        # Gupshup reports what it accepted: how a send interrupted by a kill is settled.
        await stack.control(
            "POST",
            f"/sandbox/v1/apps/{agent.app}/rules",
            {"status_delays_ms": {"enqueued": 50, "sent": 200}},
        )
    leads = [(agents[n % 2], new_lead()) for n in range(LEADS)]
    stop = asyncio.Event()
    killed: list[str] = []
    chaos_task = asyncio.create_task(chaos(stack, stop, killed))
    try:

        async def conversation(agent: OnboardedAgent, lead: str) -> None:
            for n in range(MESSAGES):
                await deliver(stack, agent, lead, TEXTS[n % len(TEXTS)])
                await asyncio.sleep(random.uniform(0.2, 1.5))

        await asyncio.gather(*(conversation(agent, lead) for agent, lead in leads))
    finally:
        stop.set()
        await chaos_task
    assert set(killed) == set(VICTIMS), killed

    progress = await eventually(
        lambda: settled(stack, agents, LEADS * MESSAGES), done, timeout=120 + LEADS * MESSAGES
    )
    assert progress["stored"] == LEADS * MESSAGES  # each accepted webhook stored once

    db = stack.store.db
    for agent, lead in leads:
        person = await db["leads"].find_one({"phone": "+" + lead})
        assert person is not None
        thread = await db["threads"].find_one(
            {"agent_id": agent.agent.id, "lead_id": person["_id"]}
        )
        assert thread is not None
        inbound = (
            await db["messages"].find({"thread_id": thread["_id"], "direction": "in"}).to_list()
        )
        replies = await db["replies"].find({"thread_id": thread["_id"]}).to_list()
        replies.sort(key=lambda r: r["created_at"])
        # Answered exactly once: every inbound message by exactly one stored reply.
        answered = [a for r in replies for a in r["answers"]]
        assert sorted(answered) == sorted(m["_id"] for m in inbound), lead
        # Each reply's bubbles reached the lead once, replies in the order they were made.
        made = [b["text"] for r in replies for b in r["command"]["bubbles"]]
        received = [
            m.get("text") or (m.get("message") or {}).get("body")
            for m in await stack.sent_to(agent, lead)
        ]
        skipped = await db["sends"].count_documents(
            {"thread_id": thread["_id"], "state": "skipped"}
        )
        assert skipped == 0, lead
        assert received == made, (lead, killed)

    broker = Broker(stack.settings, "chaos-check")
    await broker.connect()
    try:
        for stage in ("router", "dedup", "brain", "outbound"):
            dead = await broker.queue_depth(broker.topology.dead_letter_queue(stage))
            assert dead == 0, f"{stage} dead-lettered {dead} (kills: {killed})"
    finally:
        await broker.close()
    print(f"chaos: {LEADS * MESSAGES} messages, {len(killed)} kills: {sorted(killed)}")
