"""Dedup under contention: many first messages at once from new leads, some of them writing
several messages at the same moment and to two agents, across two dedup replicas; throughput
and whether exactly one lead was created per distinct number.

Baseline of the same run: the same shape of load through one dedup replica (other numbers).
Inbound messages are published straight to dedup's queue; only dedup runs.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

from bench.flow import scrape_by_service
from bench.plots import lines
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import BenchAgent, BenchStack, bench_stack
from bench.stats import counter, per_interval
from shared.models import InboundMessage, utcnow

# Half the numbers write once; the other half write this many messages at the same moment.
BURST = 4


def workload(agents: list[BenchAgent], numbers: int, first: int) -> list[InboundMessage]:
    """Every message of the load, shuffled: each number writes to one or both agents."""
    now = utcnow()
    messages = []
    for n in range(numbers):
        digits = str(first + n)
        count = 1 if n % 2 == 0 else BURST
        for k in range(count):
            agent = agents[(n + k) % len(agents)] if count > 1 else agents[n % len(agents)]
            messages.append(
                InboundMessage(
                    event_id=uuid.uuid4().hex,
                    org_id=agent.org_id,
                    agent_id=agent.agent.id,
                    provider_message_id=f"wamid.{uuid.uuid4().hex}",
                    lead_wa_id=digits,
                    lead_name="Bench Lead",
                    type="text",
                    text=f"Hi, message {k} about the Tampines condo",
                    sent_at=now,
                    received_at=now,
                )
            )
    random.shuffle(messages)
    return messages


async def push(stack: BenchStack, messages: list[InboundMessage], timeout: float) -> dict[str, Any]:
    """Publish all at once (64 in flight) and time dedup until it finished every one."""
    scraped = (await scrape_by_service(stack))["dedup"]
    before = sum(
        counter(scraped, "realtybot_messages_processed_total", service="dedup", outcome=o)
        for o in ("ok", "dead_lettered")
    )
    gate = asyncio.Semaphore(64)

    async def one(message: InboundMessage) -> None:
        async with gate:
            await stack.broker.publish(message, message_id=message.event_id)

    started = time.monotonic()
    began = time.time()
    publishing = asyncio.gather(*(one(m) for m in messages))
    done_at: list[float] = []
    finished = 0.0
    last = 0.0
    while time.monotonic() - started < timeout:
        scraped = (await scrape_by_service(stack))["dedup"]
        handled = sum(
            counter(scraped, "realtybot_messages_processed_total", service="dedup", outcome=o)
            for o in ("ok", "dead_lettered")
        )
        handled -= before
        if handled > last:
            done_at += [time.time()] * int(handled - last)
            last = handled
        if handled >= len(messages):
            finished = time.monotonic() - started
            break
        await asyncio.sleep(0.2)
    await publishing
    seconds = finished or time.monotonic() - started
    return {
        "messages": len(messages),
        "handled": int(last),
        "seconds": seconds,
        "per_second": last / seconds if seconds else 0.0,
        "handled_per_second": per_interval(done_at, began),
        "complete": last >= len(messages),
    }


async def counts(
    stack: BenchStack, agents: list[BenchAgent], first: int, numbers: int
) -> dict[str, int]:
    """Leads, threads and stored inbound messages of the numbers used."""
    phones = [f"+{first + n}" for n in range(numbers)]
    leads = await stack.store.db["leads"].count_documents({"phone": {"$in": phones}})
    lead_ids = [
        d["_id"] async for d in stack.store.db["leads"].find({"phone": {"$in": phones}}, {"_id": 1})
    ]
    threads = await stack.store.db["threads"].count_documents({"lead_id": {"$in": lead_ids}})
    stored = await stack.store.db["messages"].count_documents(
        {"lead_id": {"$in": lead_ids}, "direction": "in"}
    )
    return {"leads": leads, "threads": threads, "messages": stored}


def exact_count(label: str, counted: int, expected: int) -> Figure:
    """A count that must equal what was sent: nothing lost, nothing doubled."""
    return Figure(label, counted, f"of {expected}", target=f"= {expected}", met=counted == expected)


def expected_threads(agents: list[BenchAgent], numbers: int) -> int:
    """Distinct (number, agent) pairs the workload makes."""
    pairs = set()
    for n in range(numbers):
        count = 1 if n % 2 == 0 else BURST
        for k in range(count):
            agent = agents[(n + k) % len(agents)] if count > 1 else agents[n % len(agents)]
            pairs.add((n, agent.agent.id))
    return len(pairs)


async def run(context: BenchContext) -> BenchResult:
    """One replica first (baseline), then two replicas, each with its own new numbers."""
    numbers = context.size(120, 6)
    timeout = context.size(120.0, 20.0)
    result = BenchResult(
        "dedup",
        "Dedup: concurrent first messages across two replicas",
        {
            "distinct_numbers": numbers,
            "messages_per_number": f"1 (half) or {BURST} at once (half), to one or two agents",
            "in_flight_publishes": 64,
        },
    )
    runs: dict[str, Any] = {}
    for replicas in (1, 2):
        # A fresh stack each time: both runs start from an empty store.
        async with bench_stack(
            f"dedup{replicas}",
            context.log_dir / f"dedup-{replicas}",
            services=("dedup",),
            sandbox=False,
        ) as stack:
            agents = await stack.onboard(2)
            if replicas == 2:
                await stack.add_replica("dedup")
            first = 6580000000 + random.randrange(0, 5_000_000)
            messages = workload(agents, numbers, first)
            outcome = await push(stack, messages, timeout)
            outcome["counts"] = await counts(stack, agents, first, numbers)
            outcome["expected"] = {
                "leads": numbers,
                "threads": expected_threads(agents, numbers),
                "messages": len(messages),
            }
            runs[f"{replicas} replica{'s' if replicas > 1 else ''}"] = outcome
    one, two = runs["1 replica"], runs["2 replicas"]
    result.figures += [
        Figure(
            "messages handled per second, two replicas",
            two["per_second"],
            "/s",
            baseline=one["per_second"],
            baseline_name="one replica, same load",
        ),
        exact_count(
            "leads created / distinct numbers (two replicas)", two["counts"]["leads"], numbers
        ),
        exact_count(
            "threads / distinct (number, agent) pairs",
            two["counts"]["threads"],
            two["expected"]["threads"],
        ),
        exact_count(
            "inbound messages stored / sent",
            two["counts"]["messages"],
            two["expected"]["messages"],
        ),
        exact_count(
            "leads created / distinct numbers (one replica)", one["counts"]["leads"], numbers
        ),
    ]
    result.raw = runs
    if not two["complete"] or not one["complete"]:
        result.notes.append("A run did not finish in time; counts are of what was handled.")
    result.notes.append(
        "Both replicas share one store database and the machine's two cores with it and the "
        "broker; the ratio is what a second replica adds here (compare the store's insert "
        "ceiling in the pipeline benchmark)."
    )
    result.plots.append(
        lines(
            context.out_dir / "dedup.png",
            "Dedup: messages handled per second",
            "second",
            {
                name: (list(range(len(r["handled_per_second"]))), r["handled_per_second"])
                for name, r in runs.items()
            },
            "handled in the second",
        )
    )
    return result
