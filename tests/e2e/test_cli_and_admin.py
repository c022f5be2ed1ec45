"""The operator's surface: the `realtybot` command and the admin API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

from cli.local_stack import stack_env
from shared.settings import Settings
from tests.e2e.conftest import Stack
from tests.fakes.gupshup_partner import FakePartnerApi


def realtybot(
    settings: Settings,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator would, against the test's database."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**stack_env(settings), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_agent(
    settings: Settings,
    org_id: str,
    *,
    name: str,
    number: str,
    app: str,
    api_key: str,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `realtybot agent add` for one agent of `org_id`, with any further `options`."""
    return realtybot(
        settings,
        "agent",
        "add",
        "--org",
        org_id,
        "--name",
        name,
        "--number",
        number,
        "--gupshup-app",
        app,
        "--gupshup-api-key",
        api_key,
        *options,
        env=env,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object a successful command prints."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


async def test_operator_onboards_an_organization_and_agent_with_the_cli(stack: Stack) -> None:
    org = ok_json(realtybot(stack.settings, "org", "create", "--name", "CLI Homes Pte Ltd"))
    assert org["org_id"].startswith("org_") and org["api_key"]

    agent = ok_json(
        add_agent(
            stack.settings,
            org["org_id"],
            name="May Lee",
            number="9123 4567",
            app="CliHomesSG",
            api_key="super-secret-gupshup-key",
            options=("--bot-name", "Kai", "--rate", "10"),
        )
    )
    assert agent["number"] == "+6591234567"
    assert agent["callback_url"].startswith(f"{stack.ingress_url}/v1/webhooks/gupshup/cbk_")

    stored = await stack.store.db["agents"].find_one({"_id": agent["agent_id"]})
    assert stored is not None
    assert "super-secret-gupshup-key" not in json.dumps(stored, default=str)
    assert stored["persona"]["bot_name"] == "Kai" and stored["rate_per_second"] == 10

    # The printed callback URL is the one Gupshup can post to.
    async with stack.http.post(
        agent["callback_url"],
        json={
            "app": "CliHomesSG",
            "timestamp": 1764050000000,
            "version": 2,
            "type": "platform-event",
            "payload": {"type": "connectivity-check"},
        },
    ) as response:
        assert response.status == 200


async def test_cli_failures_are_readable_and_nonzero(stack: Stack) -> None:
    org = ok_json(realtybot(stack.settings, "org", "create", "--name", "Failing Homes"))
    duplicate = realtybot(stack.settings, "org", "create", "--name", "Failing Homes")
    assert duplicate.returncode != 0 and "exists" in duplicate.stderr
    assert duplicate.stdout == ""

    bad_number = add_agent(
        stack.settings, org["org_id"], name="X", number="12", app="A", api_key="k"
    )
    assert bad_number.returncode != 0 and "not a valid phone number" in bad_number.stderr

    bad_config = realtybot(stack.settings, "migrate", env={"MONGODB_DB": "no spaces allowed"})
    assert bad_config.returncode == 2 and "MONGODB_DB" in bad_config.stderr


async def test_admin_api_is_scoped_to_the_api_keys_organization(stack: Stack) -> None:
    org = ok_json(realtybot(stack.settings, "org", "create", "--name", "Admin Homes"))
    ours = ok_json(
        add_agent(
            stack.settings,
            org["org_id"],
            name="Ann Ng",
            number="+65 9222 3333",
            app="AdminHomesSG",
            api_key="admin-secret-key",
        )
    )
    theirs = await stack.onboard()  # an agent of another organization
    admin = f"http://127.0.0.1:{stack.settings.admin_port}"

    async with stack.http.get(f"{admin}/v1/openapi.json") as response:
        assert response.status == 200
        assert (await response.json())["openapi"].startswith("3.")
    async with stack.http.get(f"{admin}/v1/organization") as response:
        assert response.status == 401
    async with stack.http.get(
        f"{admin}/v1/agents", headers={"Authorization": "Bearer rbk_wrong"}
    ) as response:
        assert response.status == 401

    auth = {"Authorization": f"Bearer {org['api_key']}"}
    async with stack.http.get(f"{admin}/v1/organization", headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["org_id"] == org["org_id"]
    async with stack.http.get(f"{admin}/v1/agents", headers=auth) as response:
        agents = (await response.json())["items"]
    assert [a["agent_id"] for a in agents] == [ours["agent_id"]]
    assert theirs.agent.id not in json.dumps(agents)
    assert "admin-secret-key" not in json.dumps(agents) and "credentials" not in agents[0]


async def test_operator_sees_and_replays_dead_letters(stack: Stack) -> None:
    agent = await stack.onboard()
    # Too short for any WhatsApp number, and no user ID: nobody to answer, however often.
    # (The sandbox sends only numbers WhatsApp could report, so the webhook is made here.)
    not_a_number = {
        "app": agent.app,
        "timestamp": 1764050000000,
        "version": 2,
        "type": "message",
        "payload": {
            "id": f"wamid.{uuid.uuid4().hex}",
            "source": "12345",
            "type": "text",
            "payload": {"text": "hi"},
            "sender": {"phone": "12345", "name": "?"},
        },
    }
    async with stack.http.post(agent.callback_url, json=not_a_number) as response:
        assert response.status == 200  # accepted: the number is judged downstream

    async def dead_in_dedup() -> int:
        stats = ok_json(realtybot(stack.settings, "dlq", "stats"))
        return int(stats["dead_letters"]["dedup"])

    deadline = asyncio.get_running_loop().time() + 20
    while (count := await dead_in_dedup()) < 1:
        assert asyncio.get_running_loop().time() < deadline, "nothing was dead-lettered"
        await asyncio.sleep(0.3)

    replay = ok_json(realtybot(stack.settings, "dlq", "replay", "--stage", "dedup"))
    # Every dead letter waiting is replayed: ours, and any an earlier test left arriving late.
    assert replay["stage"] == "dedup" and replay["replayed"] >= count
    # Still unfixable, so it comes back, with its reason, instead of vanishing.
    deadline = asyncio.get_running_loop().time() + 20
    while await dead_in_dedup() < count:
        assert asyncio.get_running_loop().time() < deadline, "a replayed message was lost"
        await asyncio.sleep(0.3)


async def test_an_agent_works_in_its_organizations_time_zone_unless_told_otherwise(
    stack: Stack,
) -> None:
    """Working hours, quiet hours and offered viewing times follow the agent's zone."""
    org = ok_json(
        realtybot(
            stack.settings,
            "org",
            "create",
            "--name",
            "London Lets",
            "--region",
            "GB",
            "--timezone",
            "Europe/London",
        )
    )
    by_cli = ok_json(
        add_agent(
            stack.settings,
            org["org_id"],
            name="Tom Hale",
            number="07911 123456",
            app="LondonLetsTom",
            api_key="london-key-1",
        )
    )
    admin = f"http://127.0.0.1:{stack.settings.admin_port}"
    auth = {"Authorization": f"Bearer {org['api_key']}"}
    zones = {}
    for name, app, number, zone in (
        ("Ada Moss", "LondonLetsAda", "07911 123457", None),
        ("Raj Iyer", "LondonLetsRaj", "07911 123458", "Asia/Kolkata"),
    ):
        body = {"name": name, "number": number, "gupshup_app": app, "gupshup_api_key": "k-" + app}
        if zone:
            body["timezone"] = zone
        async with stack.http.post(f"{admin}/v1/agents", json=body, headers=auth) as response:
            assert response.status == 201, await response.text()
            zones[name] = (await response.json())["agent_id"]

    async def zone_of(agent_id: str) -> str:
        stored = await stack.store.db["agents"].find_one({"_id": agent_id})
        assert stored is not None
        return str(stored["timezone"])

    assert await zone_of(by_cli["agent_id"]) == "Europe/London"
    assert await zone_of(zones["Ada Moss"]) == "Europe/London"
    assert await zone_of(zones["Raj Iyer"]) == "Asia/Kolkata"
    bad = add_agent(
        stack.settings,
        org["org_id"],
        name="X",
        number="07911 123459",
        app="LondonLetsX",
        api_key="x",
        options=("--timezone", "Mars/Olympus"),
    )
    assert bad.returncode != 0 and "unknown time zone" in bad.stderr


async def test_operator_sets_a_business_portfolio_and_turns_bsuid_on_with_the_cli(
    stack: Stack,
) -> None:
    org = ok_json(
        realtybot(stack.settings, "org", "create", "--name", f"Portfolio {uuid.uuid4().hex[:8]}")
    )
    org_id, app_id = org["org_id"], str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {org['api_key']}"}

    async def shown(agent_id: str) -> Any:
        url = f"{stack.admin_url}/v1/agents/{agent_id}"
        async with stack.http.get(url, headers=auth) as response:
            assert response.status == 200
            return await response.json()

    # The Partner API is a local fake here: the sandbox does not serve the BSUID route.
    async with FakePartnerApi() as partner:
        env = {"GUPSHUP_PARTNER_BASE_URL": partner.base_url}
        partner.bsuid_answer = (503, {"status": "error", "message": "Service Unavailable"})
        added = ok_json(
            await asyncio.to_thread(
                add_agent,
                stack.settings,
                org_id,
                name="Pat Goh",
                number=f"9{1_000_000 + uuid.uuid4().int % 8_000_000:07d}",
                app=f"PortfolioHomes{uuid.uuid4().hex[:8]}",
                api_key="portfolio-key",
                options=("--gupshup-app-id", app_id, "--business-portfolio-id", "104729384756"),
                env=env,
            )
        )
        # Onboarding went through although Gupshup refused; the reason is on the agent.
        assert added["business_portfolio_id"] == "104729384756"
        assert added["callback_subscription"] == "registered"
        assert added["bsuid_enabled"] is False
        assert added["bsuid_reason"].startswith("failed: HTTP 503")
        agent = await shown(added["agent_id"])
        assert agent["business_portfolio_id"] == "104729384756"
        assert (agent["bsuid_enabled"], agent["bsuid_reason"]) == (False, added["bsuid_reason"])

        failing = await asyncio.to_thread(
            realtybot,
            stack.settings,
            "agent",
            "enable-bsuid",
            "--org",
            org_id,
            "--agent",
            added["agent_id"],
            env=env,
        )
        assert failing.returncode != 0 and failing.stdout == ""
        assert "BSUIDs not enabled" in failing.stderr and "503" in failing.stderr

        partner.bsuid_answer = (200, {"status": "success"})
        enabled = ok_json(
            await asyncio.to_thread(
                realtybot,
                stack.settings,
                "agent",
                "enable-bsuid",
                "--org",
                org_id,
                "--agent",
                added["agent_id"],
                env=env,
            )
        )
        calls = partner.bsuid_calls()
    assert enabled == {
        "agent_id": added["agent_id"],
        "gupshup_app_id": app_id,
        "bsuid_enabled": True,
        "bsuid_reason": None,
    }
    assert [(c.method, c.path) for c in calls] == [
        ("PUT", f"/partner/app/{app_id}/config/bsuid")
    ] * 3
    assert all(c.body == {"enableBSUID": True, "enableBSUIDV3": True} for c in calls)
    agent = await shown(added["agent_id"])
    assert (agent["bsuid_enabled"], agent["bsuid_reason"]) == (True, None)
    async with stack.http.get(f"{stack.admin_url}/v1/audit-log", headers=auth) as response:
        actions = [entry["action"] for entry in (await response.json())["items"]]
    assert actions[:2] == ["agent.bsuid", "agent.bsuid"]


async def test_cli_refuses_a_malformed_portfolio_and_an_unknown_agent(stack: Stack) -> None:
    org = ok_json(
        realtybot(stack.settings, "org", "create", "--name", f"Refusing {uuid.uuid4().hex[:8]}")
    )
    bad = add_agent(
        stack.settings,
        org["org_id"],
        name="X",
        number=f"9{1_000_000 + uuid.uuid4().int % 8_000_000:07d}",
        app="RefusingHomesSG",
        api_key="k",
        options=("--business-portfolio-id", "portfolio 1"),
    )
    assert bad.returncode != 0 and "not a business portfolio id" in bad.stderr
    unknown = realtybot(
        stack.settings, "agent", "enable-bsuid", "--org", org["org_id"], "--agent", "agt_nobody"
    )
    assert unknown.returncode != 0 and "no agent agt_nobody" in unknown.stderr
