"""A lead's data through the admin API: CSV import (by phone, business-scoped user ID or
both), export and erasure, per organization."""

from __future__ import annotations

import json
import uuid
from typing import Any

from shared.identity import WhatsAppUser
from shared.models import utcnow
from shared.repositories.leads import LeadRepository, Sighting
from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import new_lead, settled_reply

HEADER = "name,phone,source,agent_id\n"


def fresh_local() -> str:
    """A Singapore mobile nobody has yet, as eight national digits."""
    return new_lead().removeprefix("65")


async def post_csv(stack: Stack, key: str, text: str, expect: int = 200) -> Any:
    """Import leads from CSV text; assert the status; return the JSON answer."""
    async with stack.http.post(
        f"{stack.admin_url}/v1/leads/import",
        data=text.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
    ) as response:
        answer = await response.json()
        assert response.status == expect, answer
        return answer


async def lead_by_phone(stack: Stack, e164: str) -> dict[str, Any] | None:
    """The registry entry of a number, read from the store."""
    found: dict[str, Any] | None = await stack.store.db["leads"].find_one({"phone": e164})
    return found


async def stored(stack: Stack, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    """Documents of a collection, read from the store."""
    return [doc async for doc in stack.store.db[collection].find(query)]


async def leads_counted(stack: Stack) -> dict[str, float]:
    """`realtybot_leads_total` by outcome, as ingress (which serves imports) counts it."""
    async with stack.http.get(f"{stack.ingress_url}/metrics") as response:
        text = await response.text()
    counted = {"created": 0.0, "merged": 0.0}
    for outcome in counted:
        prefix = f'realtybot_leads_total{{outcome="{outcome}"}} '
        counted[outcome] = sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)
        )
    return counted


async def test_import_creates_merges_and_reports_invalid_rows_once(stack: Stack) -> None:
    agent = await stack.onboard()
    key, org = agent.org_key, agent.org.id
    counted_before = await leads_counted(stack)
    local, other = fresh_local(), fresh_local()
    text = (
        HEADER
        + f"Rachel Lim,+65 {local[:4]} {local[4:]},open house,{agent.agent.id}\n"
        + f"Rachel,{local},portal,\n"
        + f"Rachel Lim,0065-{local[:4]}-{local[4:]},flyer,\n"
        + "Tom Tan,12345,flyer,\n"
        + "No Number,,flyer,\n"
        + f"Ann Ong,{other},portal,\n"
    )

    first = await post_csv(stack, key, text)

    lead = await lead_by_phone(stack, f"+65{local}")
    assert lead is not None
    outcomes = [(row["line"], row["outcome"], row.get("lead_id")) for row in first["rows"]]
    assert outcomes[:3] == [
        (2, "created", lead["_id"]),
        (3, "merged", lead["_id"]),  # a new name seen
        (4, "unchanged", lead["_id"]),  # the same person and name again
    ]
    assert [(line, outcome) for line, outcome, _ in outcomes[3:5]] == [
        (5, "invalid"),
        (6, "invalid"),
    ]
    assert "phone" in first["rows"][3]["reason"] and "phone" in first["rows"][4]["reason"]
    assert outcomes[5][:2] == (7, "created")
    assert (first["created"], first["merged"], first["unchanged"], first["invalid"]) == (2, 1, 1, 2)

    # Three ways of writing one number are one lead, with both names seen through this org.
    assert len(await stored(stack, "leads", {"phone": f"+65{local}"})) == 1
    assert [(n["name"], n["org_id"]) for n in lead["names"]] == [
        ("Rachel Lim", org),
        ("Rachel", org),
    ]
    assert lead["first_touch"]["source"] == "import"
    assert lead["first_touch"]["import_source"] == "open house"
    assert lead["first_touch"]["org_id"] == org
    threads = await stored(stack, "threads", {"lead_id": lead["_id"]})
    assert [(t["agent_id"], t["org_id"], t["source"]) for t in threads] == [
        (agent.agent.id, org, {"source": "import", "import_source": "open house"})
    ]
    shown = await stack.admin("GET", f"/v1/leads/{lead['_id']}", key)
    assert shown["names"] == ["Rachel Lim", "Rachel"]
    counted = await leads_counted(stack)
    assert counted["created"] - counted_before["created"] == 2
    assert counted["merged"] - counted_before["merged"] == 1

    second = await post_csv(stack, key, text)

    assert [row["outcome"] for row in second["rows"]] == [
        "unchanged",
        "unchanged",
        "unchanged",
        "invalid",
        "invalid",
        "unchanged",
    ]
    assert [row.get("lead_id") for row in second["rows"]] == [
        row.get("lead_id") for row in first["rows"]
    ]
    assert (second["created"], second["merged"], second["invalid"]) == (0, 0, 2)
    again = await lead_by_phone(stack, f"+65{local}")
    assert again is not None and again["names"] == lead["names"]
    assert len(await stored(stack, "threads", {"lead_id": lead["_id"]})) == 1
    assert await leads_counted(stack) == counted

    audit = (await stack.admin("GET", "/v1/audit-log", key))["items"]
    imports = [entry for entry in audit if entry["action"] == "lead.import"]
    assert [entry["after"]["created"] for entry in imports] == [0, 2]  # newest first
    assert local not in json.dumps(imports) and "Rachel" not in json.dumps(imports)


