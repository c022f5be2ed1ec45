"""Follow-ups and reminders through the whole pipeline: planned by the brain, found due by its
sweeper, sent by outbound, read by the lead at the sandbox.

Nobody waits days: a test moves a planned message's due time into the past in the store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.models import utcnow
from tests.e2e.conftest import Stack
from tests.e2e.test_conversations import Lead, appointments, slot_lines
from tests.e2e.test_pipeline import eventually


async def scheduled(stack: Stack, lead: Lead, kind: str) -> list[dict[str, Any]]:
    thread = await lead.thread()
    assert thread is not None
    cursor = stack.store.db["scheduled_messages"].find({"thread_id": thread["_id"], "kind": kind})
    return sorted(await cursor.to_list(), key=lambda s: s["due_at"])


async def make_due(stack: Stack, schedule: dict[str, Any]) -> None:
    """The time passes: the message is due now."""
    await stack.store.db["scheduled_messages"].update_one(
        {"_id": schedule["_id"]}, {"$set": {"due_at": utcnow() - timedelta(seconds=1)}}
    )


async def next_message(stack: Stack, lead: Lead) -> dict[str, Any]:
    """The one message the lead receives next (and nothing else with it)."""
    sent = await eventually(
        lambda: stack.sent_to(lead.agent, lead.phone), lambda s: len(s) > lead.seen
    )
    assert len(sent) == lead.seen + 1, sent[lead.seen :]
    lead.seen += 1
    return sent[-1]


async def test_a_lead_who_went_quiet_gets_a_nudge(stack: Stack) -> None:
    agent = await stack.onboard(bot_name="Mia")
    lead = Lead(stack, agent)
    await lead.says("Hi, I'd like to rent a 2 bedroom condo in Orchard")

    [first] = await eventually(
        lambda: scheduled(stack, lead, "follow_up"),
        lambda s: len(s) == 1 and s[0]["status"] == "pending",
    )
    reply_made = first["created_at"]
    assert first["due_at"] - reply_made == timedelta(hours=72)
    await make_due(stack, first)

    nudge = await next_message(stack, lead)
    assert nudge["text"].startswith("Hi Rachel, just checking in on your search for a "), nudge
    assert "2-bedroom condo to rent in Orchard" in nudge["text"]
    assert nudge["source"] == agent.digits
    follow_ups = await eventually(
        lambda: scheduled(stack, lead, "follow_up"),
        lambda s: [x["status"] for x in s] == ["sent", "pending"],
    )
    assert follow_ups[1]["step"] == 2
    assert follow_ups[1]["due_at"] - reply_made == timedelta(days=7)
    send = await eventually(
        lambda: stack.store.db["sends"].find_one({"command_id": follow_ups[0]["command_id"]}),
        lambda s: s is not None and s["state"] == "submitted",
    )
    assert send is not None
    history = await stack.store.db["messages"].find_one(
        {"thread_id": follow_ups[0]["thread_id"], "author": "scheduler"}
    )
    assert history is not None and history["text"] == nudge["text"]


async def test_a_booked_lead_gets_a_reminder(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent, name="Wei Ling Tan")
    offer = await lead.says(
        "Hi, looking to buy a 3 bedroom condo in Bishan, budget 2m, next year. Can I book a call?"
    )
    offered = slot_lines(offer)
    assert len(offered) >= 2, offer
    await lead.says(f"option {len(offered)}")  # the furthest ahead: both reminders are planned
    [booked] = await appointments(stack, agent)

    reminders = await eventually(lambda: scheduled(stack, lead, "reminder"), lambda s: len(s) == 2)
    assert [r["status"] for r in reminders] == ["pending", "pending"]
    assert [r["appointment_id"] for r in reminders] == [booked["appointment_id"]] * 2
    assert [r["status"] for r in await scheduled(stack, lead, "follow_up")] == ["cancelled"]
    await make_due(stack, reminders[0])  # the day before

    reminder = await next_message(stack, lead)
    label = offered[-1]  # "Wed 2 Dec, 10:00 am"
    day, clock = label.split(", ")
    assert reminder["text"].startswith("Hi Wei, a reminder: your appointment with Jason Tan is")
    assert f"{day} at {clock}" in reminder["text"], (reminder, label)
    after = await eventually(
        lambda: scheduled(stack, lead, "reminder"),
        lambda s: [r["status"] for r in s] == ["sent", "pending"],
    )
    assert after[0]["command_id"]


async def test_follow_up_and_reminder_templates_take_the_lead_name_and_time(stack: Stack) -> None:
    agent = await stack.onboard()
    base = f"/v1/agents/{agent.agent.id}"

    async def template(name: str, body: str, examples: list[str]) -> str:
        made = await stack.admin(
            "POST",
            f"{base}/templates",
            agent.org_key,
            {"name": name, "category": "UTILITY", "body": body, "examples": examples},
            expect=201,
        )
        return str(made["template_id"])

    named = await template("checking_in", "Hi {{1}}, still looking?", ["Rachel"])
    timed = await template("reminder", "Hi {{1}}, see you {{2}}.", ["Rachel", "Mon 9 am"])
    changed = await stack.admin(
        "PATCH",
        base,
        agent.org_key,
        {"follow_up_template_id": named, "reminder_template_id": timed},
    )
    assert (changed["follow_up_template_id"], changed["reminder_template_id"]) == (named, timed)
    refused = await stack.admin(
        "PATCH", base, agent.org_key, {"follow_up_template_id": timed}, expect=422
    )
    assert "follow_up_template_id" in refused["error"]["fields"]
    await stack.admin(
        "PATCH", base, agent.org_key, {"reminder_template_id": "tpl_unknown"}, expect=404
    )
    cleared = await stack.admin("PATCH", base, agent.org_key, {"follow_up_template_id": ""})
    assert cleared["follow_up_template_id"] is None
    assert cleared["reminder_template_id"] == timed
