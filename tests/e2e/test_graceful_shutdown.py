"""Graceful shutdown under load: every service gets SIGTERM in turn while leads keep writing.

Each service is replaced the way a Kubernetes rolling update replaces it (`maxSurge: 1`,
`maxUnavailable: 0`): a new replica starts and becomes ready, then the old one gets SIGTERM,
aimed at a moment when it has work in flight. Gupshup's webhooks reach ingress through a
stand-in for its Service, which sends each request to a replica whose `/readyz` answered 200
at its last probe, as endpoints do, and retries nothing: a webhook ingress drops shows up as
a failed callback.

Afterwards every webhook that got a 2xx is stored once and answered by exactly one reply, no
bubble reached the sandbox twice or was left in doubt by an interrupted send, every queue of
the stack is empty (dead letters included), and every stopped process exited 0 in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from cli.local_stack import SERVICES, StackProcesses
from shared.broker import STAGE_BINDINGS, Broker
from tests.e2e.conftest import OnboardedAgent, Stack, free_port, running_stack
from tests.e2e.test_pipeline import eventually, new_lead

GRACE_SECONDS = 15.0  # SHUTDOWN_GRACE_SECONDS of the stack
DRAIN_SECONDS = 1.0  # INGRESS_DRAIN_SECONDS: readiness is 503 this long before ingress closes
PROBE_SECONDS = 0.1  # how often the Service stand-in probes readiness
QUESTIONS = [
    "Hi, any 3-bedroom condo in Tampines?",
    "Budget is around 1.5m",
    "We want to move in next year",
    "Is it near an MRT station?",
]
WRITERS = 4  # leads writing at the same time; each writes QUESTIONS, then a new lead starts
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class ServiceStandIn:
    """Ingress's Kubernetes Service: traffic only to replicas whose readiness probe passed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.backends: dict[str, str] = {}
        self.ready: dict[str, bool] = {}
        # Each replica's probe results as they changed: 200, 503, None (unreachable).
        self.probes: dict[str, list[int | None]] = {}
        self.in_flight: Counter[str] = Counter()
        self.answers: Counter[int] = Counter()
        self._turn = itertools.count()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self._runner: web.AppRunner | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The public base URL: what the callback URLs given to Gupshup start with."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen and probe the replicas' readiness from now on."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._prober = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        """Stop probing and listening."""
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        if self._runner is not None:
            await self._runner.cleanup()
        await self._http.close()

    def add(self, name: str, base_url: str) -> None:
        """A new replica: it gets traffic once its readiness probe passes."""
        self.backends[name] = base_url
        self.ready[name] = False
        self.probes[name] = []

    async def wait_ready(self, name: str) -> None:
        """Until the replica is among the endpoints."""

        async def ready() -> bool:
            return self.ready[name]

        await eventually(ready, bool, timeout=20)

    async def _probe_forever(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while True:
                for name, base in list(self.backends.items()):
                    status: int | None = None
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(f"{base}/readyz") as response:
                            status = response.status
                    self.ready[name] = status == 200
                    seen = self.probes[name]
                    if not seen or seen[-1] != status:
                        seen.append(status)
                await asyncio.sleep(PROBE_SECONDS)

    async def _forward(self, request: web.Request) -> web.Response:
        endpoints = [name for name, ready in self.ready.items() if ready]
        if not endpoints:
            return self._answer(503)
        name = endpoints[next(self._turn) % len(endpoints)]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        self.in_flight[name] += 1
        try:
            async with self._http.request(
                request.method,
                self.backends[name] + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as response:
                body = await response.read()
                return self._answer(response.status, body)
        except (aiohttp.ClientError, TimeoutError):
            return self._answer(502)  # the replica dropped the request
        finally:
            self.in_flight[name] -= 1

    def _answer(self, status: int, body: bytes = b"") -> web.Response:
        self.answers[status] += 1
        return web.Response(status=status, body=body)


@dataclass
class LeadStream:
    """Leads writing to the agents all along, each message posted again until accepted.

    Like Gupshup, a callback that did not get a 2xx is posted again with the same message id.
    """

    stack: Stack
    agents: list[OnboardedAgent]
    accepted: dict[str, tuple[OnboardedAgent, str]] = field(default_factory=dict)
    rejected: Counter[int] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, writer: int) -> None:
        """One writer: a lead says every question, then the next lead begins."""
        rng = random.Random(writer)
        while not self.stop.is_set():
            agent, lead = self.agents[writer % len(self.agents)], new_lead()
            for question in QUESTIONS:
                if self.stop.is_set():
                    return
                await self._say(agent, lead, question)
                await asyncio.sleep(rng.uniform(1.0, 2.0))

    async def _say(self, agent: OnboardedAgent, lead: str, text: str) -> None:
        message_id = f"gBEGSHUTDOWN{uuid.uuid4().hex}"
        body = {"app": agent.app, "from": lead, "name": "Rachel Lim", "text": text}
        for _ in range(100):
            result = await self.stack.control(
                "POST", "/sandbox/v1/inbound", {**body, "id": message_id}
            )
            if 200 <= result["callback_status"] < 300:
                self.accepted[message_id] = (agent, lead)
                return
            self.rejected[result["callback_status"]] += 1
            await asyncio.sleep(0.3)
        raise AssertionError(f"webhook {message_id} never accepted")

    async def flowing(self, more: int, timeout: float = 20) -> None:
        """Until `more` further webhooks were accepted."""
        target = len(self.accepted) + more

        async def accepted() -> int:
            return len(self.accepted)

        await eventually(accepted, lambda n: n >= target, timeout)


@dataclass
class Termination:
    """How one replica ended after SIGTERM."""

    service: str
    in_flight: float  # messages (requests, for ingress) it was handling when signalled
    exit_code: int
    seconds: float
    grace: float  # what its settings give it to finish


def grace_of(service: str) -> float:
    """How long a service may take to stop: ingress drains first."""
    return GRACE_SECONDS + (DRAIN_SECONDS if service == "ingress" else 0)


async def terminate(process: subprocess.Popen[bytes], limit: float) -> tuple[int, float]:
    """SIGTERM, then wait for the exit (SIGKILL after `limit` s, as the kubelet would)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    while process.poll() is None:
        if time.monotonic() - started > limit:
            process.kill()
            process.wait()
            break
        await asyncio.sleep(0.02)
    return process.returncode, time.monotonic() - started


async def in_flight(http: aiohttp.ClientSession, port: str, service: str) -> float:
    """The consumer's own count of messages it is handling now."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        if family.name == "realtybot_in_flight_messages":
            for sample in family.samples:
                if sample.labels.get("service") == service:
                    return sample.value
    return 0.0


async def busy_moment(count: Callable[[], Awaitable[float]], timeout: float = 4.0) -> float:
    """Wait (a little) for a moment with work in flight; the amount in flight then."""
    deadline = time.monotonic() + timeout
    while True:
        found = await count()
        if found > 0 or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)


