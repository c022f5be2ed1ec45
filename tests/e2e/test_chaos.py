"""Chaos: services killed with SIGKILL, the broker and the store restarted, and Gupshup
failing for a while, at random moments while leads keep writing.

Afterwards every webhook Gupshup got a 2xx for is stored exactly once and answered exactly
once, no reply reached a lead twice, each thread's replies arrived in the order they were
made, and nothing sits in a dead-letter queue unexplained. The load generator behaves like
Gupshup: a webhook answered 5xx (ingress answers 503 while RabbitMQ is down) or not answered
at all is posted again, same id, until it gets a 2xx; only a 2xx counts as accepted, and a
4xx fails the test (with the store down, ingress still knows its agents, or says 503).

RabbitMQ and FerretDB are restarted, so the run has a node and a server of its own
(`tests/e2e/private_infra.py`): the shared ones serve every other test on the machine.
`make chaos` runs a long version (CHAOS_LEADS, CHAOS_MESSAGES, CHAOS_KILL_EVERY,
CHAOS_BROKER_RESTARTS, CHAOS_STORE_RESTARTS, CHAOS_OUTAGE_EVERY; CHAOS_SEED picks the
moments); `make test` runs this short one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from pymongo.errors import AutoReconnect

from shared.broker import Broker
from tests.e2e.conftest import OnboardedAgent, Stack, running_stack
from tests.e2e.private_infra import PrivateFerretDB, PrivateRabbitMQ, private_infra
from tests.e2e.test_pipeline import eventually, new_lead

LEADS = int(os.environ.get("CHAOS_LEADS", "8"))
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "3"))  # per lead
KILL_EVERY = float(os.environ.get("CHAOS_KILL_EVERY", "1.5"))  # seconds, about
BROKER_RESTARTS = int(os.environ.get("CHAOS_BROKER_RESTARTS", "1"))
STORE_RESTARTS = int(os.environ.get("CHAOS_STORE_RESTARTS", "1"))
OUTAGE_EVERY = float(os.environ.get("CHAOS_OUTAGE_EVERY", "2"))  # seconds between, about
SEED = int(os.environ.get("CHAOS_SEED", "7"))
VICTIMS = ("ingress", "router", "dedup", "brain", "outbound")
CONSUMERS = ("router", "dedup", "brain", "outbound")  # each consumes its stage's queue
# How long a service that lived through a broker restart may take to consume again (its
# connection retries every 5 s).
RESUME_SECONDS = 20
TEXTS = [
    "Hi, looking for a condo",
    "budget around 1.5m",
    "Tampines or Bedok",
    "3 bedrooms",
    "within 6 months",
    "can I book a viewing?",
]
# Gupshup misbehaving for a while, per agent, each fault once the previous one is used up:
# refusals outbound retries, and ambiguous answers it settles by status or resends.
GUPSHUP_FAULTS: list[dict[str, Any]] = [
    {"mode": "429_burst", "count": 3},
    {"mode": "503", "count": 2},
    {"mode": "timeout", "count": 1, "delay_ms": 3000, "accept": True},
    {"mode": "500", "count": 1, "accept": False},
]


@dataclass
class ChaosStack:
    """The stack and the private broker and store it runs on."""

    stack: Stack
    rabbitmq: PrivateRabbitMQ
    ferretdb: PrivateFerretDB


@dataclass
class ChaosLog:
    """What happened during the run, for the checks and the summary."""

    posts: Counter[int] = field(default_factory=Counter)  # webhook answers (0: none)
    accepted: int = 0
    kills: list[str] = field(default_factory=list)
    broker_restarts: int = 0
    store_restarts: int = 0
    gupshup_faults: int = 0
    broker_down: list[tuple[float, float]] = field(default_factory=list)
    store_down: list[tuple[float, float]] = field(default_factory=list)
    during_broker_outage: Counter[int] = field(default_factory=Counter)
    during_store_outage: Counter[int] = field(default_factory=Counter)
    not_resumed: list[str] = field(default_factory=list)  # see `resumed_consuming`
    # Set while `resumed_consuming` watches: a kill then would hide a consumer that never
    # came back (a restarted process consumes from its start).
    hold_kills: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, status: int, sent_at: float, now: float) -> None:
        """Record a webhook's answer, and whether an outage overlapped the request."""
        self.posts[status] += 1
        if any(start <= now and sent_at <= end for start, end in self.broker_down):
            self.during_broker_outage[status] += 1
        if any(start <= now and sent_at <= end for start, end in self.store_down):
            self.during_store_outage[status] += 1


