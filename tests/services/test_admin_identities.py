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


# --- leads and threads: identifiers, filters, organizations --------------------------------


@dataclass
class OnePersonTwoAgencies:
    """A person agency A knows by BSUID and username, and agency B by number and its own
    BSUID: one lead in the registry."""

    a: Org
    b: Org
    outsider: Org
    phone: str
    lead_id: str


@pytest.fixture
async def person(admin: Admin) -> OnePersonTwoAgencies:
    a = await admin.organization(portfolio=f"bp-a-{uuid.uuid4().hex[:8]}")
    b = await admin.organization(portfolio=f"bp-b-{uuid.uuid4().hex[:8]}")
    outsider = await admin.organization()
    phone = new_number()
    user_a = WhatsAppUser(user_id=USER_A, parent_user_id=PARENT, username="@rachel.homes")
    lead_id = await admin.lead_writes(a.agent, user_a)
    # Later the number reaches A too, and the person writes to B with number and B's BSUID.
    await admin.lead_writes(a.agent, WhatsAppUser(phone=phone, user_id=USER_A), at_offset=1)
    assert await admin.lead_writes(b.agent, WhatsAppUser(phone=phone, user_id=USER_B)) == lead_id
    return OnePersonTwoAgencies(a, b, outsider, phone, lead_id)


async def test_each_agency_sees_only_the_identifiers_that_came_through_it(
    admin: Admin, person: OnePersonTwoAgencies
) -> None:
    lead_path = f"/v1/leads/{person.lead_id}"
    seen_by_a = await admin.call("GET", lead_path, person.a)
    assert seen_by_a["phone"] == person.phone
    assert seen_by_a["username"] == "@rachel.homes"
    assert seen_by_a["user_ids"] == [
        {"business_portfolio_id": person.a.agent.business_portfolio_id, "user_id": USER_A}
    ]
    assert seen_by_a["parent_user_id"] == PARENT

    seen_by_b = await admin.call("GET", lead_path, person.b)
    assert (seen_by_b["phone"], seen_by_b["username"], seen_by_b["parent_user_id"]) == (
        person.phone,
        None,
        None,
    )
    assert seen_by_b["user_ids"] == [
        {"business_portfolio_id": person.b.agent.business_portfolio_id, "user_id": USER_B}
    ]
    for shown in (seen_by_b, await admin.call("GET", "/v1/threads", person.b)):
        assert USER_A not in str(shown) and "rachel.homes" not in str(shown)

    [listed] = (await admin.call("GET", "/v1/leads", person.a))["items"]
    assert {k: listed[k] for k in ("phone", "username", "user_ids", "parent_user_id")} == {
        k: seen_by_a[k] for k in ("phone", "username", "user_ids", "parent_user_id")
    }
    [thread] = (await admin.call("GET", "/v1/threads", person.a))["items"]
    assert thread["lead"]["user_ids"] == seen_by_a["user_ids"]
    assert thread["lead"]["username"] == "@rachel.homes"
    detail = await admin.call("GET", f"/v1/threads/{thread['thread_id']}", person.a)
    assert detail["lead"]["user_ids"] == seen_by_a["user_ids"]
    assert detail["lead"]["opted_out"] is False
    await admin.call("GET", lead_path, person.outsider, expect=404)


async def test_a_lead_without_a_number_shows_phone_null(admin: Admin) -> None:
    org = await admin.organization()
    lead_id = await admin.lead_writes(org.agent, WhatsAppUser(user_id=USER_A))
    [listed] = (await admin.call("GET", "/v1/leads", org))["items"]
    assert (listed["lead_id"], listed["phone"], listed["username"]) == (lead_id, None, None)
    [thread] = (await admin.call("GET", "/v1/threads", org))["items"]
    assert thread["lead"]["phone"] is None


async def ids(admin: Admin, org: Org, path: str, key: str = "lead_id") -> list[str]:
    return [item[key] for item in (await admin.call("GET", path, org))["items"]]


async def test_leads_are_found_by_phone_user_id_or_username_only_as_the_agency_knows_them(
    admin: Admin, person: OnePersonTwoAgencies
) -> None:
    a, b, outsider, lead = person.a, person.b, person.outsider, [person.lead_id]
    national = f"{person.phone[3:7]} {person.phone[7:]}"  # as people in Singapore write it
    for form in (person.phone, national, person.phone.lstrip("+")):
        assert await ids(admin, a, f"/v1/leads?phone={form.replace('+', '%2B')}") == lead
        assert await ids(admin, b, f"/v1/leads?phone={form.replace('+', '%2B')}") == lead
    assert await ids(admin, a, f"/v1/leads?user_id={USER_A}") == lead
    assert await ids(admin, a, f"/v1/leads?user_id={PARENT}") == lead
    assert await ids(admin, a, "/v1/leads?username=rachel.homes") == lead
    assert await ids(admin, a, "/v1/leads?username=%40rachel.homes") == lead
    assert await ids(admin, b, f"/v1/leads?user_id={USER_B}") == lead
    # Another agency's identifiers name nobody, and an agency the lead never wrote to finds
    # nothing even by number.
    assert await ids(admin, a, f"/v1/leads?user_id={USER_B}") == []
    assert await ids(admin, b, f"/v1/leads?user_id={USER_A}") == []
    assert await ids(admin, b, f"/v1/leads?user_id={PARENT}") == []
    assert await ids(admin, b, "/v1/leads?username=rachel.homes") == []
    assert await ids(admin, outsider, f"/v1/leads?phone={national}") == []
    assert await ids(admin, outsider, f"/v1/leads?user_id={USER_A}") == []
    # Every filter given must match.
    assert await ids(admin, a, f"/v1/leads?phone={national}&user_id={USER_A}") == lead
    assert await ids(admin, b, f"/v1/leads?phone={national}&user_id={USER_A}") == []


