"""The cost report end to end: messages priced by the sandbox's `sent` statuses and billing
events, counted through the admin API."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply

SINGAPORE = ZoneInfo("Asia/Singapore")  # organizations' default time zone
PRICES = {"currency": "USD", "marketing": 0.0107, "utility": 0.0014, "authentication": 0.0014}


async def approved_template(
    stack: Stack, agent: OnboardedAgent, name: str, category: str, body: str, examples: list[str]
) -> str:
    """A template of the agent's, applied for and approved by Meta (the sandbox); its id."""
    base = f"/v1/agents/{agent.agent.id}/templates"
    created = await stack.admin(
        "POST",
        base,
        agent.org_key,
        {"name": name, "category": category, "body": body, "examples": examples},
        expect=201,
    )
    await stack.control(
        "POST",
        "/sandbox/v1/templates/status",
        {"app": agent.app, "template_id": created["provider_id"], "status": "APPROVED"},
    )

    async def status() -> str:
        listed = await stack.admin("GET", base, agent.org_key)
        return str(next(t["status"] for t in listed["items"] if t["name"] == name))

    await eventually(status, lambda s: s == "APPROVED")
    return str(created["template_id"])


async def conversation(stack: Stack, agent: OnboardedAgent) -> tuple[str, list[dict[str, Any]]]:
    """A new lead writes to the agent, whose app reports `sent` soon after each send; the
    lead and the bot's replies."""
    await stack.control(
        "POST", f"/sandbox/v1/apps/{agent.app}/rules", {"status_delays_ms": {"sent": 100}}
    )
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello, any condo in Tampines?")
    return lead, await settled_reply(stack, agent, lead)


def by_agent_and_category(report: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """(agent, category) -> (billable, free), summed over the report's periods."""
    billable: Counter[tuple[str, str]] = Counter()
    free: Counter[tuple[str, str]] = Counter()
    for row in report["rows"]:
        billable[row["agent_id"], row["category"]] += row["billable"]
        free[row["agent_id"], row["category"]] += row["free"]
    return {key: (billable[key], free[key]) for key in billable | free}


async def test_templates_and_replies_are_reported_once_per_message_by_agent_and_category(
    stack: Stack,
) -> None:
    started = datetime.now(SINGAPORE).date()
    agent = await stack.onboard()
    colleague = await stack.onboard(agent.org, org_key=agent.org_key)
    other_org = await stack.onboard()
    lead, replies = await conversation(stack, agent)
    _, colleague_replies = await conversation(stack, colleague)
    _, other_replies = await conversation(stack, other_org)

    marketing = await approved_template(
        stack, agent, "new_launch", "MARKETING", "New launch in {{1}}!", ["Punggol"]
    )
    utility = await approved_template(
        stack,
        agent,
        "viewing_reminder",
        "UTILITY",
        "Hi {{1}}, see you at {{2}}.",
        ["Rachel", "Tampines"],
    )
    threads = await stack.admin("GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key)
    thread_id = threads["items"][0]["thread_id"]
    for template_id, params in ((marketing, ["Punggol"]), (utility, ["Rachel", "Tampines"])):
        await stack.admin(
            "POST",
            f"/v1/threads/{thread_id}/template",
            agent.org_key,
            {"template_id": template_id, "params": params},
            expect=202,
        )
    await eventually(lambda: stack.sent_to(agent, lead), lambda s: len(s) == len(replies) + 2)

    # Each message is priced twice, by its `sent` status and by its billing event.
    messages = len(replies) + 2 + len(colleague_replies)
    db, org_id = stack.store.db, agent.org.id
    await eventually(
        lambda: db["billing_events"].count_documents({"org_id": org_id}), lambda n: n == messages
    )
    await eventually(
        lambda: db["delivery_statuses"].count_documents({"org_id": org_id, "status": "sent"}),
        lambda n: n == messages,
    )

    today = datetime.now(SINGAPORE).date()
    days = f"from={started - timedelta(days=1)}&to={today + timedelta(days=1)}"
    by_day = await stack.admin("GET", f"/v1/reports/costs?{days}&period=day", agent.org_key)
    by_month = await stack.admin("GET", f"/v1/reports/costs?{days}&period=month", agent.org_key)

    expected = {
        (agent.agent.id, "service"): (0, len(replies)),
        (agent.agent.id, "marketing"): (1, 0),
        (agent.agent.id, "utility"): (0, 1),  # inside the lead's 24-hour window: free
        (colleague.agent.id, "service"): (0, len(colleague_replies)),
    }
    for report, period_format in ((by_day, "%Y-%m-%d"), (by_month, "%Y-%m")):
        assert by_agent_and_category(report) == expected, report
        assert {row["period"] for row in report["rows"]} <= {
            f"{started:{period_format}}",
            f"{today:{period_format}}",
        }
        assert report["totals"] == {"billable": 1, "free": messages - 1}
        assert "estimated_cost" not in report["totals"]
    assert by_day["timezone"] == "Asia/Singapore" and by_day["period"] == "day"

    # The other organization sees only its own messages.
    theirs = await stack.admin("GET", f"/v1/reports/costs?{days}", other_org.org_key)
    assert by_agent_and_category(theirs) == {
        (other_org.agent.id, "service"): (0, len(other_replies))
    }

    # With the organization's prices, each row and the total carry an estimate.
    await stack.admin("PATCH", "/v1/organization", agent.org_key, {"message_prices": PRICES})
    priced = await stack.admin("GET", f"/v1/reports/costs?{days}&period=month", agent.org_key)
    costs = {(row["agent_id"], row["category"]): row["estimated_cost"] for row in priced["rows"]}
    assert costs[agent.agent.id, "marketing"] == 0.0107
    assert costs[agent.agent.id, "utility"] == 0.0 and costs[colleague.agent.id, "service"] == 0.0
    assert (priced["totals"]["estimated_cost"], priced["totals"]["currency"]) == (0.0107, "USD")


async def test_bad_report_parameters_and_prices_are_refused_naming_them(stack: Stack) -> None:
    agent = await stack.onboard()
    for query, field in (
        ("period=week", "period"),
        ("from=2025-13-01", "from"),
        ("to=2025/07/31", "to"),
        ("from=20250701", "from"),
        ("from=2025-08-01&to=2025-07-31", "from"),
        ("from=2024-01-01&to=2025-01-01", "to"),
    ):
        answer = await stack.admin("GET", f"/v1/reports/costs?{query}", agent.org_key, expect=422)
        assert answer["error"]["code"] == "invalid", query
        assert list(answer["error"]["fields"]) == [field], query
    year = await stack.admin(
        "GET", "/v1/reports/costs?from=2024-01-01&to=2024-12-31&period=month", agent.org_key
    )
    assert (year["from"], year["to"], year["rows"]) == ("2024-01-01", "2024-12-31", [])

    async with stack.http.get(f"{stack.admin_url}/v1/reports/costs") as response:
        assert response.status == 401
    refused = await stack.admin("GET", "/v1/reports/costs", stack.platform_key, expect=403)
    assert refused["error"]["code"] == "forbidden"

    for prices, field in (
        ({**PRICES, "currency": "usd"}, "currency"),
        ({**PRICES, "marketing": -0.01}, "marketing"),
        ({"currency": "USD", "marketing": 0.0107}, "utility"),
        ({**PRICES, "service": 0.0}, "service"),
    ):
        answer = await stack.admin(
            "PATCH", "/v1/organization", agent.org_key, {"message_prices": prices}, expect=422
        )
        assert any(name.endswith(field) for name in answer["error"]["fields"]), answer
