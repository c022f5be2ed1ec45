"""A private stack for one benchmark: its own database, broker prefix, free ports and agents.

Like `make run` it runs each service as its own process (`cli.local_stack.StackProcesses`)
against the real RabbitMQ and store, with the Gupshup sandbox in place of Gupshup and the
offline engine; extra replicas of a service can be started beside it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import aiohttp

from bench.stats import Samples, parse_metrics
from cli.local_stack import SERVICES, StackProcesses, create_demo_agent, stack_env
from shared.broker import STAGE_BINDINGS, Broker
from shared.crypto import KeyRing
from shared.onboarding import CALLBACK_PATH
from shared.quiet_hours import QuietHours
from shared.repositories.agents import Agent, AgentRepository
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.settings import Settings
from shared.store import Store

# What every benchmark stack runs with unless the benchmark says otherwise: the offline
# engine whatever the shell holds, JSON logs at INFO as in containers, and a short grace on
# SIGTERM (a benchmark's leftovers need not finish).
BASE_ENV = {
    "ANTHROPIC_API_KEY": "",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "SHUTDOWN_GRACE_SECONDS": "2",
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_settings(name: str, **overrides: object) -> Settings:
    """Settings of a private stack: real servers, own names, free ports, a fresh key ring."""
    run = uuid.uuid4().hex[:8]
    sandbox = f"http://127.0.0.1:{free_port()}"
    ingress_port = free_port()
    values: dict[str, object] = {
        "amqp_url": os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        "mongodb_url": os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017"),
        "mongodb_db": f"bench_{name}_{run}",
        "broker_prefix": f"bench.{name}.{run}",
        "credentials_keys": "bench-1:" + base64.b64encode(os.urandom(32)).decode(),
        "ingress_port": ingress_port,
        "admin_port": free_port(),
        "router_port": free_port(),
        "dedup_port": free_port(),
        "brain_port": free_port(),
        "outbound_port": free_port(),
        "public_base_url": f"http://127.0.0.1:{ingress_port}",
        "gupshup_base_url": sandbox,
        "gupshup_partner_base_url": sandbox,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def quiet_hours_away_from_now(timezone: str = "Asia/Singapore") -> QuietHours:
    """Quiet hours two to three hours from now, so nothing a benchmark sends is held."""
    local = datetime.now(ZoneInfo(timezone))
    start, end = local + timedelta(hours=2), local + timedelta(hours=3)
    return QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}")


@dataclass(frozen=True)
class BenchAgent:
    """An agent of the stack, registered with the sandbox."""

    org_id: str
    agent: Agent
    app: str
    callback_key: str
    digits: str  # the agent's number as Gupshup writes it
    api_key: str


async def create_agents(
    store: Store, settings: Settings, count: int, *, rate: float = 20.0
) -> list[BenchAgent]:
    """`count` agents of a new organization, created as onboarding creates them."""
    orgs = OrganizationRepository(store)
    agents = AgentRepository(store, KeyRing.from_settings(settings))
    org, _ = await orgs.create(
        f"Bench {uuid.uuid4().hex[:8]}",
        OrganizationSettings(quiet_hours=quiet_hours_away_from_now()),
    )
    made = []
    for _ in range(count):
        app = f"Bench{uuid.uuid4().hex[:10]}"
        number = f"+659{uuid.uuid4().int % 10_000_000:07d}"
        api_key = f"gs-{uuid.uuid4().hex}"
        agent, callback_key = await create_demo_agent(
            agents, org.id, number, app, api_key, rate_per_second=rate
        )
        made.append(BenchAgent(org.id, agent, app, callback_key, number.lstrip("+"), api_key))
    return made


@dataclass
class BenchStack:
    """Handles on a running private stack."""

    settings: Settings
    processes: StackProcesses
    store: Store
    broker: Broker
    http: aiohttp.ClientSession
    log_dir: Path
    replicas: dict[str, list[StackProcesses]] = field(default_factory=dict)

    @property
    def sandbox_url(self) -> str:
        """The sandbox's base URL."""
        return f"http://127.0.0.1:{self.processes.sandbox_port}"

    @property
    def ingress_url(self) -> str:
        """Ingress's base URL."""
        return f"http://127.0.0.1:{self.settings.ingress_port}"

    def webhook_url(self, agent: BenchAgent) -> str:
        """The agent's callback URL (what Gupshup posts to)."""
        return f"{self.ingress_url}{CALLBACK_PATH}{agent.callback_key}"

    async def onboard(
        self, count: int = 1, *, rate: float = 20.0, throughput: int | None = None
    ) -> list[BenchAgent]:
        """`count` agents in one organization, each registered with the sandbox (and its
        number's throughput limit there, when given)."""
        made = await create_agents(self.store, self.settings, count, rate=rate)
        if self.processes.processes.get("sandbox") is None:
            return made
        for agent in made:
            await self.control(
                "POST",
                "/sandbox/v1/apps",
                {
                    "app": agent.app,
                    "api_key": agent.api_key,
                    "number": agent.digits,
                    "callback_url": self.webhook_url(agent),
                    "format": "v2",
                },
            )
            if throughput is not None:
                await self.control(
                    "POST",
                    f"/sandbox/v1/apps/{agent.app}/rules",
                    {"throughput_per_second": throughput},
                )
        return made

    async def control(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        """Call the sandbox's control API; its JSON answer."""
        async with self.http.request(
            method, self.sandbox_url + path, json=body, params=params
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def sent(self, app: str) -> list[dict[str, Any]]:
        """What the sandbox accepted from an app, oldest first."""
        result: list[dict[str, Any]] = await self.control(
            "GET", "/sandbox/v1/messages", params={"app": app}
        )
        return result

    async def add_replica(self, service: str) -> StackProcesses:
        """Start one more process of `service` on its own metrics port; wait until ready."""
        env = {**self.processes.env, f"{service.upper()}_PORT": str(free_port())}
        replica = StackProcesses(
            env, self.processes.sandbox_port, log_dir=self.log_dir / "replicas"
        )
        replica.start((service,), sandbox=False)
        self.replicas.setdefault(service, []).append(replica)
        await replica.wait_ready(timeout=60)
        return replica

    def service_processes(self) -> dict[str, tuple[str, int, int]]:
        """Every running service process: label -> (service, pid, metrics port)."""
        found: dict[str, tuple[str, int, int]] = {}
        for name in SERVICES:
            process = self.processes.processes.get(name)
            if process is not None:
                found[name] = (name, process.pid, self.settings.service_port(name))
            for n, replica in enumerate(self.replicas.get(name, []), start=2):
                process = replica.processes.get(name)
                if process is not None:
                    port = int(replica.env[f"{name.upper()}_PORT"])
                    found[f"{name}#{n}"] = (name, process.pid, port)
        return found

    def pids(self) -> dict[str, int]:
        """The pid of every service process (and the sandbox's)."""
        pids = {label: pid for label, (_, pid, _) in self.service_processes().items()}
        sandbox = self.processes.processes.get("sandbox")
        if sandbox is not None:
            pids["sandbox"] = sandbox.pid
        return pids

    async def scrape(self) -> dict[str, Samples]:
        """Every service process's /metrics, parsed, by process label."""
        scraped = {}
        for label, (_, _, port) in self.service_processes().items():
            async with self.http.get(f"http://127.0.0.1:{port}/metrics") as response:
                scraped[label] = parse_metrics(await response.text())
        return scraped

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each stage's work queue."""
        return {
            stage: await self.broker.queue_depth(self.broker.topology.queue(stage))
            for stage in STAGE_BINDINGS
        }

    async def purge(self, *stages: str) -> None:
        """Drop what waits in the given stages' work queues."""
        connection = await aio_pika.connect(str(self.settings.amqp_url))
        try:
            channel = await connection.channel()
            for stage in stages:
                queue = await channel.get_queue(self.broker.topology.queue(stage), ensure=False)
                await queue.purge()
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def bench_stack(
    name: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    services: tuple[str, ...] = SERVICES,
    sandbox: bool = True,
    settings: Settings | None = None,
) -> AsyncIterator[BenchStack]:
    """Start the given services (and the sandbox) on a private stack; tear it all down after."""
    settings = settings or bench_settings(name)
    store = Store(settings)
    await store.migrate()
    broker = Broker(settings, "bench")
    await broker.connect()
    await broker.declare_topology()
    processes = StackProcesses(
        stack_env(settings, {**BASE_ENV, **(env or {})}),
        sandbox_port_of(settings),
        log_dir=log_dir,
    )
    stack = None
    try:
        processes.start(services, sandbox=sandbox)
        await processes.wait_ready(timeout=60)
        async with aiohttp.ClientSession() as http:
            stack = BenchStack(settings, processes, store, broker, http, log_dir)
            yield stack
    finally:
        if stack is not None:
            for replicas in stack.replicas.values():
                for replica in replicas:
                    replica.stop()
        processes.stop()
        with contextlib.suppress(Exception):
            await broker.delete_topology()
        await broker.close()
        await store.client.drop_database(settings.mongodb_db)
        await store.close()


def sandbox_port_of(settings: Settings) -> int:
    """The sandbox's port, taken from the Gupshup base URL the services are given."""
    return int(str(settings.gupshup_base_url).rstrip("/").rsplit(":", 1)[-1])