async def test_threads_are_found_by_the_leads_identifiers_within_the_agency(
    admin: Admin, person: OnePersonTwoAgencies
) -> None:
    colleague = await admin.agent(person.a.id)
    other_lead = await admin.lead_writes(colleague, WhatsAppUser(phone=new_number()))
    a_threads = await ids(admin, person.a, "/v1/threads", "thread_id")
    assert len(a_threads) == 2
    by_user = await admin.call("GET", f"/v1/threads?user_id={USER_A}", person.a)
    assert [t["lead_id"] for t in by_user["items"]] == [person.lead_id]
    assert [t["agent_id"] for t in by_user["items"]] == [person.a.agent.id]
    by_name = await ids(admin, person.a, "/v1/threads?username=rachel.homes", "lead_id")
    assert by_name == [person.lead_id]
    by_phone = await admin.call("GET", f"/v1/threads?phone={person.phone[3:]}", person.b)
    assert [t["agent_id"] for t in by_phone["items"]] == [person.b.agent.id]
    assert await ids(admin, person.b, f"/v1/threads?user_id={USER_A}", "thread_id") == []
    assert other_lead not in await ids(admin, person.a, f"/v1/threads?user_id={USER_A}")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("user_id=6598887777", "user_id"),
        ("user_id=SG.", "user_id"),
        ("user_id=sg.1349120865530274", "user_id"),
        ("phone=12", "phone"),
        ("phone=call-me", "phone"),
        (f"phone={USER_A}", "phone"),  # a BSUID is never read as a number
        ("username=%20", "username"),
        ("username=rachel%20lim", "username"),
    ],
)
async def test_a_malformed_filter_is_refused_naming_it(
    admin: Admin, query: str, field: str
) -> None:
    org = await admin.organization()
    for path in ("/v1/leads", "/v1/threads"):
        answer = await admin.call("GET", f"{path}?{query}", org, expect=422)
        assert list(answer["error"]["fields"]) == [field]


async def test_a_merged_away_lead_id_answers_the_lead_it_became(
    admin: Admin,
) -> None:
    org = await admin.organization()
    outsider = await admin.organization()
    phone = new_number()
    colleague = await admin.agent(org.id)
    by_number = await admin.lead_writes(colleague, WhatsAppUser(phone=phone))
    by_user_id = await admin.lead_writes(org.agent, WhatsAppUser(user_id=USER_A))
    assert by_number != by_user_id
    # The number arrives with the BSUID: the two leads are one person (the numbered one stays).
    await admin.lead_writes(org.agent, WhatsAppUser(phone=phone, user_id=USER_A), at_offset=1)

    shown = await admin.call("GET", f"/v1/leads/{by_user_id}", org)
    assert shown["lead_id"] == by_number
    assert shown["phone"] == phone and shown["user_ids"][0]["user_id"] == USER_A
    assert {t["agent_id"] for t in shown["threads"]} == {org.agent.id, colleague.id}
    exported = await admin.call("GET", f"/v1/leads/{by_user_id}/export", org)
    assert exported["lead_id"] == by_number
    assert await ids(admin, org, "/v1/leads") == [by_number]
    answer = await admin.call("GET", f"/v1/leads/{by_user_id}", outsider, expect=404)
    assert answer["error"] == {"code": "not_found", "message": "lead not found"}


# --- the API describes all of it -----------------------------------------------------------


async def test_the_openapi_document_describes_identifiers_filters_and_portfolio(
    admin: Admin,
) -> None:
    response = await admin.client.get("/v1/openapi.json")
    spec = await response.json()
    schemas, paths = spec["components"]["schemas"], spec["paths"]

    def schema_of(path: str, method: str, status: str = "200") -> dict[str, Any]:
        content = paths[path][method]["responses"][status]["content"]["application/json"]
        ref: str = content["schema"]["$ref"]
        found: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return found

    def item_of(page: dict[str, Any]) -> dict[str, Any]:
        ref: str = page["properties"]["items"]["items"]["$ref"]
        found: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return found

    for path in ("/v1/leads", "/v1/threads"):
        names = [p["name"] for p in paths[path]["get"]["parameters"]]
        assert {"phone", "user_id", "username"} <= set(names), path
    lead = item_of(schema_of("/v1/leads", "get"))
    for shown in (lead, schema_of("/v1/leads/{lead_id}", "get")):
        assert {"phone", "username", "user_ids", "parent_user_id"} <= set(shown["properties"])
        assert {"type": "null"} in shown["properties"]["phone"]["anyOf"]
    thread = item_of(schema_of("/v1/threads", "get"))
    assert "lead" in thread["properties"]
    assert "lead" in schema_of("/v1/threads/{thread_id}", "get")["properties"]
    for path, method, status in (
        ("/v1/agents/{agent_id}", "get", "200"),
        ("/v1/agents/{agent_id}", "patch", "200"),
        ("/v1/agents", "post", "201"),
    ):
        agent = schema_of(path, method, status)["properties"]
        assert {"business_portfolio_id", "bsuid_enabled", "bsuid_reason"} <= set(agent)
    body_ref = paths["/v1/agents/{agent_id}"]["patch"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    update = schemas[body_ref.rsplit("/", 1)[1]]["properties"]["business_portfolio_id"]
    assert any(option.get("pattern") for option in update["anyOf"])
