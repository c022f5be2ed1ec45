"""With the store down for a minute, ingress keeps accepting known agents' webhooks, and once
it is back the backlog drains: every accepted message stored once and answered once, each
reply's bubbles delivered once, nothing dead-lettered.

The stack runs on a FerretDB of its own (the shared one serves every other test).
`STORE_OUTAGE_SECONDS` sets the outage (60 by default).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from shared.broker import Broker
from tests.e2e.conftest import OnboardedAgent, Stack, running_stack
from tests.e2e.private_infra import PrivateFerretDB, ferretdb_binary

OUTAGE_SECONDS = float(os.environ.get("STORE_OUTAGE_SECONDS", "60"))
LEADS = 6
# Retries outlast the outage, so nothing is dead-lettered while the store is away.
RETRY_DELAYS_MS = "[1000, 2000, 5000, 10000, 20000, 30000, 60000]"


def new_lead() -> str:
    return f"6591{uuid.uuid4().int % 1_000_000:06d}"


async def thread_of(stack: Stack, agent: OnboardedAgent, lead: str) -> str | None:
    db = stack.store.db
    person = await db["leads"].find_one({"phone": "+" + lead})
    if person is None:
        return None
    thread = await db["threads"].find_one({"agent_id": agent.agent.id, "lead_id": person["_id"]})
    return None if thread is None else str(thread["_id"])


async def stored_and_answered(stack: Stack, agent: OnboardedAgent, lead: str) -> tuple[int, int]:
    thread = await thread_of(stack, agent, lead)
    if thread is None:
        return 0, 0
    db = stack.store.db
    inbound = await db["messages"].count_documents({"thread_id": thread, "direction": "in"})
    replies = await db["replies"].find({"thread_id": thread}).to_list()
    return inbound, sum(len(r["answers"]) for r in replies)


async def test_ingress_accepts_through_a_store_outage_and_the_backlog_drains(
    tmp_path: Path,
) -> None:
    ferretdb = PrivateFerretDB(tmp_path / "ferretdb", ferretdb_binary())
    await ferretdb.start()
    try:
        async with running_stack(
            tmp_path / "logs",
            {"RETRY_DELAYS_MS": RETRY_DELAYS_MS},
            servers={"mongodb_url": ferretdb.url},
        ) as stack:
            agent = await stack.onboard()
            first = new_lead()
            await stack.lead_says(agent, first, "Hi, any 3-bedroom condo in Tampines?")
            deadline = time.monotonic() + 60
            while not await stack.sent_to(agent, first):  # the agent is known everywhere
                assert time.monotonic() < deadline, "no reply before the outage"
                await asyncio.sleep(0.5)

            await ferretdb.kill()
            outage_started = time.monotonic()
            leads = [new_lead() for _ in range(LEADS)]
            # Spread over the outage; lead_says asserts ingress answered 200 each time.
            for n, lead in enumerate(leads):
                await stack.lead_says(agent, lead, f"Hello, is the unit near MRT still free? ({n})")
                await asyncio.sleep(OUTAGE_SECONDS / (LEADS + 1))
            for lead in leads:
                assert await stack.sent_to(agent, lead) == []  # nothing answered without a store
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            await ferretdb.start()

            deadline = time.monotonic() + 240
            while True:
                progress = [await stored_and_answered(stack, agent, lead) for lead in leads]
                if all(p == (1, 1) for p in progress):
                    break
                assert time.monotonic() < deadline, f"backlog did not drain: {progress}"
                await asyncio.sleep(1)
            for lead in leads:  # each reply's bubbles reached the lead once
                thread = await thread_of(stack, agent, lead)
                replies = await stack.store.db["replies"].find({"thread_id": thread}).to_list()
                replies.sort(key=lambda r: r["created_at"])
                made = [b["text"] for r in replies for b in r["command"]["bubbles"]]
                deadline = time.monotonic() + 60
                while len(received := await stack.sent_to(agent, lead)) < len(made):
                    assert time.monotonic() < deadline, (lead, received, made)
                    await asyncio.sleep(0.5)
                await asyncio.sleep(1)
                received = await stack.sent_to(agent, lead)
                texts = [m.get("text") or (m.get("message") or {}).get("body") for m in received]
                assert texts == made, lead

            broker = Broker(stack.settings, "outage-check")
            await broker.connect()
            try:
                for stage in ("router", "dedup", "brain", "outbound"):
                    queue = broker.topology.dead_letter_queue(stage)
                    assert await broker.queue_depth(queue) == 0, stage
            finally:
                await broker.close()
    finally:
        await ferretdb.stop()