def replacement_processes(stack: Stack, log_dir: Path) -> StackProcesses:
    """Where new replicas start: the stack's environment with ports of their own."""
    env = dict(stack.processes.env)
    for name in ("INGRESS_PORT", "ADMIN_PORT", *(f"{s.upper()}_PORT" for s in SERVICES)):
        env[name] = str(free_port())
    return StackProcesses(env, stack.processes.sandbox_port, log_dir=log_dir)


async def roll(
    stack: Stack, replacements: StackProcesses, service: ServiceStandIn, name: str
) -> Termination:
    """Replace a service's replica: the new one up and ready, then SIGTERM to the old one."""
    replacements.start((name,), sandbox=False)
    await replacements.wait_ready()
    if name == "ingress":
        service.add("ingress-new", f"http://127.0.0.1:{replacements.env['INGRESS_PORT']}")
        await service.wait_ready("ingress-new")

        async def count() -> float:
            return service.in_flight["ingress-old"]
    else:
        port = stack.processes.env[f"{name.upper()}_PORT"]

        async def count() -> float:
            return await in_flight(stack.http, port, name)

    busy = await busy_moment(count)
    code, seconds = await terminate(stack.processes.processes[name], grace_of(name) + 5)
    return Termination(name, busy, code, seconds, grace_of(name))