async def test_a_malformed_import_is_refused_whole(stack: Stack) -> None:
    agent = await stack.onboard()
    other = await stack.onboard()
    local = fresh_local()
    bad_files = {
        "an unknown column": f"name,phone,email\nRachel,{local},r@example.com\n",
        "no phone column": "name,source\nRachel,portal\n",
        "an empty body": "",
        "another organization's agent": HEADER + f"Rachel,{local},portal,{other.agent.id}\n",
        "an unknown agent": HEADER + f"Rachel,{local},portal,agt_{uuid.uuid4().hex}\n",
    }
    for what, text in bad_files.items():
        answer = await post_csv(stack, agent.org_key, text, expect=422)
        assert answer["error"]["code"] == "invalid_rows", (what, answer)
    assert await lead_by_phone(stack, f"+65{local}") is None  # nothing was done


async def test_import_of_a_person_another_organization_knows_shows_nothing_of_it(
    stack: Stack,
) -> None:
    a, b = await stack.onboard(), await stack.onboard()
    lead = new_lead()
    await stack.lead_says(b, lead, "Hi, any units left?", name="Bee")
    await settled_reply(stack, b, lead)
    known = await lead_by_phone(stack, f"+{lead}")
    assert known is not None

    report = await post_csv(stack, a.org_key, HEADER + f"Ann,+{lead},walk-in,{a.agent.id}\n")

    # To A the person is new: the report must not tell that B knows them.
    assert report["rows"] == [{"line": 2, "outcome": "created", "lead_id": known["_id"]}]
    entry = await lead_by_phone(stack, f"+{lead}")
    assert entry is not None
    assert sorted((n["name"], n["org_id"]) for n in entry["names"]) == sorted(
        [("Bee", b.org.id), ("Ann", a.org.id)]
    )
    assert entry["first_touch"] == known["first_touch"]  # B's, not overwritten
    shown = await stack.admin("GET", f"/v1/leads/{known['_id']}", a.org_key)
    assert shown["names"] == ["Ann"] and shown["first_touch"] is None
    again = await post_csv(stack, a.org_key, HEADER + f"Ann,+{lead},walk-in,{a.agent.id}\n")
    assert again["rows"][0]["outcome"] == "unchanged"


async def two_organizations_with_one_lead(
    stack: Stack,
) -> tuple[OnboardedAgent, OnboardedAgent, str, dict[str, Any]]:
    """Agents of two organizations, a lead who wrote to B first and then to A, answered."""
    a, b = await stack.onboard(), await stack.onboard()
    lead = new_lead()
    await stack.lead_says(b, lead, "Hi B, my code is bravo-secret", name="Bee Name")
    await settled_reply(stack, b, lead)
    await stack.lead_says(a, lead, "Hi A, looking for a condo", name="Ay Name")
    await settled_reply(stack, a, lead)
    found = await lead_by_phone(stack, f"+{lead}")
    assert found is not None
    return a, b, lead, found


