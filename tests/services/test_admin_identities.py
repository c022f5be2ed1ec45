"""The admin API and leads without phone numbers: business portfolios, BSUID flags at Gupshup,
and leads shown and found by phone, business-scoped user ID or username, per organization.

The admin application runs in-process against the real store and broker. Leads are seen as
dedup sees them (`LeadRepository.resolve` and a thread with the agent). Gupshup's Partner API
is a local fake (`tests/fakes/gupshup_partner.py`) that answers login, app tokens,
subscription and `PUT /partner/app/{appId}/config/bsuid`, and records what it was asked.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.ingress.admin import create_admin_app
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.partner import PartnerClient
from shared.identity import WhatsAppUser
from shared.models import AgentChanged, utcnow
from shared.repositories.agents import Agent, AgentRepository
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.fakes.gupshup_partner import FakePartnerApi
from tests.services.conftest import eventually

USER_A = "SG.1349120865530274"  # the person as agency A's portfolio knows them
USER_B = "SG.9988776655443322"  # the same person in agency B's portfolio
PARENT = "SG.ENT.118034567890"


@pytest.fixture
async def partner() -> AsyncIterator[FakePartnerApi]:
    async with FakePartnerApi() as fake:
        yield fake


@dataclass
class Org:
    """An organization, its admin key and one agent."""

    id: str
    key: str
    agent: Agent


@dataclass
class Admin:
    """The admin API in-process, with what tests seed through the repositories."""

    client: TestClient[Any, Any]
    store: Store
    settings: Settings

    async def call(
        self, method: str, path: str, org: Org, body: Any = None, expect: int = 200
    ) -> Any:
        """Call with the organization's key; assert the status; the JSON answer."""
        response = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {org.key}"}
        )
        answer = await response.json()
        assert response.status == expect, answer
        return answer

    async def organization(self, *, portfolio: str | None = None) -> Org:
        """A new organization with one agent (in `portfolio`, if given)."""
        org, key = await OrganizationRepository(self.store).create(
            f"Agency {uuid.uuid4().hex[:8]}", OrganizationSettings()
        )
        return Org(org.id, key, await self.agent(org.id, portfolio=portfolio))

    async def agent(self, org_id: str, *, portfolio: str | None = None) -> Agent:
        """Another agent of the organization."""
        agents = AgentRepository(self.store, KeyRing.from_settings(self.settings))
        agent, _key = await agents.create(
            org_id=org_id,
            name="Daniel Tan",
            number=new_number(),
            gupshup_app=f"App{uuid.uuid4().hex[:10]}",
            gupshup_api_key="key",
            business_portfolio_id=portfolio,
        )
        return agent

    async def lead_writes(
        self, agent: Agent, user: WhatsAppUser, *, name: str = "Rachel", at_offset: int = 0
    ) -> str:
        """A lead's message reaching the agent, as dedup records it; the lead's id."""
        at = utcnow() + timedelta(seconds=at_offset)
        seen = Sighting(
            org_id=agent.org_id, agent_id=agent.id, portfolio=agent.portfolio, at=at, name=name
        )
        lead, _created = await LeadRepository(self.store).resolve(user, seen)
        await ThreadRepository(self.store).resolve(
            org_id=agent.org_id, agent_id=agent.id, lead_id=lead.id, at=at, source={}
        )
        return lead.id


def make_admin_client(
    settings: Settings, store: Store, broker: Broker, partner: PartnerClient | None
) -> TestClient[Any, Any]:
    app = create_admin_app(settings, store, broker, KeyRing.from_settings(settings), partner)
    return TestClient(TestServer(app))


@pytest.fixture
async def admin(
    settings: Settings, store: Store, broker: Broker, partner: FakePartnerApi
) -> AsyncIterator[Admin]:
    """The admin API with Partner credentials (pointing at the fake Partner API)."""
    client = PartnerClient(partner.base_url, "ops@example.com", "pw", timeout_seconds=2.0)
    http = make_admin_client(settings, store, broker, client)
    await http.start_server()
    yield Admin(http, store, settings)
    await http.close()
    await client.close()