@pytest.fixture(scope="module")
async def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ChaosStack]:
    env = {
        "LEASE_SECONDS": "3",  # a killed brain's thread is taken over soon
        "ANSWER_CLAIM_STALE_SECONDS": "10",
        "BURST_QUIET_SECONDS": "0.3",
        "RETRY_DELAYS_MS": "[200, 500, 1000, 2000, 5000]",
        "SHUTDOWN_GRACE_SECONDS": "2",
        # A status Gupshup posts while the broker restarts is refused and posted again
        # seconds later; it must still settle an ambiguous send before that is resent.
        "AMBIGUOUS_RESOLVE_SECONDS": "30",
    }
    async with (
        private_infra(tmp_path_factory.mktemp("chaos-infra")) as (rabbitmq, ferretdb),
        running_stack(
            tmp_path_factory.mktemp("chaos-logs"),
            env,
            servers={"amqp_url": rabbitmq.url, "mongodb_url": ferretdb.url},
        ) as stack,
    ):
        await rabbitmq.save_queue_registry()  # the services declared the topology
        yield ChaosStack(stack, rabbitmq, ferretdb)
        # A connection pooled before a store restart fails once, then the pool is renewed.
        with contextlib.suppress(AutoReconnect):
            await stack.store.db.command("ping")


def identified(lead: str, n: int) -> dict[str, str]:
    """How the n-th message of a conversation names its lead: a number; a business-scoped
    user ID (`SG.…`, WhatsApp withholds the number); or, for a person who also writes to the
    other agent by number (`merge:USER_ID:NUMBER`), the user ID first and both after."""
    if lead.startswith("SG."):
        return {"user_id": lead}
    if lead.startswith("merge:"):
        _, user_id, number = lead.split(":")
        return {"user_id": user_id} if n == 0 else {"user_id": user_id, "from": number}
    return {"from": lead}


def address(lead: str) -> str:
    """The address the sandbox lists a conversation's sends under."""
    return lead.split(":")[1] if lead.startswith("merge:") else lead


async def deliver(
    stack: Stack, agent: OnboardedAgent, who: dict[str, str], text: str, log: ChaosLog
) -> None:
    """Post a lead's message as Gupshup does: again, same id, until it gets a 2xx."""
    body: dict[str, Any] = {
        "app": agent.app,
        **who,
        "name": "Rachel Lim",
        "text": text,
        "id": f"wamid.{uuid.uuid4().hex}",
        "timestamp": int(time.time() * 1000),
    }
    deadline = time.monotonic() + 120
    while True:
        sent_at = time.monotonic()
        async with stack.http.post(f"{stack.sandbox_url}/sandbox/v1/inbound", json=body) as r:
            result = await r.json()
        status = int(result.get("callback_status", -1))
        log.answered(status, sent_at, time.monotonic())
        if 200 <= status < 300:
            log.accepted += 1
            return
        # Gupshup retries what failed on our side; a 4xx would be a webhook refused for good.
        assert status == 0 or status >= 500, f"refused: {result}"
        assert time.monotonic() < deadline, f"never accepted: {result}"
        await asyncio.sleep(0.3)


async def kill_services(stack: Stack, infra_done: asyncio.Event, log: ChaosLog) -> None:
    """Kill a random service now and then; restart what died, as the cluster would."""
    processes = stack.processes
    rng = random.Random(SEED)
    first_round = rng.sample(VICTIMS, len(VICTIMS))  # every service dies at least once
    next_kill = time.monotonic() + rng.uniform(0.5, KILL_EVERY)
    while not infra_done.is_set() or first_round:
        if time.monotonic() >= next_kill and not log.hold_kills.is_set():
            victim = first_round.pop() if first_round else rng.choice(VICTIMS)
            process = processes.processes.get(victim)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                log.kills.append(victim)
            elif victim not in log.kills:
                first_round.insert(0, victim)  # down already: its turn comes again
            next_kill = time.monotonic() + rng.uniform(KILL_EVERY / 2, KILL_EVERY * 1.5)
        processes.supervise()
        await asyncio.sleep(0.05)
    # Whatever is still down comes back before the checks.
    while any(p.poll() is not None for p in processes.processes.values()) or processes.restart_at:
        processes.supervise()
        await asyncio.sleep(0.05)
    await processes.wait_ready(timeout=60)


