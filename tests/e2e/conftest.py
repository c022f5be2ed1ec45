"""The whole stack as separate processes (five services and the Gupshup sandbox).

It is started once per test run on free ports (never the defaults, so `make run` may be up
at the same time), with its own database and broker prefix and short retry delays.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.local_stack import StackProcesses, stack_env
from shared.broker import Broker
from shared.phones import wa_id
from shared.repositories.agents import Agent, AgentRepository
from shared.repositories.api_keys import ApiKeyRepository
from shared.repositories.organizations import Organization, OrganizationRepository
from shared.settings import Settings
from shared.store import Store
from tests.conftest import TEST_KEY_RING, free_port, make_settings, quiet_hours_away_from_now
from tests.fakes.anthropic_api import FakeAnthropic

NEW_KEY = "test-2:" + "WllYV1ZVVFNSUVBPTk1MS0pJSEdGRURDQkE5ODc2NTQ="  # 32 bytes


@dataclass
class OnboardedAgent:
    """An agent of the running stack, registered with the sandbox."""

    org: Organization
    agent: Agent
    app: str
    api_key: str
    callback_url: str
    org_key: str  # the organization's admin API key

    @property
    def digits(self) -> str:
        """The agent's number as Gupshup writes it."""
        return wa_id(self.agent.number)


