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
