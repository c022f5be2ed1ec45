"""Listings and availability through the admin API."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Stack

CSV_OK = """project,district,property_type,bedrooms,price,size_sqft,tenure,status
Treasure at Tampines,Tampines,condo,3,1450000,1200,99-year,available
The Gazania,Bukit Timah,condo,2,1680000,764,freehold,
Pasir Ris 8,Pasir Ris,condo,4,2100000,1500,99-year,reserved
"""

CSV_BAD = """project,district,property_type,bedrooms,price
Good Row,Bedok,condo,3,1300000
Bad Price,Bedok,condo,3,lots
Fine Again,Bedok,hdb,4,650000
Bad Type,Bedok,castle,9,999999
"""


async def test_listings_are_created_changed_filtered_and_removed(stack: Stack) -> None:
    agent = await stack.onboard()
    key = agent.org_key
    created = await stack.admin(
        "POST",
        "/v1/listings",
        key,
        {
            "project": "Parc Central",
            "district": "Tampines",
            "property_type": "executive_condo",
            "bedrooms": 3,
            "price": 1250000,
            "agent_id": agent.agent.id,
        },
        expect=201,
    )
    listing = f"/v1/listings/{created['listing_id']}"
    assert (await stack.admin("GET", listing, key))["project"] == "Parc Central"

    changed = await stack.admin("PATCH", listing, key, {"status": "reserved", "price": 1200000})
    assert (changed["status"], changed["price"]) == ("reserved", 1200000)
    found = await stack.admin("GET", "/v1/listings?district=Tampines&status=reserved", key)
    assert [item["listing_id"] for item in found["items"]] == [created["listing_id"]]

    await stack.admin("DELETE", listing, key)
    await stack.admin("GET", listing, key, expect=404)
    audit = await stack.admin("GET", "/v1/audit-log", key)
    actions = [entry["action"] for entry in audit["items"]]
    assert {"listing.create", "listing.update", "listing.delete"} <= set(actions)


async def post_csv(stack: Stack, key: str, text: str, expect: int) -> Any:
    async with stack.http.post(
        f"{stack.admin_url}/v1/listings/import",
        data=text.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
    ) as response:
        answer = await response.json()
        assert response.status == expect, answer
        return answer


async def test_csv_import_is_all_or_nothing_and_names_bad_lines(stack: Stack) -> None:
    agent = await stack.onboard()
    key = agent.org_key

    rejected = await post_csv(stack, key, CSV_BAD, expect=422)
    assert rejected["error"]["code"] == "invalid_rows"
    assert set(rejected["error"]["fields"]) == {"line 3", "line 5"}
    assert "price" in rejected["error"]["fields"]["line 3"]
    assert "property_type" in rejected["error"]["fields"]["line 5"]
    assert (await stack.admin("GET", "/v1/listings", key))["items"] == []  # nothing half-done

    assert await post_csv(stack, key, CSV_OK, expect=201) == {"imported": 3}
    listed = await stack.admin("GET", "/v1/listings?limit=2", key)
    assert len(listed["items"]) == 2 and listed["next"]
    rest = await stack.admin("GET", f"/v1/listings?limit=2&after={listed['next']}", key)
    projects = {i["project"] for i in listed["items"] + rest["items"]}
    assert projects == {"Treasure at Tampines", "The Gazania", "Pasir Ris 8"}

    wrong_columns = await post_csv(stack, key, "name,cost\nA,1\n", expect=422)
    assert "line 1" in wrong_columns["error"]["fields"]


async def test_agent_availability_is_validated_and_kept(stack: Stack) -> None:
    agent = await stack.onboard()
    path = f"/v1/agents/{agent.agent.id}/availability"
    default = await stack.admin("GET", path, agent.org_key)
    assert default["timezone"] == "Asia/Singapore" and len(default["working_hours"]) == 5
    assert default["slot_minutes"] == 30

    hours = [
        {"day": "sat", "start": "10:00", "end": "14:00"},
        {"day": "mon", "start": "09:30", "end": "19:00"},
    ]
    saved = await stack.admin(
        "PUT", path, agent.org_key, {"timezone": "Asia/Kuala_Lumpur", "working_hours": hours}
    )
    assert saved == {"timezone": "Asia/Kuala_Lumpur", "working_hours": hours, "slot_minutes": 30}
    # The appointment length is set with the hours, and kept when a later PUT leaves it out.
    body = {"timezone": "Asia/Kuala_Lumpur", "working_hours": hours, "slot_minutes": 45}
    assert (await stack.admin("PUT", path, agent.org_key, body))["slot_minutes"] == 45
    body = {"timezone": "Asia/Singapore", "working_hours": hours}
    assert (await stack.admin("PUT", path, agent.org_key, body))["slot_minutes"] == 45
    assert (await stack.admin("GET", path, agent.org_key))["slot_minutes"] == 45
    for minutes in (10, 241, "30", 30.5, True):
        body = {"timezone": "Asia/Singapore", "working_hours": hours, "slot_minutes": minutes}
        refused = await stack.admin("PUT", path, agent.org_key, body, expect=422)
        assert "slot_minutes" in refused["error"]["fields"], minutes

    bad = await stack.admin(
        "PUT",
        path,
        agent.org_key,
        {
            "timezone": "Mars/Olympus",
            "working_hours": [{"day": "sun", "start": "25:00", "end": "10:00"}],
        },
        expect=422,
    )
    fields = bad["error"]["fields"]
    assert "timezone" in fields and any(f.startswith("working_hours.0") for f in fields)
