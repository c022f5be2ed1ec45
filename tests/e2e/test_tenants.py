"""Tenants end to end: suspension, callback and credential changes, handoff, templates, keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

from cli.local_stack import stack_env
from shared.crypto import KeyRing
from shared.models import utcnow
from shared.phones import wa_id
from shared.repositories.agents import AgentRepository
from tests.conftest import TEST_KEY_RING
from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply


async def stored_inbound(stack: Stack, agent: OnboardedAgent, count: int) -> None:
    """Wait until dedup stored `count` messages from leads of the agent."""
    messages = stack.store.db["messages"]
    await eventually(
        lambda: messages.count_documents({"agent_id": agent.agent.id, "direction": "in"}),
        lambda n: n >= count,
    )


async def quiet_for(
    stack: Stack, agent: OnboardedAgent, lead: str, count: int, seconds: float = 2.0
) -> None:
    """Nothing more than `count` messages reach the lead for a while."""
    await asyncio.sleep(seconds)
    assert len(await stack.sent_to(agent, lead)) == count


async def greeted_lead(stack: Stack, agent: OnboardedAgent) -> tuple[str, list[dict[str, Any]]]:
    """A new lead who says hello to the agent, and what the lead was sent once it settled."""
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello")
    return lead, await settled_reply(stack, agent, lead)


async def answered_again(
    stack: Stack, agent: OnboardedAgent, lead: str, before: list[dict[str, Any]], text: str
) -> None:
    """The lead says `text` and is sent more than the `before` messages in answer."""
    await stack.lead_says(agent, lead, text)
    after = await settled_reply(stack, agent, lead, expected_at_least=len(before) + 1)
    assert len(after) > len(before)


async def test_suspension_takes_effect_at_once_on_every_service(stack: Stack) -> None:
    agent = await stack.onboard()
    lead, first = await greeted_lead(stack, agent)  # every service has the agent cached now
    path = f"/v1/agents/{agent.agent.id}"

    suspended = await stack.admin("PATCH", path, agent.org_key, {"status": "suspended"})
    assert suspended["status"] == "suspended"
    await stack.lead_says(agent, lead, "Are you still there?")
    await stored_inbound(stack, agent, 2)  # kept for the agent, just not answered
    await quiet_for(stack, agent, lead, len(first))  # far shorter than the cache lifetime

    await stack.admin("PATCH", path, agent.org_key, {"status": "active"})
    await answered_again(stack, agent, lead, first, "I'd like to buy for my family, budget 1.5m")


async def test_rotated_callback_key_retires_the_old_url(stack: Stack) -> None:
    agent = await stack.onboard()
    rotated = await stack.admin("POST", f"/v1/agents/{agent.agent.id}/callback-key", agent.org_key)
    assert rotated["callback_url"] != agent.callback_url
    assert rotated["callback_subscription"] == "registered"  # Gupshup now posts to the new URL

    ping = {
        "app": agent.app,
        "timestamp": 1764050000000,
        "version": 2,
        "type": "platform-event",
        "payload": {"type": "connectivity-check"},
    }
    async with stack.http.post(agent.callback_url, json=ping) as response:
        assert response.status == 404
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi")  # the sandbox follows the subscription
    assert len(await settled_reply(stack, agent, lead)) == 2


async def test_new_gupshup_key_is_used_without_restart(stack: Stack) -> None:
    agent = await stack.onboard()
    lead, first = await greeted_lead(stack, agent)

    new_key = f"gs-{uuid.uuid4().hex}"
    changed = await stack.admin(
        "PUT",
        f"/v1/agents/{agent.agent.id}/credentials",
        agent.org_key,
        {"gupshup_api_key": new_key},
    )
    assert changed == {"agent_id": agent.agent.id, "credentials_changed": ["gupshup_api_key"]}
    await stack.control(
        "POST",
        "/sandbox/v1/apps",
        {  # Gupshup now refuses the old key
            "app": agent.app,
            "api_key": new_key,
            "number": agent.digits,
            "app_id": agent.agent.gupshup_app_id,
            "callback_url": agent.callback_url,
        },
    )
    await answered_again(stack, agent, lead, first, "Looking to rent in Bishan")
    shown = await stack.admin("GET", f"/v1/agents/{agent.agent.id}", agent.org_key)
    assert new_key not in json.dumps(shown) and shown["credentials_set"] == ["gupshup_api_key"]


async def test_handoff_silences_the_bot_and_the_agent_answers_through_the_api(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead, first = await greeted_lead(stack, agent)
    threads = await stack.admin("GET", f"/v1/threads?agent_id={agent.agent.id}", agent.org_key)
    thread_id = threads["items"][0]["thread_id"]

    handed = await stack.admin(
        "POST", f"/v1/threads/{thread_id}/handoff", agent.org_key, {"note": "VIP client"}
    )
    assert handed["state"] == "human"
    await stack.lead_says(agent, lead, "Can I speak to Jason directly?")
    await stored_inbound(stack, agent, 2)
    await quiet_for(stack, agent, lead, len(first))

    await stack.admin(
        "POST",
        f"/v1/threads/{thread_id}/messages",
        agent.org_key,
        {"text": "Hi, Jason here. Happy to help!"},
        expect=202,
    )
    sent = await eventually(lambda: stack.sent_to(agent, lead), lambda s: len(s) > len(first))
    assert sent[-1]["text"] == "Hi, Jason here. Happy to help!"
    assert sent[-1]["source"] == agent.digits

    await stack.admin("POST", f"/v1/threads/{thread_id}/handback", agent.org_key)
    await stack.lead_says(agent, lead, "Thanks! I want to buy in Tampines, 1.2m budget")
    await settled_reply(stack, agent, lead, expected_at_least=len(sent) + 1)
    # The bot answers only the new message: the one the agent handled is theirs.
    replies = await stack.store.db["replies"].find({"thread_id": thread_id}).to_list()
    latest = max(replies, key=lambda r: r["created_at"])
    assert len(latest["answers"]) == 1
    answered = await stack.store.db["messages"].find_one({"_id": latest["answers"][0]})
    assert answered is not None and "Tampines" in answered["text"]

    history = await stack.admin("GET", f"/v1/threads/{thread_id}/messages", agent.org_key)
    authors = [m["author"] for m in history["items"] if m["direction"] == "out"]
    assert any(a and a.startswith("human:") for a in authors)


async def test_templates_are_applied_for_approved_and_used_outside_the_window(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead, first = await greeted_lead(stack, agent)
    base = f"/v1/agents/{agent.agent.id}/templates"

    async def submit(expect: int, **template: Any) -> Any:
        """Submit a template for the agent; the answer, whose status must be `expect`."""
        return await stack.admin("POST", base, agent.org_key, template, expect=expect)

    created = await submit(
        201,
        name="viewing_follow_up",
        language="en",
        category="UTILITY",
        body="Hi {{1}}, are you still interested in viewing {{2}}?",
        examples=["Rachel", "The Tampines unit"],
    )
    assert created["status"] == "PENDING" and created["parameters"] == 2
    duplicate = await submit(
        409,
        name="viewing_follow_up",
        language="en",
        category="UTILITY",
        body="Hi {{1}}",
        examples=["x"],
    )
    assert duplicate["error"]["code"] == "template_exists"
    bad = await submit(
        422, name="short", category="UTILITY", body="Hi {{1}} {{3}}", examples=["a", "b"]
    )
    assert "placeholders" in json.dumps(bad)

    rejected = await submit(
        201, name="big_discount", category="MARKETING", body="Huge discount today!", examples=[]
    )
    await stack.control(
        "POST",
        "/sandbox/v1/templates/status",
        {
            "app": agent.app,
            "template_id": rejected["provider_id"],
            "status": "REJECTED",
            "reason": "Promotional content",
        },
    )
    await stack.control(
        "POST",
        "/sandbox/v1/templates/status",
        {"app": agent.app, "template_id": created["provider_id"], "status": "APPROVED"},
    )

    async def statuses() -> dict[str, tuple[str, str | None]]:
        listed = await stack.admin("GET", base, agent.org_key)
        return {t["name"]: (t["status"], t["reason"]) for t in listed["items"]}

    seen = await eventually(
        statuses,
        lambda s: (
            s.get("viewing_follow_up", ("",))[0] == "APPROVED"
            and s.get("big_discount", ("",))[0] == "REJECTED"
        ),
    )
    assert seen["big_discount"][1] == "Promotional content"

    # A day later the window is closed: free-form is skipped, the approved template goes out.
    thread = await stack.store.db["threads"].find_one({"agent_id": agent.agent.id})
    assert thread is not None
    await stack.store.db["threads"].update_one(
        {"_id": thread["_id"]}, {"$set": {"last_inbound_at": utcnow() - timedelta(hours=25)}}
    )
    await stack.admin(
        "POST",
        f"/v1/threads/{thread['_id']}/messages",
        agent.org_key,
        {"text": "Still looking?"},
        expect=202,
    )
    not_approved = await stack.admin(
        "POST",
        f"/v1/threads/{thread['_id']}/template",
        agent.org_key,
        {"template_id": rejected["template_id"]},
        expect=409,
    )
    assert not_approved["error"]["code"] == "template_not_approved"
    await stack.admin(
        "POST",
        f"/v1/threads/{thread['_id']}/template",
        agent.org_key,
        {"template_id": created["template_id"], "params": ["Rachel", "the Tampines unit"]},
        expect=202,
    )

    sent = await eventually(lambda: stack.sent_to(agent, lead), lambda s: len(s) > len(first))
    await asyncio.sleep(1.0)
    sent = await stack.sent_to(agent, lead)
    assert len(sent) == len(first) + 1  # the template only; the free-form reply was skipped
    assert sent[-1]["template"]["id"] == created["provider_id"]
    assert sent[-1]["template"]["params"] == ["Rachel", "the Tampines unit"]
    skipped = await stack.store.db["sends"].find_one(
        {"thread_id": thread["_id"], "state": "skipped"}
    )
    assert skipped is not None and skipped["reason"] == "window_closed"
    usage = await stack.store.db["template_usage"].find({"agent_id": agent.agent.id}).to_list()
    assert [(u["name"], u["category"], u["lead_id"]) for u in usage] == [
        ("viewing_follow_up", "UTILITY", thread["lead_id"])
    ]


async def test_keys_rotate_reencrypts_credentials_while_services_run(stack: Stack) -> None:
    org = await stack.admin(
        "POST",
        "/v1/organizations",
        stack.platform_key,
        {"name": f"Rotation {uuid.uuid4().hex[:6]}"},
        expect=201,
    )
    old_ring = KeyRing.parse(TEST_KEY_RING)  # credentials written before the new key existed
    app, api_key = f"Rot{uuid.uuid4().hex[:8]}", f"gs-{uuid.uuid4().hex}"
    agent, callback_key = await AgentRepository(stack.store, old_ring).create(
        org_id=org["org_id"],
        name="Rita",
        number=f"+659{uuid.uuid4().int % 8_000_000 + 1_000_000:07d}",
        gupshup_app=app,
        gupshup_api_key=api_key,
    )
    callback_url = f"{stack.ingress_url}/v1/webhooks/gupshup/{callback_key}"
    await stack.control(
        "POST",
        "/sandbox/v1/apps",
        {
            "app": app,
            "api_key": api_key,
            "number": wa_id(agent.number),
            "callback_url": callback_url,
        },
    )
    onboarded = OnboardedAgent(None, agent, app, api_key, callback_url, org["api_key"])  # type: ignore[arg-type]
    lead, first = await greeted_lead(stack, onboarded)

    result = subprocess.run(  # the operator's command, with the ring the services also hold
        [sys.executable, "-m", "cli", "keys", "rotate"],
        env=stack_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["active_key"] == "test-2" and summary["credentials"] >= 1

    stored = await stack.store.db["agents"].find_one({"_id": agent.id})
    assert stored is not None and stored["credentials"]["gupshup_api_key"]["kid"] == "test-2"
    await answered_again(stack, onboarded, lead, first, "Buying in Bedok, 900k")
