"""Leads without phone numbers, end to end: a username hides the number, WhatsApp names the
lead by business-scoped user ID (BSUID), and the product answers, remembers and merges."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead


def new_user_id() -> str:
    """A fresh Singapore BSUID as WhatsApp writes it."""
    return f"SG.{uuid.uuid4().int % 10**18:018d}"


async def says(
    stack: Stack,
    agent: OnboardedAgent,
    text: str,
    *,
    user_id: str | None = None,
    number: str | None = None,
    username: str | None = "@rach.homes",
    referral: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A lead's message through the sandbox, named by BSUID, number or both."""
    body: dict[str, Any] = {"app": agent.app, "name": "Rachel", "text": text}
    if referral:
        body["referral"] = referral
    if user_id:
        body["user_id"] = user_id
        if username:
            body["username"] = username
    if number:
        body["from"] = number
    answer: dict[str, Any] = await stack.control("POST", "/sandbox/v1/inbound", body)
    assert answer["callback_status"] == 200, answer
    await eventually(  # stored: what follows sees the message and what it changed
        lambda: stack.store.db["messages"].find_one(
            {"agent_id": agent.agent.id, "provider_message_id": answer["message_id"]}
        ),
        lambda m: m is not None,
    )
    return answer


async def sent_to(stack: Stack, agent: OnboardedAgent, address: str, at_least: int) -> list[Any]:
    """What the sandbox accepted for `address` (a number or a BSUID), once there is at least
    that much and every reply of the agent's has gone out whole."""
    db = stack.store.db

    async def unfinished() -> int:
        answered = await db["messages"].count_documents(
            {"agent_id": agent.agent.id, "direction": "in", "answered": False}
        )
        open_replies = await db["replies"].count_documents(
            {"org_id": agent.org.id, "outbound_done": {"$ne": True}}
        )
        return answered + open_replies

    await eventually(unfinished, lambda n: n == 0)
    return await eventually(lambda: stack.sent_to(agent, address), lambda s: len(s) >= at_least)


async def lead_of(stack: Stack, agent: OnboardedAgent) -> dict[str, Any]:
    """The lead of the agent's only thread."""
    thread = await eventually(
        lambda: stack.store.db["threads"].find_one({"agent_id": agent.agent.id}),
        lambda t: t is not None,
    )
    lead = await stack.store.db["leads"].find_one({"_id": thread["lead_id"]})
    assert lead is not None
    return lead


async def bsuid_agent(stack: Stack, fmt: str = "v2", **kwargs: Any) -> OnboardedAgent:
    agent = await stack.onboard(fmt=fmt, **kwargs)
    await stack.register_app(
        agent.app,
        agent.api_key,
        agent.digits,
        str(agent.agent.gupshup_app_id),
        agent.callback_url,
        fmt,
        bsuid=True,
    )
    return agent


AD = {
    "source_url": "https://fb.me/3AbCdEfGh",
    "source_id": "120211234567890123",
    "source_type": "ad",
    "headline": "New 3-bedroom condos in Tampines",
    "body": "Book a free consultation on WhatsApp",
    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
}


@pytest.mark.parametrize("fmt", ["v2", "v3"])
async def test_a_username_only_lead_from_an_ad_is_answered_at_its_user_id_and_attributed(
    stack: Stack, fmt: str
) -> None:
    agent = await bsuid_agent(stack, fmt)
    user_id = new_user_id()

    await says(stack, agent, "Hi, any 3-bedroom condo in Tampines?", user_id=user_id, referral=AD)
    first = await sent_to(stack, agent, user_id, 1)
    assert all(m["destination"] == user_id for m in first)

    lead = await lead_of(stack, agent)
    assert "phone" not in lead
    assert [u["user_id"] for u in lead["user_ids"]] == [user_id]
    assert [u["username"] for u in lead["usernames"]] == ["@rach.homes"]
    assert lead["first_touch"]["source"] == "ad"
    assert lead["first_touch"]["referral"]["source_id"] == AD["source_id"]
    thread = await stack.store.db["threads"].find_one({"agent_id": agent.agent.id})
    assert thread is not None and thread["source"]["source"] == "ad"

    await says(stack, agent, "Budget around 1.5m", user_id=user_id)
    await sent_to(stack, agent, user_id, len(first) + 1)
    assert await stack.store.db["threads"].count_documents({"agent_id": agent.agent.id}) == 1
    assert (
        await stack.store.db["messages"].count_documents(
            {"agent_id": agent.agent.id, "direction": "in"}
        )
        == 2
    )


async def test_a_username_only_lead_who_says_stop_gets_one_confirmation_then_silence(
    stack: Stack,
) -> None:
    agent = await bsuid_agent(stack)
    user_id = new_user_id()
    await says(stack, agent, "Hi, looking at condos", user_id=user_id)
    greeted = await sent_to(stack, agent, user_id, 1)

    await says(stack, agent, "STOP", user_id=user_id)
    confirmed = await sent_to(stack, agent, user_id, len(greeted) + 1)
    assert "START" in confirmed[-1]["text"]

    await says(stack, agent, "what about Bedok?", user_id=user_id)
    await eventually(
        lambda: stack.store.db["messages"].count_documents(
            {"agent_id": agent.agent.id, "direction": "in", "answered": True}
        ),
        lambda n: n >= 3,
    )
    await asyncio.sleep(1)
    assert len(await stack.sent_to(agent, user_id)) == len(confirmed)


