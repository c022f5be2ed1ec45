"""End to end: a lead's message enters as a webhook and a reply leaves through Gupshup."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.e2e.conftest import OnboardedAgent, Stack

T = TypeVar("T")


def new_lead() -> str:
    """A fresh Singapore mobile number as WhatsApp writes it."""
    return f"659{1_000_000 + uuid.uuid4().int % 8_000_000:07d}"  # +65 91.. to 98..: valid


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 20
) -> T:
    """Poll until `done(result)` or fail with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last: {result!r}")
        await asyncio.sleep(0.1)


async def settled_reply(
    stack: Stack, agent: OnboardedAgent, lead: str, expected_at_least: int = 1
) -> list[dict[str, Any]]:
    """The messages sent to the lead once they stop changing for a second."""
    sent = await eventually(
        lambda: stack.sent_to(agent, lead), lambda s: len(s) >= expected_at_least
    )
    while True:
        await asyncio.sleep(1.0)
        again = await stack.sent_to(agent, lead)
        if len(again) == len(sent):
            return again
        sent = again


async def test_lead_message_gets_one_reply_from_the_agents_number(stack: Stack) -> None:
    agent = await stack.onboard(bot_name="Mia")
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi, any 3-bedroom condo in Tampines under 1.5m?")

    sent = await settled_reply(stack, agent, lead)

    assert [m["source"] for m in sent] == [agent.digits] * len(sent)
    assert "Mia" in sent[0]["text"] and "Rachel" in sent[0]["text"]
    texts = [m["text"] for m in sent]
    # No listing of this organization matches: it says so (inventing none) and asks one
    # qualifying question.
    assert "3-bedroom condo in Tampines" in texts[1], texts
    assert sum(t.count("?") for t in texts) == 1 and texts[-1].endswith("?"), texts
    thread = await stack.store.db["threads"].find_one({"agent_id": agent.agent.id})
    assert thread is not None and thread["org_id"] == agent.org.id
    assert thread["profile"]["bedrooms"] == 3 and thread["profile"]["area"] == "Tampines"
    assert thread["last_inbound_at"] is not None and thread["last_outbound_at"] is not None
    # The thread's history holds the lead's message and every bubble under Gupshup's ids.
    history = await stack.store.db["messages"].find({"thread_id": thread["_id"]}).to_list()
    assert sorted(m["direction"] for m in history) == ["in"] + ["out"] * len(sent)
    outgoing = {m["provider_message_id"] for m in history if m["direction"] == "out"}
    assert outgoing == {m["messageId"] for m in sent}