def new_number() -> str:
    """A Singapore mobile nobody has yet, as WhatsApp reports it (digits, E.164)."""
    return f"+659{1_000_000 + uuid.uuid4().int % 8_000_000:07d}"  # 91..98: valid mobiles


# --- agents: business portfolio ------------------------------------------------------------


async def test_business_portfolio_id_is_set_shown_audited_and_announced(
    admin: Admin, settings: Settings
) -> None:
    org = await admin.organization()
    changes: list[AgentChanged] = []
    listener = Broker(settings, "listener")
    await listener.connect()
    try:
        await listener.on_config_change(changes.append)
        path = f"/v1/agents/{org.agent.id}"
        answer = await admin.call("PATCH", path, org, {"business_portfolio_id": "104729384756"})
        assert answer["business_portfolio_id"] == "104729384756"
        assert (await admin.call("GET", path, org))["business_portfolio_id"] == "104729384756"
        [listed] = (await admin.call("GET", "/v1/agents", org))["items"]
        assert listed["business_portfolio_id"] == "104729384756"

        async def announced() -> bool:
            return any(c.agent_id == org.agent.id for c in changes)

        await eventually(announced)
    finally:
        await listener.close()
    [entry] = [
        e
        for e in (await admin.call("GET", "/v1/audit-log", org))["items"]
        if e["action"] == "agent.update"
    ]
    assert entry["before"]["business_portfolio_id"] is None
    assert entry["after"]["business_portfolio_id"] == "104729384756"


@pytest.mark.parametrize(
    "value", ["", "   ", "1047 2938", "1047.2938", "x" * 65, "portfolio/1", "ünïcode", 104729]
)
async def test_a_malformed_business_portfolio_id_is_refused_naming_the_field(
    admin: Admin, value: Any
) -> None:
    org = await admin.organization()
    path = f"/v1/agents/{org.agent.id}"
    answer = await admin.call("PATCH", path, org, {"business_portfolio_id": value}, expect=422)
    assert "business_portfolio_id" in answer["error"]["fields"]
    assert (await admin.call("GET", path, org))["business_portfolio_id"] is None


async def test_portfolio_ids_of_letters_digits_dash_and_underscore_up_to_64_are_taken(
    admin: Admin,
) -> None:
    org = await admin.organization()
    path = f"/v1/agents/{org.agent.id}"
    for value in ("7", "Tan-Homes_SG", "9" * 64):
        answer = await admin.call("PATCH", path, org, {"business_portfolio_id": value})
        assert answer["business_portfolio_id"] == value


async def test_an_agent_onboarded_with_a_portfolio_shares_its_leads_user_ids_with_colleagues(
    admin: Admin,
) -> None:
    org = await admin.organization()
    created = await admin.call(
        "POST",
        "/v1/agents",
        org,
        {
            "name": "May Lee",
            "number": "9123 4567",
            "gupshup_app": f"App{uuid.uuid4().hex[:10]}",
            "gupshup_api_key": "k",
            "business_portfolio_id": "104729384756",
        },
        expect=201,
    )
    assert created["business_portfolio_id"] == "104729384756"
    colleague = await admin.agent(org.id, portfolio="104729384756")
    new_agent = await AgentRepository(admin.store).get(created["agent_id"])
    assert new_agent is not None
    first = await admin.lead_writes(new_agent, WhatsAppUser(user_id=USER_A))
    second = await admin.lead_writes(colleague, WhatsAppUser(user_id=USER_A))
    assert first == second  # one person to both agents of the portfolio


async def test_a_portfolio_set_later_keeps_the_agents_leads_known_by_user_id(
    admin: Admin,
) -> None:
    org = await admin.organization()  # no portfolio yet: its own
    lead_id = await admin.lead_writes(org.agent, WhatsAppUser(user_id=USER_A))
    await admin.call(
        "PATCH", f"/v1/agents/{org.agent.id}", org, {"business_portfolio_id": "104729384756"}
    )
    colleague = await admin.agent(org.id, portfolio="104729384756")

    assert await admin.lead_writes(colleague, WhatsAppUser(user_id=USER_A)) == lead_id
    moved = await AgentRepository(admin.store).get(org.agent.id)
    assert moved is not None
    assert await admin.lead_writes(moved, WhatsAppUser(user_id=USER_A)) == lead_id
    found = await admin.call("GET", f"/v1/leads?user_id={USER_A}", org)
    assert [lead["lead_id"] for lead in found["items"]] == [lead_id]
    shown = await admin.call("GET", f"/v1/leads/{lead_id}", org)
    assert len(shown["threads"]) == 2
    assert {u["business_portfolio_id"] for u in shown["user_ids"]} == {
        f"agent:{org.agent.id}",
        "104729384756",
    }