@dataclass
class Stack:
    """Handles on the running stack."""

    settings: Settings
    processes: StackProcesses
    store: Store
    http: aiohttp.ClientSession
    log_dir: Path
    platform_key: str

    @property
    def sandbox_url(self) -> str:
        """The sandbox's base URL."""
        return f"http://127.0.0.1:{self.processes.sandbox_port}"

    @property
    def ingress_url(self) -> str:
        """Ingress's base URL."""
        return f"http://127.0.0.1:{self.settings.ingress_port}"

    @property
    def admin_url(self) -> str:
        """The admin API's base URL."""
        return f"http://127.0.0.1:{self.settings.admin_port}"

    async def admin(
        self,
        method: str,
        path: str,
        key: str,
        body: dict[str, Any] | None = None,
        expect: int = 200,
    ) -> Any:
        """Call the admin API with a bearer key; assert the status; return the JSON."""
        async with self.http.request(
            method, self.admin_url + path, json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            answer = await response.json()
            assert response.status == expect, answer
            return answer

    async def onboard(
        self,
        org: Organization | None = None,
        *,
        fmt: str = "v2",
        bot_name: str = "Ava",
        org_key: str | None = None,
    ) -> OnboardedAgent:
        """Onboard an agent through the admin API (and an organization unless given)."""
        if org is None:
            created = await self.admin(
                "POST",
                "/v1/organizations",
                self.platform_key,
                {"name": f"Agency {uuid.uuid4().hex[:8]}"},
                expect=201,
            )
            org_key = created["api_key"]
            # Quiet hours away from now, so business-initiated sends go whenever tests run.
            quiet = quiet_hours_away_from_now().model_dump()
            await self.admin("PATCH", "/v1/organization", org_key, {"quiet_hours": quiet})
            found = await OrganizationRepository(self.store).get(created["org_id"])
            assert found is not None
            org = found
        assert org_key is not None, "an existing organization needs its key"
        suffix = uuid.uuid4().int % 10_000_000
        app = f"App{uuid.uuid4().hex[:10]}"
        app_id = str(uuid.uuid4())
        api_key = f"gs-{uuid.uuid4().hex}"
        number = f"9{1_000_000 + suffix % 8_000_000:07d}"  # 91..98: valid SG mobiles
        # The app exists at Gupshup first; onboarding subscribes it to the callback URL.
        await self.register_app(app, api_key, f"65{number}", app_id)
        created = await self.admin(
            "POST",
            "/v1/agents",
            org_key,
            {
                "name": "Jason Tan",
                "number": number,
                "gupshup_app": app,
                "gupshup_app_id": app_id,
                "gupshup_api_key": api_key,
                "persona": {"bot_name": bot_name},
            },
            expect=201,
        )
        assert created["callback_subscription"] == "registered", created
        agent = await AgentRepository(self.store).get(created["agent_id"])
        assert agent is not None
        if fmt != "v2":
            await self.register_app(
                app, api_key, wa_id(agent.number), app_id, created["callback_url"], fmt
            )
        return OnboardedAgent(org, agent, app, api_key, created["callback_url"], org_key)

    async def register_app(
        self,
        app: str,
        api_key: str,
        digits: str,
        app_id: str,
        callback_url: str = "http://127.0.0.1:9/not-yet",
        fmt: str = "v2",
        *,
        bsuid: bool = False,
    ) -> None:
        """Create (or replace) a Gupshup app at the sandbox; until onboarding subscribes it,
        its callback URL goes nowhere."""
        await self.control(
            "POST",
            "/sandbox/v1/apps",
            {
                "app": app,
                "api_key": api_key,
                "number": digits,
                "app_id": app_id,
                "callback_url": callback_url,
                "format": fmt,
                "bsuid": bsuid,
            },
        )

    async def control(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Call the sandbox's control API and return its JSON answer."""
        async with self.http.request(
            method, self.sandbox_url + path, json=body, params=params
        ) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def lead_says(
        self,
        agent: OnboardedAgent,
        lead: str,
        text: str,
        *,
        name: str = "Rachel Lim",
        message_id: str | None = None,
    ) -> str:
        """A lead's message through the sandbox; returns the provider message id."""
        body: dict[str, Any] = {"app": agent.app, "from": lead, "name": name, "text": text}
        if message_id is not None:
            body["id"] = message_id
        result = await self.control("POST", "/sandbox/v1/inbound", body)
        assert result["callback_status"] == 200, result
        return str(result["message_id"])

    async def sent_to(self, agent: OnboardedAgent, lead: str) -> list[dict[str, Any]]:
        """What Gupshup accepted from the agent's app to the lead, oldest first."""
        result: list[dict[str, Any]] = await self.control(
            "GET", "/sandbox/v1/messages", params={"app": agent.app, "destination": lead}
        )
        return result


@pytest.fixture(scope="session")
def stack_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the stack's processes write their logs."""
    yield tmp_path_factory.mktemp("stack-logs")


@pytest.fixture(scope="session")
async def stack(stack_log_dir: Path) -> AsyncIterator[Stack]:
    """The running stack, shared by the end-to-end tests of one run."""
    env = {
        # The offline engine, whatever key the shell running the tests may hold.
        "ANTHROPIC_API_KEY": "",
        # Due follow-ups and reminders are found within half a second (tests move a
        # message's due time into the past instead of waiting days for it).
        "SCHEDULER_INTERVAL_SECONDS": "0.5",
    }
    # A ring mid-rotation: new credentials use NEW_KEY, older ones still decrypt.
    key_ring = f"{NEW_KEY},{TEST_KEY_RING}"
    async with running_stack(stack_log_dir, env, credentials_keys=key_ring) as running:
        yield running


@contextlib.asynccontextmanager
async def running_stack(
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    servers: Mapping[str, str] | None = None,
    credentials_keys: str = TEST_KEY_RING,
) -> AsyncIterator[Stack]:
    """A whole stack of its own (the shared `stack` is one), its processes given extra
    environment (`env`).

    For a module that needs the services configured otherwise than the shared stack (the
    Anthropic engine, for one); it has its own ports, database and broker prefix. `servers`
    (`amqp_url`, `mongodb_url`) points it at a broker or store other than the shared ones.
    """
    settings = make_settings(
        **(servers or {}),
        credentials_keys=credentials_keys,
        ingress_port=free_port(),
        admin_port=free_port(),
        router_port=free_port(),
        dedup_port=free_port(),
        brain_port=free_port(),
        outbound_port=free_port(),
    )
    sandbox_port = free_port()
    settings = settings.model_copy(
        update={
            "public_base_url": f"http://127.0.0.1:{settings.ingress_port}",
            "gupshup_base_url": f"http://127.0.0.1:{sandbox_port}",
            "gupshup_partner_base_url": f"http://127.0.0.1:{sandbox_port}",
            "gupshup_partner_email": "partner@example.com",
            "gupshup_partner_password": "partner-password",
        }
    )
    store = Store(settings)
    await store.migrate()
    overrides = {
        "RETRY_DELAYS_MS": "[200, 500, 1000]",
        "LEASE_BUSY_RETRY_MS": "100",
        "LEAD_PAUSE_SECONDS": "0.2",
        "BURST_QUIET_SECONDS": "0.5",
        # Gupshup timeouts and their resolution, short enough for fault tests.
        "GUPSHUP_TIMEOUT_SECONDS": "2",
        "AMBIGUOUS_RESOLVE_SECONDS": "3",
        # Tests present wrong admin keys on purpose, all from 127.0.0.1; the lockout
        # has its own test (tests/services/test_admin_lockout.py).
        "ADMIN_AUTH_MAX_FAILURES": "1000000",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **(env or {}),
    }
    processes = StackProcesses(stack_env(settings, overrides), sandbox_port, log_dir=log_dir)
    processes.start()
    try:
        await processes.wait_ready(timeout=60)
        _, platform_key = await ApiKeyRepository(store).issue("platform", None, "tests")
        async with aiohttp.ClientSession() as http:
            yield Stack(settings, processes, store, http, log_dir, platform_key)
    finally:
        processes.stop()
        broker = Broker(settings, "test")
        await broker.connect()
        await broker.delete_topology()
        await broker.close()
        await store.client.drop_database(settings.mongodb_db)
        await store.close()


@pytest.fixture(scope="module")
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """A fake Messages API for one module's own stack, with a key no other module knows."""
    async with FakeAnthropic(api_key=f"sk-ant-e2e-{uuid.uuid4().hex}") as running:
        yield running


def anthropic_env(fake: FakeAnthropic) -> dict[str, str]:
    """The environment that points a stack's brain at `fake` (`running_stack`'s `env`)."""
    return {"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.base_url}