async def test_a_number_revealed_later_makes_one_lead_of_two_agents_threads(
    stack: Stack,
) -> None:
    agent = await bsuid_agent(stack)
    colleague = await stack.onboard(agent.org, org_key=agent.org_key)
    number, user_id = new_lead(), new_user_id()
    # The person wrote to the colleague by number, then to the agent by username only.
    await stack.lead_says(colleague, number, "Hi Jason, selling my HDB")
    await sent_to(stack, colleague, number, 1)
    await says(stack, agent, "Hi, any condo in Bishan?", user_id=user_id)
    before = await sent_to(stack, agent, user_id, 1)
    assert (await lead_of(stack, agent))["_id"] != (await lead_of(stack, colleague))["_id"]

    # WhatsApp shares the number with a later message (the contact book knows it now).
    await says(stack, agent, "Budget 1.8m", user_id=user_id, number=number)
    await sent_to(stack, agent, number, 1)

    merged = await lead_of(stack, agent)
    assert merged["_id"] == (await lead_of(stack, colleague))["_id"]
    assert merged["phone"] == "+" + number
    assert [u["user_id"] for u in merged["user_ids"]] == [user_id]
    assert (
        await stack.store.db["messages"].count_documents(
            {"org_id": agent.org.id, "direction": "in", "lead_id": merged["_id"]}
        )
        == 3
    ), "nothing lost"
    sent = await stack.sent_to(agent, user_id)  # the sandbox lists both of the lead's addresses
    assert [m["destination"] for m in sent[: len(before)]] == [user_id] * len(before)
    assert {m["destination"] for m in sent[len(before) :]} == {number}, "the number wins"
    assert [m["messageId"] for m in sent[: len(before)]] == [m["messageId"] for m in before]


async def test_a_user_id_lead_is_one_lead_within_a_portfolio_and_two_across_portfolios(
    stack: Stack,
) -> None:
    agent = await bsuid_agent(stack)
    same = await bsuid_agent(stack, org=agent.org, org_key=agent.org_key)
    other = await bsuid_agent(stack, org=agent.org, org_key=agent.org_key)
    for onboarded, portfolio in ((agent, "bp_lim"), (same, "bp_lim"), (other, "bp_tan")):
        await stack.store.db["agents"].update_one(
            {"_id": onboarded.agent.id}, {"$set": {"business_portfolio_id": portfolio}}
        )
    user_id = new_user_id()
    for onboarded in (agent, same, other):
        await says(stack, onboarded, "Hi, any condo in Bishan?", user_id=user_id)
        await sent_to(stack, onboarded, user_id, 1)

    assert (await lead_of(stack, agent))["_id"] == (await lead_of(stack, same))["_id"]
    assert (await lead_of(stack, agent))["_id"] != (await lead_of(stack, other))["_id"]


async def test_a_lead_without_a_number_is_asked_once_with_the_booking_and_sharing_it_joins_it(
    stack: Stack,
) -> None:
    agent = await bsuid_agent(stack)
    user_id, number = new_user_id(), new_lead()
    said = 0
    for text in (
        "Hi, I'm looking to buy my first home for my family",
        "Around 1.2m, in Tampines",
        "3 bedrooms, we'd like to move within 6 months",
    ):
        await says(stack, agent, text, user_id=user_id)
        said = len(await sent_to(stack, agent, user_id, said + 1))
    assert not any(m["type"] == "request_contact_info" for m in await stack.sent_to(agent, user_id))

    await says(stack, agent, "The second one please", user_id=user_id)
    booked = (await sent_to(stack, agent, user_id, said + 1))[said:]
    assert any("booked with Jason Tan" in (m.get("text") or "") for m in booked), booked
    asks = [m for m in booked if m["type"] == "request_contact_info"]
    assert len(asks) == 1 and "Only if you'd like to" in asks[0]["text"]

    # The lead taps the button and shares their number.
    answer = await stack.control(
        "POST",
        "/sandbox/v1/inbound",
        {"app": agent.app, "user_id": user_id, "share_number": number},
    )
    assert answer["callback_status"] == 200
    lead = await eventually(lambda: lead_of(stack, agent), lambda lead: "phone" in lead)
    assert lead["phone"] == "+" + number
    assert lead["phone_shared"]["how"] == "shared-contact" and lead["phone_shared"]["purpose"]

    # Moving the booking later does not ask again: once per lead and agent.
    await says(stack, agent, "Can we move it to another day?", user_id=user_id)
    await eventually(
        lambda: stack.store.db["messages"].count_documents(
            {"agent_id": agent.agent.id, "direction": "in", "answered": False}
        ),
        lambda n: n == 0,
    )
    everything = await stack.sent_to(agent, user_id)
    assert len([m for m in everything if m["type"] == "request_contact_info"]) == 1


async def test_onboarding_turns_the_apps_user_id_flags_on_so_no_first_message_is_parked(
    stack: Stack,
) -> None:
    agent = await stack.onboard()  # the stack has Partner credentials
    read = await stack.admin("GET", f"/v1/agents/{agent.agent.id}", agent.org_key)
    assert (read["bsuid_enabled"], read["bsuid_reason"]) == (True, None), read

    user_id = new_user_id()
    answer = await says(stack, agent, "Hi, saw your ad", user_id=user_id)
    assert not answer.get("parked")
    assert (await sent_to(stack, agent, user_id, 1))[0]["destination"] == user_id