async def test_export_contains_only_this_organizations_data(stack: Stack) -> None:
    a, b, lead, registry = await two_organizations_with_one_lead(stack)
    lead_id = registry["_id"]

    exported = await stack.admin("GET", f"/v1/leads/{lead_id}/export", a.org_key)

    assert exported["lead_id"] == lead_id and exported["phone"] == f"+{lead}"
    assert [n["name"] for n in exported["names"]] == ["Ay Name"]
    assert exported["first_touch"] is None  # the lead came to B first
    assert [t["agent_id"] for t in exported["threads"]] == [a.agent.id]
    messages = exported["threads"][0]["messages"]
    assert messages[0]["direction"] == "in" and len(messages) >= 2
    assert messages[0]["text"] == "Hi A, looking for a condo"
    assert len(exported["threads"][0]["sends"]) == len(await stack.sent_to(a, lead))
    assert exported["appointments"] == [] and exported["conversions"] == []
    text = json.dumps(exported)
    b_thread = (await stored(stack, "threads", {"org_id": b.org.id, "lead_id": lead_id}))[0]
    for of_b in ("Bee Name", "bravo-secret", b.org.id, b.agent.id, b_thread["_id"], b.app):
        assert of_b not in text

    from_b = await stack.admin("GET", f"/v1/leads/{lead_id}/export", b.org_key)
    assert from_b["first_touch"]["agent_id"] == b.agent.id
    assert "Ay Name" not in json.dumps(from_b) and "looking for a condo" not in json.dumps(from_b)
    audit = (await stack.admin("GET", "/v1/audit-log", a.org_key))["items"]
    assert audit[0]["action"] == "lead.export" and audit[0]["target"] == lead_id


async def test_erasure_removes_one_organizations_data_and_keeps_the_others(
    stack: Stack,
) -> None:
    a, b, lead, registry = await two_organizations_with_one_lead(stack)
    lead_id = registry["_id"]
    b_export = await stack.admin("GET", f"/v1/leads/{lead_id}/export", b.org_key)
    b_messages = await stored(stack, "messages", {"org_id": b.org.id, "lead_id": lead_id})

    erased = await stack.admin("DELETE", f"/v1/leads/{lead_id}", a.org_key)

    counts = erased["erased"]
    assert counts["threads"] == 1 and counts["lead_names"] == 1 and counts["first_touch"] == 0
    assert counts["messages"] >= 2 and counts["sends"] >= 1 and counts["replies"] >= 1
    for collection in ("threads", "messages", "replies", "sends", "lead_imports"):
        assert await stored(stack, collection, {"org_id": a.org.id}) == [], collection
    entry = await lead_by_phone(stack, f"+{lead}")
    assert entry is not None  # B still holds the lead
    assert [(n["name"], n["org_id"]) for n in entry["names"]] == [("Bee Name", b.org.id)]
    assert entry["first_touch"] == registry["first_touch"]
    assert await stored(stack, "messages", {"org_id": b.org.id, "lead_id": lead_id}) == b_messages
    assert await stack.admin("GET", f"/v1/leads/{lead_id}/export", b.org_key) == b_export

    await stack.admin("GET", f"/v1/leads/{lead_id}/export", a.org_key, expect=404)
    await stack.admin("DELETE", f"/v1/leads/{lead_id}", a.org_key, expect=404)
    audit = (await stack.admin("GET", "/v1/audit-log", a.org_key))["items"]
    erasures = [e for e in audit if e["action"] == "lead.erase"]
    assert len(erasures) == 1 and erasures[0]["target"] == lead_id
    assert erasures[0]["after"] == {"erased": counts}
    assert "Ay Name" not in json.dumps(audit) and lead not in json.dumps(audit)

    # B's conversation goes on.
    before = len(await stack.sent_to(b, lead))
    await stack.lead_says(b, lead, "I want to buy for my family, budget around 1.2m")
    assert len(await settled_reply(stack, b, lead, expected_at_least=before + 1)) > before