async def stop_replacements(replacements: StackProcesses) -> list[Termination]:
    """SIGTERM to every replica started by `roll`, at once."""
    running = dict(replacements.processes)
    ended = await asyncio.gather(
        *(terminate(process, grace_of(name) + 5) for name, process in running.items())
    )
    return [
        Termination(f"{name} (new)", 0, code, seconds, grace_of(name))
        for name, (code, seconds) in zip(running, ended, strict=True)
    ]


async def progress(stack: Stack, stream: LeadStream) -> dict[str, Any]:
    """Accepted webhooks stored and not yet answered, replies not sent yet, sends not done."""
    db = stack.store.db
    ids = [a.agent.id for a in stream.agents]
    unanswered = await db["messages"].count_documents(
        {"agent_id": {"$in": ids}, "direction": "in", "answered": {"$ne": True}}
    )
    stored = await db["messages"].count_documents({"agent_id": {"$in": ids}, "direction": "in"})
    pending = await db["replies"].count_documents(
        {"org_id": {"$in": [a.org.id for a in stream.agents]}, "outbound_done": {"$ne": True}}
    )
    unsent = await db["sends"].count_documents(
        {"agent_id": {"$in": ids}, "state": {"$ne": "submitted"}}
    )
    return {
        "stored": stored,
        "accepted": len(stream.accepted),
        "unanswered": unanswered,
        "pending": pending,
        "unsent": unsent,
    }


def settled(p: dict[str, Any]) -> bool:
    """Every accepted webhook stored and answered, every reply sent."""
    return (
        p["stored"] == p["accepted"]
        and not p["unanswered"]
        and not p["pending"]
        and not p["unsent"]
    )


@contextlib.asynccontextmanager
async def stand_in_service() -> AsyncIterator[ServiceStandIn]:
    """The Service stand-in, listening."""
    service = ServiceStandIn()
    await service.start()
    try:
        yield service
    finally:
        await service.close()


async def test_sigterm_to_each_service_under_load_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    async with (
        stand_in_service() as service,
        running_stack(
            tmp_path / "logs",
            {
                "PUBLIC_BASE_URL": service.url,  # Gupshup calls back through the Service
                "SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
                "INGRESS_DRAIN_SECONDS": str(DRAIN_SECONDS),
                "ANTHROPIC_API_KEY": "",  # the offline engine, whatever the shell holds
            },
        ) as stack,
    ):
        service.add("ingress-old", stack.ingress_url)
        await service.wait_ready("ingress-old")
        agents = [await stack.onboard(), await stack.onboard()]
        assert all(agent.callback_url.startswith(service.url) for agent in agents)
        stream = LeadStream(stack, agents)
        replacements = replacement_processes(stack, tmp_path / "replacement-logs")
        writers = [asyncio.create_task(stream.write(w)) for w in range(WRITERS)]
        terminations: list[Termination] = []
        try:
            await stream.flowing(10)
            for name in SERVICES:
                terminations.append(await roll(stack, replacements, service, name))
                await stream.flowing(6)
            stream.stop.set()
            await asyncio.gather(*writers)
            await eventually(lambda: progress(stack, stream), settled, timeout=45)
        finally:
            stream.stop.set()
            for writer in writers:
                writer.cancel()
            terminations += await stop_replacements(replacements)

        # Every replica exited 0 on SIGTERM within its grace period: none was killed.
        for ended in terminations:
            assert ended.exit_code == 0 and ended.seconds < ended.grace, ended
        # Ingress turned unready, kept serving, then closed: the Service saw 503 in between,
        # sent it nothing more, and no webhook was refused or dropped (Gupshup retried none).
        assert service.probes["ingress-old"][-3:] == [200, 503, None], service.probes
        assert set(service.answers) == {200}, service.answers
        assert stream.rejected == Counter()

        await check_nothing_left_in_queues(stack)
        await check_each_webhook_stored_and_answered_once(stack, stream)
        await check_no_bubble_sent_twice(stack, stream)
        print(
            f"\n{len(stream.accepted)} webhooks accepted in {time.monotonic() - began:.0f} s; "
            + ", ".join(
                f"{t.service}: {t.in_flight:.0f} in flight, exit {t.exit_code} "
                f"after {t.seconds:.2f} s"
                for t in terminations
            )
        )