# --- agents: BSUID flags at Gupshup --------------------------------------------------------


def agent_body(app_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "May Lee",
        "number": new_number(),
        "gupshup_app": f"App{uuid.uuid4().hex[:10]}",
        "gupshup_api_key": "k",
    }
    if app_id is not None:
        body["gupshup_app_id"] = app_id
    return body


async def test_onboarding_turns_the_apps_bsuid_flags_on_and_shows_it(
    admin: Admin, partner: FakePartnerApi
) -> None:
    org = await admin.organization()
    app_id = str(uuid.uuid4())
    created = await admin.call("POST", "/v1/agents", org, agent_body(app_id), expect=201)

    [call] = partner.bsuid_calls()
    assert (call.method, call.path) == ("PUT", f"/partner/app/{app_id}/config/bsuid")
    assert call.body == {"enableBSUID": True, "enableBSUIDV3": True}
    assert (created["bsuid_enabled"], created["bsuid_reason"]) == (True, None)
    assert created["callback_subscription"] == "registered"
    shown = await admin.call("GET", f"/v1/agents/{created['agent_id']}", org)
    assert (shown["bsuid_enabled"], shown["bsuid_reason"]) == (True, None)
    assert shown["bsuid_checked_at"] is not None


async def test_a_gupshup_failure_does_not_fail_onboarding_and_the_next_update_retries(
    admin: Admin, partner: FakePartnerApi
) -> None:
    org = await admin.organization()
    partner.bsuid_answer = (500, {"status": "error", "message": "BSUID configuration unavailable"})
    created = await admin.call("POST", "/v1/agents", org, agent_body(str(uuid.uuid4())), 201)
    assert created["bsuid_enabled"] is False
    assert created["bsuid_reason"].startswith("failed: HTTP 500")
    assert "BSUID configuration unavailable" in created["bsuid_reason"]

    partner.bsuid_answer = (200, {"status": "success"})
    path = f"/v1/agents/{created['agent_id']}"
    updated = await admin.call("PATCH", path, org, {"name": "May Lee Tan"})
    assert (updated["bsuid_enabled"], updated["bsuid_reason"]) == (True, None)
    assert len(partner.bsuid_calls()) == 2
    # Once on, an update leaves Gupshup alone; a new app gets its flags turned on.
    await admin.call("PATCH", path, org, {"name": "May"})
    assert len(partner.bsuid_calls()) == 2
    other_app = str(uuid.uuid4())
    await admin.call("PATCH", path, org, {"gupshup_app_id": other_app})
    assert partner.bsuid_calls()[-1].path == f"/partner/app/{other_app}/config/bsuid"


async def test_an_agent_without_an_app_id_is_skipped_with_the_reason_shown(
    admin: Admin, partner: FakePartnerApi
) -> None:
    org = await admin.organization()
    created = await admin.call("POST", "/v1/agents", org, agent_body(), expect=201)
    assert (created["bsuid_enabled"], created["bsuid_reason"]) == (False, "no gupshup_app_id")
    assert partner.bsuid_calls() == []


async def test_without_partner_credentials_the_reason_says_so(
    settings: Settings, store: Store, broker: Broker
) -> None:
    http = make_admin_client(settings, store, broker, None)
    await http.start_server()
    try:
        admin = Admin(http, store, settings)
        org = await admin.organization()
        body = agent_body(str(uuid.uuid4()))
        created = await admin.call("POST", "/v1/agents", org, body, expect=201)
    finally:
        await http.close()
    assert created["bsuid_enabled"] is False
    assert created["bsuid_reason"] == "partner API not configured"