async def test_erasure_by_the_only_organization_removes_the_registry_entry(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello there")
    await settled_reply(stack, agent, lead)
    registry = await lead_by_phone(stack, f"+{lead}")
    assert registry is not None
    imported_only = fresh_local()
    report = await post_csv(stack, agent.org_key, HEADER + f"Imp Ort,{imported_only},fair,\n")
    imported_id = report["rows"][0]["lead_id"]

    erased = await stack.admin("DELETE", f"/v1/leads/{registry['_id']}", agent.org_key)
    assert erased["erased"]["first_touch"] == 1
    assert await lead_by_phone(stack, f"+{lead}") is None
    assert await stored(stack, "messages", {"lead_id": registry["_id"]}) == []
    await stack.admin("DELETE", f"/v1/leads/{registry['_id']}", agent.org_key, expect=404)

    # A lead imported without an agent is the organization's through its import record.
    exported = await stack.admin("GET", f"/v1/leads/{imported_id}/export", agent.org_key)
    assert [i["import_source"] for i in exported["imports"]] == ["fair"]
    assert exported["threads"] == []
    erased = await stack.admin("DELETE", f"/v1/leads/{imported_id}", agent.org_key)
    assert erased["erased"]["lead_imports"] == 1
    assert await lead_by_phone(stack, f"+65{imported_only}") is None


async def test_another_organizations_key_gets_404_for_export_and_erasure(stack: Stack) -> None:
    a, _b, lead, registry = await two_organizations_with_one_lead(stack)
    outsider = await stack.onboard()  # an organization the lead never wrote to
    lead_id = registry["_id"]
    before = await stack.admin("GET", f"/v1/leads/{lead_id}/export", a.org_key)

    for method, path in (
        ("GET", f"/v1/leads/{lead_id}/export"),
        ("DELETE", f"/v1/leads/{lead_id}"),
    ):
        answer = await stack.admin(method, path, outsider.org_key, expect=404)
        assert answer["error"]["code"] == "not_found"
        assert lead not in json.dumps(answer)

    assert await stack.admin("GET", f"/v1/leads/{lead_id}/export", a.org_key) == before
    assert await lead_by_phone(stack, f"+{lead}") is not None


IDENTIFIED_HEADER = "name,phone,user_id,source,agent_id\n"


def new_user_id() -> str:
    """A business-scoped user ID nobody has yet."""
    return f"SG.{uuid.uuid4().int % 10**16:016d}"


async def in_portfolio(stack: Stack, agent: OnboardedAgent) -> str:
    """Put the agent in a business portfolio of its own through the admin API; its id."""
    portfolio = f"{uuid.uuid4().int % 10**15:015d}"
    await stack.admin(
        "PATCH",
        f"/v1/agents/{agent.agent.id}",
        agent.org_key,
        {"business_portfolio_id": portfolio},
    )
    return portfolio


async def test_import_takes_user_ids_in_the_agents_portfolio(stack: Stack) -> None:
    agent = await stack.onboard()
    portfolio = await in_portfolio(stack, agent)
    key, org, agent_id = agent.org_key, agent.org.id, agent.agent.id
    user_id, local, stray = new_user_id(), fresh_local(), new_user_id()
    text = (
        IDENTIFIED_HEADER
        + f"Rachel,,{user_id},roadshow,{agent_id}\n"
        + f"Rachel,{local},{user_id},roadshow,{agent_id}\n"  # her number, later in the file
        + f"Nobody,,,roadshow,{agent_id}\n"
        + f"Ben,,{new_user_id()},roadshow,\n"  # a user ID without its agent's portfolio
        + f"Stray,{stray},,roadshow,{agent_id}\n"  # a BSUID where the number goes
    )

    report = await post_csv(stack, key, text)

    rows = report["rows"]
    lead_id = rows[0]["lead_id"]
    assert [(r["line"], r["outcome"], r.get("lead_id")) for r in rows[:2]] == [
        (2, "created", lead_id),
        (3, "merged", lead_id),  # the number is new to this lead
    ]
    assert [r["outcome"] for r in rows[2:]] == ["invalid", "invalid", "invalid"]
    assert "phone or user_id" in rows[2]["reason"]
    assert "agent_id" in rows[3]["reason"]
    assert "user_id column" in rows[4]["reason"]
    entry = await stack.store.db["leads"].find_one({"_id": lead_id})
    assert entry is not None and entry["phone"] == f"+65{local}"
    assert entry["user_ids"] == [{"portfolio": portfolio, "user_id": user_id, "org_id": org}]
    claim = await stack.store.db["lead_keys"].find_one({"_id": f"bsuid:{portfolio}:{user_id}"})
    assert claim is not None and claim["lead_id"] == lead_id
    # The stray BSUID was never read as a number: no lead has its digits.
    digits = stray.split(".")[1]
    assert await stack.store.db["leads"].count_documents({"phone": {"$regex": digits}}) == 0
    assert len(await stored(stack, "lead_imports", {"org_id": org})) == 1

    shown = await stack.admin("GET", f"/v1/leads?user_id={user_id}", key)
    assert [(s["lead_id"], s["phone"]) for s in shown["items"]] == [(lead_id, f"+65{local}")]
    assert shown["items"][0]["user_ids"] == [
        {"business_portfolio_id": portfolio, "user_id": user_id}
    ]
    by_phone = await stack.admin("GET", f"/v1/leads?phone={local}", key)
    assert [s["lead_id"] for s in by_phone["items"]] == [lead_id]
    threads = await stack.admin("GET", f"/v1/threads?user_id={user_id}", key)
    assert [t["agent_id"] for t in threads["items"]] == [agent_id]

    again = await post_csv(stack, key, text)
    assert [r["outcome"] for r in again["rows"][:2]] == ["unchanged", "unchanged"]
    assert await stack.store.db["leads"].count_documents({"user_ids.user_id": user_id}) == 1


async def test_export_and_erasure_cover_each_organizations_own_identifiers(
    stack: Stack,
) -> None:
    a, b = await stack.onboard(), await stack.onboard()
    portfolio_a, portfolio_b = await in_portfolio(stack, a), await in_portfolio(stack, b)
    local, user_a, user_b = fresh_local(), new_user_id(), new_user_id()
    parent = f"SG.ENT.{uuid.uuid4().int % 10**12:012d}"
    await post_csv(stack, a.org_key, IDENTIFIED_HEADER + f"Ay,{local},{user_a},fair,{a.agent.id}\n")
    report = await post_csv(
        stack, b.org_key, IDENTIFIED_HEADER + f"Bee,{local},{user_b},web,{b.agent.id}\n"
    )
    lead_id = report["rows"][0]["lead_id"]
    # A's agent later sees the person's username and parent user ID, as dedup records them.
    seen = Sighting(
        org_id=a.org.id, agent_id=a.agent.id, portfolio=portfolio_a, at=utcnow(), name="Ay"
    )
    user = WhatsAppUser(user_id=user_a, parent_user_id=parent, username="@ay.homes")
    assert (await LeadRepository(stack.store).resolve(user, seen))[0].id == lead_id

    from_a = await stack.admin("GET", f"/v1/leads/{lead_id}/export", a.org_key)
    assert from_a["phone"] == f"+65{local}"
    assert (from_a["username"], from_a["parent_user_id"]) == ("@ay.homes", parent)
    assert from_a["user_ids"] == [{"business_portfolio_id": portfolio_a, "user_id": user_a}]
    from_b = await stack.admin("GET", f"/v1/leads/{lead_id}/export", b.org_key)
    assert (from_b["username"], from_b["parent_user_id"]) == (None, None)
    assert from_b["user_ids"] == [{"business_portfolio_id": portfolio_b, "user_id": user_b}]
    assert user_a not in json.dumps(from_b) and "ay.homes" not in json.dumps(from_b)

    erased = await stack.admin("DELETE", f"/v1/leads/{lead_id}", a.org_key)

    counts = erased["erased"]
    assert (counts["user_ids"], counts["usernames"], counts["parent_user_id"]) == (1, 1, 1)
    entry = await stack.store.db["leads"].find_one({"_id": lead_id})
    assert entry is not None  # B still holds the person
    assert entry["phone"] == f"+65{local}"
    assert entry["user_ids"] == [{"portfolio": portfolio_b, "user_id": user_b, "org_id": b.org.id}]
    assert entry["usernames"] == [] and entry["parent_user_id"] is None
    keys = {k["_id"] async for k in stack.store.db["lead_keys"].find({"lead_id": lead_id})}
    assert keys == {f"bsuid:{portfolio_b}:{user_b}"}
    assert await stack.admin("GET", f"/v1/leads/{lead_id}/export", b.org_key) == from_b
    assert (await stack.admin("GET", f"/v1/leads?user_id={user_a}", a.org_key))["items"] == []
    assert (await stack.admin("GET", f"/v1/leads?user_id={user_b}", b.org_key))["items"]

    await stack.admin("DELETE", f"/v1/leads/{lead_id}", b.org_key)

    assert await stack.store.db["leads"].find_one({"_id": lead_id}) is None
    assert await stack.store.db["lead_keys"].count_documents({"lead_id": lead_id}) == 0
    # The person is new to A again: importing them creates a lead, not the erased one.
    again = await post_csv(
        stack, a.org_key, IDENTIFIED_HEADER + f"Ay,,{user_a},fair,{a.agent.id}\n"
    )
    assert again["rows"][0]["outcome"] == "created"
    assert again["rows"][0]["lead_id"] != lead_id