async def check_nothing_left_in_queues(stack: Stack) -> None:
    """With every service stopped, no stage, delay or dead-letter queue holds anything."""
    env = stack.processes.env  # the delay tiers the services declared
    settings = stack.settings.model_copy(
        update={
            "retry_delays_ms": json.loads(env["RETRY_DELAYS_MS"]),
            "lease_busy_retry_ms": int(env["LEASE_BUSY_RETRY_MS"]),
            "burst_quiet_seconds": float(env["BURST_QUIET_SECONDS"]),
        }
    )
    broker = Broker(settings, "test")
    await broker.connect()
    try:
        t = broker.topology
        names = [
            name
            for stage in STAGE_BINDINGS
            for name in (
                t.queue(stage),
                t.dead_letter_queue(stage),
                *(t.delay_queue(stage, d) for d in t.delay_tiers_ms),
            )
        ]
        depths = {name: await broker.queue_depth(name) for name in names}
    finally:
        await broker.close()
    assert {n: d for n, d in depths.items() if d} == {}


async def check_each_webhook_stored_and_answered_once(stack: Stack, stream: LeadStream) -> None:
    """One stored message per accepted webhook, answered by exactly one reply."""
    db = stack.store.db
    ids = [a.agent.id for a in stream.agents]
    inbound = await db["messages"].find({"agent_id": {"$in": ids}, "direction": "in"}).to_list()
    stored = Counter(m["provider_message_id"] for m in inbound)
    assert stored == Counter(list(stream.accepted)), "each accepted webhook stored exactly once"
    replies = (
        await db["replies"].find({"org_id": {"$in": [a.org.id for a in stream.agents]}}).to_list()
    )
    answered_in = Counter(answer for reply in replies for answer in reply["answers"])
    by_id = {reply["_id"]: reply for reply in replies}
    for message in inbound:
        assert answered_in[message["_id"]] == 1, message
        assert message["answered"] is True, message
        assert message["_id"] in by_id[message["answered_by"]]["answers"], message
    assert all(r["published"] and r["outbound_done"] for r in replies)
    assert sum(answered_in.values()) == len(inbound)


async def check_no_bubble_sent_twice(stack: Stack, stream: LeadStream) -> None:
    """The sandbox got each bubble of each reply once, in order; no send was ever in doubt."""
    db = stack.store.db
    sends = (
        await db["sends"].find({"agent_id": {"$in": [a.agent.id for a in stream.agents]}}).to_list()
    )
    # A call to Gupshup cut short would have left its mark: unknown, then resolved or resent.
    assert [s for s in sends if {"unknown_since", "resolved_by", "resent"} & set(s)] == []
    assert {s["state"] for s in sends} == {"submitted"}
    assert len({s["gupshup_message_id"] for s in sends}) == len(sends)
    for agent in stream.agents:
        for lead in {lead for a, lead in stream.accepted.values() if a is agent}:
            lead_doc = await db["leads"].find_one({"phone": "+" + lead})
            assert lead_doc is not None
            made = (
                await db["messages"]
                .find({"agent_id": agent.agent.id, "lead_id": lead_doc["_id"], "direction": "out"})
                .to_list()
            )
            made.sort(key=lambda m: (m["sent_at"], int(m["send_id"].rsplit(".", 1)[1])))
            received = await stack.sent_to(agent, lead)
            # Exactly the bubbles made, each accepted by Gupshup once, in the order made.
            assert [m["messageId"] for m in received] == [m["provider_message_id"] for m in made]
            assert made, lead
