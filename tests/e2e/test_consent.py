"""Consent end to end: the lead's own words and Gupshup's events, per organization."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply


async def nothing_more(stack: Stack, agent: OnboardedAgent, lead: str, count: int) -> None:
    """Nothing beyond `count` messages reaches the lead for a while."""
    await asyncio.sleep(2.0)
    assert len(await stack.sent_to(agent, lead)) == count


async def wait_stored(stack: Stack, agent: OnboardedAgent, count: int) -> None:
    messages = stack.store.db["messages"]
    await eventually(
        lambda: messages.count_documents({"agent_id": agent.agent.id, "direction": "in"}),
        lambda n: n >= count,
    )


async def test_stop_gets_one_confirmation_then_silence_across_the_agency_until_start(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    colleague = await stack.onboard(agent.org, org_key=agent.org_key)
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi, any condo in Bishan?")
    greeted = await settled_reply(stack, agent, lead)

    await stack.lead_says(agent, lead, "STOP")
    confirmed = await settled_reply(stack, agent, lead, expected_at_least=len(greeted) + 1)
    assert len(confirmed) == len(greeted) + 1
    assert "START" in confirmed[-1]["text"]

    await stack.lead_says(agent, lead, "stop")  # again: no second confirmation
    await stack.lead_says(agent, lead, "Actually what about Toa Payoh?")
    await wait_stored(stack, agent, 4)
    await nothing_more(stack, agent, lead, len(confirmed))

    # The opt-out holds for every agent of the organization, the bot and humans alike.
    await stack.lead_says(colleague, lead, "hello?")
    await wait_stored(stack, colleague, 1)
    await nothing_more(stack, colleague, lead, 0)

    await stack.lead_says(agent, lead, "START")
    resumed = await settled_reply(stack, agent, lead, expected_at_least=len(confirmed) + 1)
    assert len(resumed) > len(confirmed)
    consent = await stack.store.db["consents"].find_one({"org_id": agent.org.id})
    assert consent is not None and consent["opted_out"] is False
    assert consent["how"] == "lead-message"


async def test_gupshup_opt_out_event_silences_the_agency_without_a_confirmation(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hello")
    greeted = await settled_reply(stack, agent, lead)
    await stack.control(
        "POST",
        "/sandbox/v1/events",
        {
            "app": agent.app,
            "body": {
                "app": agent.app,
                "timestamp": 1764050090000,
                "version": 2,
                "type": "user-event",
                "payload": {"phone": lead, "type": "opted-out"},
            },
        },
    )
    consents = stack.store.db["consents"]
    await eventually(
        lambda: consents.find_one({"org_id": agent.org.id}),
        lambda c: c is not None and c["opted_out"] is True,
    )

    await stack.lead_says(agent, lead, "Any new launches?")
    await wait_stored(stack, agent, 2)
    await nothing_more(stack, agent, lead, len(greeted))


async def test_everyday_sentences_are_not_opt_outs(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi")
    greeted = await settled_reply(stack, agent, lead)
    await stack.lead_says(agent, lead, "Don't stop sending me listings! I'm not free Saturday")
    after = await settled_reply(stack, agent, lead, expected_at_least=len(greeted) + 1)
    assert len(after) == len(greeted) + 1 and "START" not in after[-1]["text"]
    assert await stack.store.db["consents"].find_one({"org_id": agent.org.id}) is None
