"""Service-test helpers: tenants in the store, one service's handlers consuming from the broker.

A service under test runs in-process through its own `__main__`'s `setup` (or a test's
variant of it): its own `Broker` consuming the table of subscriptions that setup answers.
The test drives it through the test's own `broker` (publish, fetch) and reads what it stored.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from sandbox import RunningSandbox, start_sandbox
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.repositories.agents import Agent, AgentRepository, Persona
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.service import Runtime, Setup
from shared.settings import Settings
from shared.store import Store
from tests.conftest import quiet_hours_away_from_now

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gupshup"
APP = "TanHomesSG"
APP_ID = "0b7c2a6e-2c1d-4e8a-9f10-3d5b7a9c1e22"  # the fixtures' gs_app_id
API_KEY = "key-tan-homes"
AGENT_NUMBER = "+6591110001"  # the fixtures' display_phone_number
LEAD_WA_ID = "6598887777"  # the fixtures' lead
LEAD_PHONE = "+6598887777"

M = TypeVar("M", bound=BaseModel)


def gupshup_fixture(name: str) -> dict[str, Any]:
    """A Gupshup callback body from tests/fixtures/gupshup."""
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def fetch_event(broker: Broker, stage: str, model: type[M], timeout: float = 5.0) -> M | None:
    """Take one message from a stage's queue and parse it as `model` (None when none came)."""
    message = await broker.fetch(broker.topology.queue(stage), timeout=timeout)
    if message is None:
        return None
    assert message.type == model.model_fields["kind"].default, message.type
    return model.model_validate_json(message.body)


async def drain(broker: Broker, queue: str) -> list[Any]:
    """Take every message ready in a queue right now."""
    messages = []
    while (message := await broker.fetch(queue, timeout=0)) is not None:
        messages.append(message)
    return messages


@dataclass
class Tenant:
    """An organization and one of its agents, with the agent's callback key."""

    org_id: str
    agent: Agent
    callback_key: str

    @property
    def agent_id(self) -> str:
        """The agent's id."""
        return self.agent.id


class Tenants:
    """Creates organizations and agents through the repositories, as onboarding does."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._orgs = OrganizationRepository(store)
        self._agents = AgentRepository(store, KeyRing.from_settings(settings))

    async def organization(self) -> str:
        """A new organization (default region SG); its id."""
        # Quiet hours away from now, so business-initiated sends go whenever tests run.
        org, _api_key = await self._orgs.create(
            f"Agency {uuid.uuid4().hex[:8]}",
            OrganizationSettings(quiet_hours=quiet_hours_away_from_now()),
        )
        return org.id

    async def agent(
        self,
        org_id: str | None = None,
        *,
        number: str = AGENT_NUMBER,
        app: str = APP,
        api_key: str = API_KEY,
        app_id: str | None = APP_ID,
        bot_name: str = "Mia",
    ) -> Tenant:
        """A new agent (in a new organization unless `org_id` is given)."""
        org_id = org_id or await self.organization()
        agent, callback_key = await self._agents.create(
            org_id=org_id,
            name="Daniel Tan",
            number=number,
            gupshup_app=app,
            gupshup_api_key=api_key,
            gupshup_app_id=app_id,
            persona=Persona(bot_name=bot_name),
        )
        return Tenant(org_id, agent, callback_key)


@pytest.fixture
async def tenants(store: Store, settings: Settings) -> Tenants:
    """Create organizations and agents in the test's database."""
    return Tenants(store, settings)


@dataclass
class RunningService:
    """A service's handler consuming its stage through its own broker connection."""

    name: str  # the service label of its metrics, unique to this test
    runtime: Runtime

    @property
    def broker(self) -> Broker:
        """The service's own broker connection."""
        return self.runtime.broker

    def outcome_count(self, outcome: str) -> int:
        """Messages this service finished with `outcome` (ok, retried, dead_lettered ...)."""
        value = REGISTRY.get_sample_value(
            "realtybot_messages_processed_total", {"service": self.name, "outcome": outcome}
        )
        return int(value or 0)

    async def wait_for(self, outcome: str, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` messages were finished with `outcome` (acked by the broker)."""

        async def reached() -> bool:
            return self.outcome_count(outcome) >= count

        await eventually(reached, timeout=timeout)


@dataclass
class ServiceRunner:
    """Starts services in-process and stops them when the test ends."""

    settings: Settings
    store: Store
    running: list[RunningService] = field(default_factory=list)

    async def start(self, service: str, setup: Setup) -> RunningService:
        """Connect a broker for `service`, run its `setup` and consume what setup answers."""
        name = f"{service}-{uuid.uuid4().hex[:8]}"
        broker = Broker(self.settings, name)
        await broker.connect()
        runner = RunningService(name, Runtime(name, self.settings, broker, self.store))
        self.running.append(runner)
        await broker.consume(await setup(runner.runtime))
        return runner

    async def stop_all(self) -> None:
        """Stop consuming (letting in-flight messages finish) and close every connection."""
        for runner in self.running:
            await runner.runtime.stop_background()
            await runner.broker.stop_consuming(grace_seconds=5)
            await runner.broker.close()
        self.running.clear()


@pytest.fixture
async def services(
    settings: Settings, store: Store, broker: Broker
) -> AsyncIterator[ServiceRunner]:
    """Run services against the test's topology and database; stopped before both go away."""
    runner = ServiceRunner(settings, store)
    yield runner
    await runner.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sandbox(http: aiohttp.ClientSession) -> AsyncIterator[RunningSandbox]:
    """A Gupshup sandbox with the agent's app registered under the agent's api key."""
    running = await start_sandbox(port=0)
    registration = {
        "app": APP,
        "api_key": API_KEY,
        "number": AGENT_NUMBER.lstrip("+"),
        "callback_url": "http://127.0.0.1:9/unused",
        "format": "v2",
    }
    async with http.post(f"{running.base_url}/sandbox/v1/apps", json=registration) as response:
        assert response.status == 200, await response.text()
    yield running
    await running.stop()


@pytest.fixture
async def gupshup(sandbox: RunningSandbox) -> AsyncIterator[GupshupClient]:
    """A Gupshup client pointed at the sandbox."""
    client = GupshupClient(sandbox.base_url, timeout_seconds=5)
    yield client
    await client.close()