async def restart_infrastructure(
    chaos: ChaosStack, load_done: asyncio.Event, infra_done: asyncio.Event, log: ChaosLog
) -> None:
    """Restart the broker and the store, one at a time, at random moments of the run.

    The broker is SIGKILLed or stopped (alternately, a kill first) and started again on
    its state; the store is SIGKILLed, left down for a moment and started again on its
    data. Every planned restart happens, even after the load ends (work is still flowing).
    """
    rng = random.Random(SEED + 1)
    # Alternately, the broker first: a short run's load is over within seconds.
    plan = [
        what
        for n in range(max(BROKER_RESTARTS, STORE_RESTARTS))
        for what, count in (("broker", BROKER_RESTARTS), ("store", STORE_RESTARTS))
        if n < count
    ]
    try:
        await asyncio.sleep(rng.uniform(0.5, OUTAGE_EVERY))
        for n, what in enumerate(plan):
            if n:
                await asyncio.sleep(rng.uniform(OUTAGE_EVERY / 4, OUTAGE_EVERY))
            start = time.monotonic()
            if what == "broker":
                log.broker_down.append((start, float("inf")))
                survivors = dict(chaos.stack.processes.processes)
                await chaos.rabbitmq.restart(hard=log.broker_restarts % 2 == 0)
                log.broker_down[-1] = (start, time.monotonic())
                log.broker_restarts += 1
                log.hold_kills.set()
                try:
                    await resumed_consuming(chaos.stack, survivors, log)
                finally:
                    log.hold_kills.clear()
            else:
                log.store_down.append((start, float("inf")))
                await chaos.ferretdb.kill()
                await asyncio.sleep(rng.uniform(1, 3))
                await chaos.ferretdb.start()
                log.store_down[-1] = (start, time.monotonic())
                log.store_restarts += 1
        await load_done.wait()
    finally:
        infra_done.set()


async def resumed_consuming(
    stack: Stack, survivors: dict[str, subprocess.Popen[bytes]], log: ChaosLog
) -> None:
    """Check that every stage has a consumer again soon after the broker came back.

    A process started since (killed meanwhile) consumes from its start; one that lived
    through the restart must resume by itself. One that has not after RESUME_SECONDS is
    recorded in `log.not_resumed` and killed, so that the rest of the run goes on as it
    would once an operator noticed (its readiness probe does not notice).
    """
    connection = await aio_pika.connect(str(stack.settings.amqp_url))
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + RESUME_SECONDS
        waiting = set(CONSUMERS)
        while waiting:
            for stage in sorted(waiting):
                process = stack.processes.processes.get(stage)
                name = Broker(stack.settings, "chaos-check").topology.queue(stage)
                queue = await channel.declare_queue(name, passive=True)
                if queue.declaration_result.consumer_count or process is not survivors[stage]:
                    waiting.discard(stage)
                elif time.monotonic() > deadline and process is not None:
                    log.not_resumed.append(stage)
                    process.send_signal(signal.SIGKILL)
                    waiting.discard(stage)
            await asyncio.sleep(0.5)
    finally:
        await connection.close()


async def fail_gupshup(stack: Stack, agents: list[OnboardedAgent], log: ChaosLog) -> None:
    """A while after the start, make each agent's sends fail (GUPSHUP_FAULTS in turn)."""
    await asyncio.sleep(random.Random(SEED + 2).uniform(1, 4))

    async def faults_for(app: str) -> None:
        for fault in GUPSHUP_FAULTS:
            await stack.control("POST", "/sandbox/v1/faults", {"app": app, **fault})
            log.gupshup_faults += 1
            while True:  # used up: the sandbox forgets it
                listed = await stack.control("GET", "/sandbox/v1/faults")
                if not any(f["app"] == app for f in listed["faults"]):
                    break
                await asyncio.sleep(0.1)

    await asyncio.gather(*(faults_for(agent.app) for agent in agents))


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


def outages(windows: list[tuple[float, float]], started: float) -> str:
    """When each outage began and ended, in seconds from the start of the run."""
    return ", ".join(f"{a - started:.0f}-{b - started:.0f} s" for a, b in windows) or "-"


def done(p: dict[str, Any]) -> bool:
    return (
        p["stored"] == p["said"]
        and p["unanswered"] == 0
        and p["unfinished"] == 0
        and p["open_sends"] == 0
    )


