"""End to end on the Anthropic engine: the five services as processes, the model a local fake.

A stack of its own, started with ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL and ANTHROPIC_MODEL
pointing the brain at a fake Messages API served by this test process; a lead writes through
the Gupshup sandbox and receives what the model wrote, two model calls per reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.brain.engines.anthropic_engine import COMPOSE_TOOL, UNDERSTAND_TOOL
from tests.e2e.conftest import Stack, anthropic_env, running_stack
from tests.e2e.test_pipeline import new_lead, settled_reply
from tests.fakes.anthropic_api import FakeAnthropic, RecordedRequest

MODEL = "claude-e2e-test-model"
UNDERSTOOD: dict[str, Any] = {
    "facts": {"property_type": "condo", "bedrooms": 3, "area": "Pasir Ris"},
    "requests": [],
    "sentiment": "positive",
    "resistant": False,
    "urgency": "normal",
}
# Sentences the offline engine's templates can never produce, one reply after the other.
MODEL_REPLIES = [
    [
        "Hello Rachel, Mia here: the kingfishers of Pasir Ris Park would be your neighbours.",
        "What budget do you have in mind?",
    ],
    ["Several good schools are a short walk from the park, the herons included."],
]


@pytest.fixture(scope="module")
async def anthropic_stack(
    fake_anthropic: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    env = {**anthropic_env(fake_anthropic), "ANTHROPIC_MODEL": MODEL}
    async with running_stack(tmp_path_factory.mktemp("anthropic-stack-logs"), env) as stack:
        yield stack


async def test_lead_gets_the_models_replies_in_two_calls_each(
    anthropic_stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    stack, fake = anthropic_stack, fake_anthropic

    def compose(request: RecordedRequest) -> dict[str, Any]:
        turn = len(fake.requests_for(COMPOSE_TOOL)) - 1
        return {"bubbles": MODEL_REPLIES[turn]}

    fake.on_tool(UNDERSTAND_TOOL, UNDERSTOOD)
    fake.on_tool(COMPOSE_TOOL, compose)
    agent = await stack.onboard(bot_name="Mia")
    lead = new_lead()
    first_text = "Hi, I'm after a 3-bedroom condo near Pasir Ris Park"

    await stack.lead_says(agent, lead, first_text)
    first = await settled_reply(stack, agent, lead)

    assert [m["text"] for m in first] == MODEL_REPLIES[0]
    assert [m["source"] for m in first] == [agent.digits] * len(first)
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL]

    second_text = "And schools nearby?"
    await stack.lead_says(agent, lead, second_text)
    sent = await settled_reply(stack, agent, lead, expected_at_least=len(first) + 1)
    await asyncio.sleep(0.5)  # room for a stray third call, which must not come

    assert [m["text"] for m in sent[len(first) :]] == MODEL_REPLIES[1]
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL] * 2
    assert fake.unscripted == []
    for request in fake.requests:
        assert request.body["model"] == MODEL
        credentials = {request.headers.get("x-api-key"), request.headers.get("authorization")}
        assert credentials & {fake.api_key, f"Bearer {fake.api_key}"}, request.headers
        assert "You are Mia, the WhatsApp assistant of Jason Tan" in request.system_text
    for request in fake.requests[2:]:
        # The second reply's prompts hold the first exchange as history, the model's own
        # bubbles included, then the lead's new message.
        user = request.user_text
        history = user.index("Conversation so far")
        new = user.index("The lead's new messages")
        assert history < user.index(first_text) < new
        assert all(history < user.index(bubble) < new for bubble in MODEL_REPLIES[0])
        assert user.index(second_text) > new
    replies = await stack.store.db["replies"].find({"org_id": agent.org.id}).to_list()
    assert sorted(r["engine"] for r in replies) == ["anthropic", "anthropic"]
