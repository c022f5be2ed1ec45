"""Outbound against Gupshup's answers: Retry-After, failure codes, visible delivery."""

from __future__ import annotations

import asyncio
import time

from tests.e2e.conftest import Stack
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply


async def test_429_with_retry_after_is_waited_out_and_each_bubble_sent_once(stack: Stack) -> None:
    agent = await stack.onboard()
    await stack.control(
        "POST",
        "/sandbox/v1/faults",
        {"app": agent.app, "mode": "429_burst", "count": 1, "retry_after_seconds": 1},
    )
    lead = new_lead()
    started = time.monotonic()
    await stack.lead_says(agent, lead, "Hello")
    sent = await settled_reply(stack, agent, lead)
    assert len(sent) == 2 and sent[0]["text"] != sent[1]["text"]
    assert time.monotonic() - started >= 1.0  # Gupshup's wait was honoured
    sends = await stack.store.db["sends"].find({"agent_id": agent.agent.id}).to_list()
    assert sorted(s["state"] for s in sends) == ["submitted", "submitted"]


async def test_delivery_is_visible_per_message_and_failure_1012_records_the_opt_out(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello")
    sent = await settled_reply(stack, agent, lead)
    first, second = sent[0]["messageId"], sent[1]["messageId"]
    for status in ("enqueued", "sent", "delivered"):
        await stack.control(
            "POST", "/sandbox/v1/statuses", {"app": agent.app, "messageId": first, "status": status}
        )
    await stack.control(
        "POST",
        "/sandbox/v1/statuses",
        {
            "app": agent.app,
            "messageId": second,
            "status": "failed",
            "code": 1012,
            "reason": "Message Sending failed as the phone number is opted out.",
        },
    )

    threads = await stack.admin("GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key)
    path = f"/v1/threads/{threads['items'][0]['thread_id']}/messages"

    async def deliveries() -> list[str | None]:
        listed = await stack.admin("GET", path, agent.org_key)
        return sorted(
            (m["delivery"] or {}).get("status") or "-"
            for m in listed["items"]
            if m["direction"] == "out"
        )

    assert await eventually(deliveries, lambda d: d == ["delivered", "failed"])
    consents = stack.store.db["consents"]
    await eventually(
        lambda: consents.find_one({"org_id": agent.org.id}),
        lambda c: c is not None and c["opted_out"] is True,
    )
    await stack.lead_says(agent, lead, "Any updates?")
    await asyncio.sleep(2.0)
    assert len(await stack.sent_to(agent, lead)) == len(sent)  # nothing to an opted-out lead


async def test_reply_gupshup_finds_outside_the_window_is_replaced_by_the_fallback_template(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    base = f"/v1/agents/{agent.agent.id}"
    created = await stack.admin(
        "POST",
        f"{base}/templates",
        agent.org_key,
        {
            "name": "reconnect",
            "category": "UTILITY",
            "body": "Hi {{1}}, sorry for the wait! Reply here to continue about your search.",
            "examples": ["Rachel"],
        },
        expect=201,
    )
    two_params = await stack.admin(
        "POST",
        f"{base}/templates",
        agent.org_key,
        {
            "name": "viewing",
            "category": "UTILITY",
            "body": "Hi {{1}}, still keen on {{2}}?",
            "examples": ["Rachel", "the unit"],
        },
        expect=201,
    )
    await stack.control(
        "POST",
        "/sandbox/v1/templates/status",
        {"app": agent.app, "template_id": created["provider_id"], "status": "APPROVED"},
    )
    await eventually(
        lambda: stack.admin("GET", f"{base}/templates", agent.org_key),
        lambda listed: any(t["status"] == "APPROVED" for t in listed["items"]),
    )
    refused = await stack.admin(
        "PATCH",
        base,
        agent.org_key,
        {"fallback_template_id": two_params["template_id"]},
        expect=422,
    )
    assert "fallback_template_id" in refused["error"]["fields"]
    await stack.admin(
        "PATCH", base, agent.org_key, {"fallback_template_id": "tpl_unknown"}, expect=404
    )
    changed = await stack.admin(
        "PATCH", base, agent.org_key, {"fallback_template_id": created["template_id"]}
    )
    assert changed["fallback_template_id"] == created["template_id"]

    # Gupshup enforces the window on its own clock; its first answer asks for 2 s of patience,
    # and by then a day has passed there: the reply is accepted, then fails with 1005.
    await stack.control("POST", f"/sandbox/v1/apps/{agent.app}/rules", {"enforce_window": True})
    await stack.control(
        "POST",
        "/sandbox/v1/faults",
        {"app": agent.app, "mode": "429_burst", "count": 1, "retry_after_seconds": 2},
    )
    lead = new_lead()
    try:
        await stack.lead_says(agent, lead, "Hello", name="Rachel Lim")
        await eventually(
            lambda: stack.control("GET", "/sandbox/v1/faults"), lambda f: f["faults"] == []
        )
        await stack.control("POST", "/sandbox/v1/clock", {"offset_seconds": 25 * 3600})
        sent = await eventually(
            lambda: stack.sent_to(agent, lead), lambda s: any("template" in m for m in s)
        )
        await asyncio.sleep(1.5)
    finally:
        await stack.control("POST", "/sandbox/v1/clock", {"offset_seconds": 0})
    sent = await stack.sent_to(agent, lead)
    templates = [m for m in sent if "template" in m]
    assert len(templates) == 1, sent  # once, though every bubble of the reply failed
    assert templates[0]["template"] == {"id": created["provider_id"], "params": ["Rachel"]}
    assert sent[-1] is templates[0] or sent[-1] == templates[0]

    threads = await stack.admin("GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key)
    path = f"/v1/threads/{threads['items'][0]['thread_id']}/messages"
    listed = await stack.admin("GET", path, agent.org_key)
    texts = [m["text"] for m in listed["items"] if m["direction"] == "out"]
    assert "Hi Rachel, sorry for the wait! Reply here to continue about your search." in texts