@pytest.mark.timeout(900 + 60 * (BROKER_RESTARTS + STORE_RESTARTS))
async def test_killed_services_and_restarted_servers_lose_double_and_reorder_nothing(
    chaos_stack: ChaosStack,
) -> None:
    stack = chaos_stack.stack
    agents = [await stack.onboard(), await stack.onboard()]
    for agent in agents:
        # Gupshup sends business-scoped user IDs: some leads come without a number.
        await stack.register_app(
            agent.app,
            agent.api_key,
            agent.digits,
            str(agent.agent.gupshup_app_id),
            agent.callback_url,
            bsuid=True,
        )
        # Gupshup reports what it accepted: how a send interrupted by a kill is settled.
        await stack.control(
            "POST",
            f"/sandbox/v1/apps/{agent.app}/rules",
            {"status_delays_ms": {"enqueued": 50, "sent": 200}},
        )
    # Every third lead is known only by its business-scoped user ID; every fourth writes to
    # one agent by user ID, then with the number it also uses with the other agent, so the
    # two leads merge while both conversations go on.
    leads: list[tuple[OnboardedAgent, str]] = []
    for n in range(LEADS):
        user_id = f"SG.{uuid.uuid4().int % 10**18:018d}"
        if n % 4 == 3:
            number = new_lead()
            leads.append((agents[n % 2], f"merge:{user_id}:{number}"))
            leads.append((agents[(n + 1) % 2], number))
        else:
            leads.append((agents[n % 2], user_id if n % 3 == 2 else new_lead()))
    log = ChaosLog()
    load_done, infra_done = asyncio.Event(), asyncio.Event()
    started = time.monotonic()
    killing = asyncio.create_task(kill_services(stack, infra_done, log))
    restarting = asyncio.create_task(
        restart_infrastructure(chaos_stack, load_done, infra_done, log)
    )
    gupshup = asyncio.create_task(fail_gupshup(stack, agents, log))
    try:

        async def conversation(agent: OnboardedAgent, lead: str) -> None:
            for n in range(MESSAGES):
                await deliver(stack, agent, identified(lead, n), TEXTS[n % len(TEXTS)], log)
                await asyncio.sleep(random.uniform(0.2, 1.5))

        await asyncio.gather(*(conversation(agent, lead) for agent, lead in leads))
    finally:
        load_done.set()
        await restarting
        await killing
    load_seconds = time.monotonic() - started
    assert set(log.kills) == set(VICTIMS), log.kills
    assert (log.broker_restarts, log.store_restarts) == (BROKER_RESTARTS, STORE_RESTARTS)

    said = len(leads) * MESSAGES
    try:
        progress = await eventually(lambda: settled(stack, agents, said), done, timeout=120 + said)
    except AssertionError:
        print("\nbroker queues:\n" + await chaos_stack.rabbitmq.queues())
        raise
    finally:
        if gupshup.done():
            gupshup.result()
        else:  # the pipeline went quiet before every fault was used up
            gupshup.cancel()
            await stack.control("DELETE", "/sandbox/v1/faults")

    db = stack.store.db
    answered = duplicates = 0
    problems: list[str] = []
    for agent, lead in leads:
        if lead.startswith("merge:"):
            query: dict[str, Any] = {"phone": "+" + lead.split(":")[2]}
        elif lead.startswith("SG."):
            query = {"user_ids.user_id": lead}
        else:
            query = {"phone": "+" + lead}
        person = await db["leads"].find_one(query)
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
        answers = [a for r in replies for a in r["answers"]]
        answered += len(set(answers))
        if sorted(answers) != sorted(m["_id"] for m in inbound):
            problems.append(f"{lead}: inbound {len(inbound)}, answers {len(answers)}")
        # Each reply's bubbles reached the lead once, replies in the order they were made.
        made = [b["text"] for r in replies for b in r["command"]["bubbles"]]
        received = [
            m.get("text") or (m.get("message") or {}).get("body")
            for m in await stack.sent_to(agent, address(lead))
        ]
        duplicates += max(0, len(received) - len(made))
        skipped = await db["sends"].count_documents(
            {"thread_id": thread["_id"], "state": "skipped"}
        )
        if skipped:
            problems.append(f"{lead}: {skipped} sends skipped")
        if received != made:
            problems.append(f"{lead}: made {made}, received {received}")

    broker = Broker(stack.settings, "chaos-check")
    await broker.connect()
    try:
        dead = {
            stage: await broker.queue_depth(broker.topology.dead_letter_queue(stage))
            for stage in ("router", "dedup", "brain", "outbound")
        }
    finally:
        await broker.close()

    merges = await db["leads"].count_documents({"merged_into": {"$ne": None}})
    print(
        f"\nchaos (seed {SEED}, {load_seconds:.0f} s of load): {said} messages sent "
        f"({len(leads)} conversations, {merges} leads merged into another), "
        f"{log.accepted} accepted ({sum(log.posts.values())} webhook posts, answers "
        f"{dict(sorted(log.posts.items()))}), {progress['stored']} stored, {answered} answered, "
        f"{duplicates} duplicates, {sum(dead.values())} dead letters; {len(log.kills)} kills "
        f"{dict(sorted(Counter(log.kills).items()))}, {log.broker_restarts} broker restarts "
        f"at {outages(log.broker_down, started)} (webhook answers meanwhile "
        f"{dict(log.during_broker_outage)}), {log.store_restarts} store restarts at "
        f"{outages(log.store_down, started)} (meanwhile {dict(log.during_store_outage)}), "
        f"{log.gupshup_faults} Gupshup faults"
    )
    if log.not_resumed:
        print(f"did not consume again after a broker restart: {log.not_resumed}")
    assert log.accepted == said
    assert progress["stored"] == said  # each accepted webhook stored once
    assert answered == said
    assert not problems, (problems, log.kills)
    assert not any(dead.values()), f"dead-lettered {dead} (kills: {log.kills})"
    assert not log.not_resumed, (
        "after a broker restart these services stayed connected but never consumed again "
        f"until killed: {sorted(set(log.not_resumed))}"
    )