async def test_conversation_continues_with_the_next_question(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello")
    first = await settled_reply(stack, agent, lead)
    await stack.lead_says(agent, lead, "I want to buy for my family, budget around 1.2m")
    sent = await settled_reply(stack, agent, lead, expected_at_least=len(first) + 1)

    follow_up = [m["text"] for m in sent[len(first) :]]
    # Intent and budget are known now: thanks, and the next question only.
    assert follow_up == ["Thanks, that's helpful!", "Which area or district would you prefer?"]


async def test_duplicate_webhook_is_stored_once_and_answered_once(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    provider_id = f"wamid.{uuid.uuid4().hex}"
    await stack.lead_says(agent, lead, "Is the Bedok unit available?", message_id=provider_id)
    await stack.lead_says(agent, lead, "Is the Bedok unit available?", message_id=provider_id)

    sent = await settled_reply(stack, agent, lead)
    await asyncio.sleep(1.5)  # room for a second reply, which must not come

    replies = await stack.store.db["replies"].find({"org_id": agent.org.id}).to_list()
    assert len(replies) == 1
    assert len(await stack.sent_to(agent, lead)) == len(sent)
    assert len(sent) == len(replies[0]["command"]["bubbles"])
    stored = await stack.store.db["messages"].count_documents(
        {"agent_id": agent.agent.id, "provider_message_id": provider_id}
    )
    assert stored == 1


async def test_two_agents_of_one_organization_share_the_lead_in_two_threads(
    stack: Stack,
) -> None:
    first = await stack.onboard()
    second = await stack.onboard(first.org, org_key=first.org_key)
    lead = new_lead()
    await stack.lead_says(first, lead, "Hi, I'm looking to rent in Bishan")
    await stack.lead_says(second, lead, "Hi, do you have listings in Bishan?")

    await settled_reply(stack, first, lead)
    await settled_reply(stack, second, lead)

    leads = await stack.store.db["leads"].find({"phone": f"+{lead}"}).to_list()
    assert len(leads) == 1
    threads = await stack.store.db["threads"].find({"lead_id": leads[0]["_id"]}).to_list()
    assert sorted(t["agent_id"] for t in threads) == sorted([first.agent.id, second.agent.id])
    assert {t["org_id"] for t in threads} == {first.org.id}


async def test_v3_webhook_is_answered_like_v2(stack: Stack) -> None:
    agent = await stack.onboard(fmt="v3")
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi there")
    sent = await settled_reply(stack, agent, lead)
    assert len(sent) == 2 and sent[0]["destination"] == lead


async def test_malformed_webhook_is_rejected_and_nothing_is_stored(stack: Stack) -> None:
    agent = await stack.onboard()
    bad_bodies: list[bytes] = [
        b"{not json",
        json.dumps([1, 2, 3]).encode(),
        json.dumps({"app": agent.app, "type": "message", "payload": {"type": "text"}}).encode(),
    ]
    for body in bad_bodies:
        async with stack.http.post(
            agent.callback_url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400, body
            assert "error" in await response.json()
    await asyncio.sleep(1.0)
    assert await stack.store.db["messages"].count_documents({"agent_id": agent.agent.id}) == 0
    assert await stack.store.db["threads"].count_documents({"agent_id": agent.agent.id}) == 0


async def test_unknown_callback_key_is_404(stack: Stack) -> None:
    async with stack.http.post(
        f"{stack.ingress_url}/v1/webhooks/gupshup/cbk_nobody",
        json={"app": "x", "type": "message", "payload": {}},
    ) as response:
        assert response.status == 404


async def test_delivery_status_is_recorded_on_the_send(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello")
    sent = await settled_reply(stack, agent, lead)
    message_id = sent[0]["messageId"]

    for status in ("enqueued", "sent", "delivered"):
        result = await stack.control(
            "POST",
            "/sandbox/v1/statuses",
            {"app": agent.app, "messageId": message_id, "status": status},
        )
        assert result["callback_status"] == 200

    sends = stack.store.db["sends"]
    send = await eventually(
        lambda: sends.find_one({"gupshup_message_id": message_id}),
        lambda s: s is not None and s.get("status") == "delivered",
    )
    statuses = await stack.store.db["delivery_statuses"].find({"send_id": send["_id"]}).to_list()
    assert sorted(s["status"] for s in statuses) == ["delivered", "enqueued", "sent"]
    assert send["whatsapp_message_id"].startswith("wamid.")


async def test_a_stopped_service_loses_nothing_and_catches_up_after_restart(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    # SIGTERM, as Kubernetes sends it: the service finishes its work and exits cleanly.
    assert stack.processes.stop(("dedup",)) == {"dedup": 0}

    await stack.lead_says(agent, lead, "Hello, anyone there?")  # ingress still accepts
    await asyncio.sleep(1.0)
    assert await stack.sent_to(agent, lead) == []

    stack.processes.start(("dedup",), sandbox=False)
    await stack.processes.wait_ready()
    sent = await settled_reply(stack, agent, lead)
    assert len(sent) == 2


async def test_logs_carry_no_secret_and_no_full_phone_number(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi, my number is +" + lead)
    sent = await settled_reply(stack, agent, lead)
    await stack.control(
        "POST",
        "/sandbox/v1/statuses",
        {"app": agent.app, "messageId": sent[0]["messageId"], "status": "read"},
    )
    async with stack.http.post(agent.callback_url, data=b"{broken") as response:
        assert response.status == 400  # a warning is logged for it
    await asyncio.sleep(1.0)

    callback_key = agent.callback_url.rsplit("/", 1)[1]
    logs = {
        path.name: path.read_text()
        for path in stack.log_dir.glob("*.log")
        if path.name != "sandbox.log"
    }  # the sandbox plays Gupshup, not us
    assert "ingress.log" in logs and "outbound.log" in logs
    stored = [
        json.loads(line)
        for line in logs["dedup.log"].splitlines()
        if agent.agent.id in line and "inbound message stored" in line
    ]
    assert len(stored) == 1
    assert stored[0]["phone"] == "…" + lead[-4:]  # shortened, still useful to correlate
    assert stored[0]["org_id"] == agent.org.id  # every line carries its tenant
    for name, text in logs.items():
        assert agent.api_key not in text, name
        assert callback_key not in text, name
        assert lead not in text, name
