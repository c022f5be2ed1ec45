"""The Anthropic engine against a local fake of the Messages API, through the real SDK.

One forced tool call per layer, the thread's own data and nothing else in the prompts, a
typed result or an EngineFailure with a reason, and every call counted with its tokens.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import aiohttp
import pytest
from prometheus_client import REGISTRY

from services.brain.engines.anthropic_engine import (
    COMPOSE_TOOL,
    UNDERSTAND_TOOL,
    AnthropicEngine,
    CallUsage,
    EngineFailure,
)
from services.brain.reply.model import (
    AppointmentView,
    Context,
    Decision,
    Intent,
    LeadMessage,
    ListingCard,
    Profile,
    Recall,
    Request,
    SlotOption,
    Turn,
)
from shared.repositories.agents import Persona
from tests.conftest import make_settings
from tests.fakes.anthropic_api import (
    ApiError,
    Delay,
    FakeAnthropic,
    Outcome,
    Refusal,
    TextAnswer,
    ToolAnswer,
)

MODEL = "claude-test-model-7"
NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # Thu 26 Nov, 11:00 am in Singapore
PERSONA = Persona(
    bot_name="Mia",
    tone="professional",
    language="en",
    greeting="Good day! I'm Mia, assisting Jason Tan of Tan Homes.",
    signature="— Mia, for Jason Tan",
    instructions="Always mention that viewings are free of charge.",
)
SLOTS = [
    SlotOption(
        start=datetime(2026, 11, 28, 7, 0, tzinfo=UTC),
        end=datetime(2026, 11, 28, 7, 30, tzinfo=UTC),
        label="Sat 28 Nov, 3:00 pm",
    ),
    SlotOption(
        start=datetime(2026, 11, 30, 2, 0, tzinfo=UTC),
        end=datetime(2026, 11, 30, 2, 30, tzinfo=UTC),
        label="Mon 30 Nov, 10:00 am",
    ),
]
UNDERSTOOD = {
    "facts": {
        "name": "Rachel",
        "intent": "own_stay",
        "budget": 1500000,
        "area": "Tampines",
        "property_type": "condo",
        "bedrooms": 3,
        "timeline": None,
    },
    "requests": ["book", "price", "book"],
    "sentiment": "positive",
    "resistant": False,
    "urgency": "high",
    "when": {
        "start": "2026-11-28T15:00:00+08:00",
        "end": "2026-11-28T15:00:00+08:00",
        "exact": True,
    },
    "picked_slot_number": 1,
    "district": "district 18",
    "language": None,
}
REPLY = {"bubbles": ["Good day Rachel! Saturday 3:00 pm is booked with Jason.", "See you then."]}


def context(
    *,
    org_id: str = "org-tan",
    thread_id: str = "thr-rachel",
    agent_name: str = "Jason Tan",
    persona: Persona = PERSONA,
    texts: tuple[str, ...] = ("Hi, 3 bedder condo in Tampines, budget 1.5m", "Sat 3pm works"),
    history: tuple[tuple[str, str], ...] = (),
    offered: list[SlotOption] | None = None,
    colleague_threads: list[dict[str, Any]] | None = None,
    extra_messages: tuple[LeadMessage, ...] = (),
) -> Context:
    """One thread's context; the messages a minute apart, the history before them."""
    new = [
        LeadMessage(type="text", text=text, at=NOW - timedelta(minutes=len(texts) - n))
        for n, text in enumerate(texts)
    ]
    turns = [
        Turn(who=who, text=text, at=NOW - timedelta(hours=len(history) - n))  # type: ignore[arg-type]
        for n, (who, text) in enumerate(history)
    ]
    return Context(
        org_id=org_id,
        agent_id=f"{org_id}-agent",
        thread_id=thread_id,
        lead_id=f"{thread_id}-lead",
        agent_name=agent_name,
        persona=persona,
        timezone="Asia/Singapore",
        now=NOW,
        stage="booking",
        profile=Profile(name="Rachel", intent="own_stay"),
        new_messages=[*new, *extra_messages],
        history=turns,
        offered=SLOTS if offered is None else offered,
        colleague_threads=colleague_threads or [],
    )


def recall(appointment: AppointmentView | None = None) -> Recall:
    return Recall(
        profile=Profile(name="Rachel", intent="own_stay", budget=1_500_000), appointment=appointment
    )


def decision() -> Decision:
    return Decision(
        action="offer_slots",
        stage="booking",
        listings=[
            ListingCard(
                listing_id="lst-1",
                project="Treasure at Tampines",
                district="D18",
                property_type="condo",
                bedrooms=3,
                price=1_480_000,
                size_sqft=1_076,
                tenure="99-year leasehold",
            )
        ],
        slots=SLOTS,
    )


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as running:
        running.on_tool(UNDERSTAND_TOOL, UNDERSTOOD)
        running.on_tool(COMPOSE_TOOL, REPLY)
        yield running


@pytest.fixture
async def engine(fake: FakeAnthropic) -> AsyncIterator[AnthropicEngine]:
    settings = make_settings(
        anthropic_api_key=fake.api_key, anthropic_base_url=fake.base_url, anthropic_model=MODEL
    )
    running = AnthropicEngine.from_settings(settings, timeout_seconds=2.0)
    yield running
    await running.close()


async def test_understand_reads_facts_requests_time_and_picked_slot(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    photo = LeadMessage(type="image", media_kind="image", caption="my floor plan", at=NOW)
    understanding = await engine.understand(context(extra_messages=(photo,)))

    assert understanding.facts == Profile(
        name="Rachel",
        intent="own_stay",
        budget=1_500_000,
        area="Tampines",
        property_type="condo",
        bedrooms=3,
    )
    assert understanding.requests == ["book", "price"]
    assert (understanding.sentiment, understanding.urgency) == ("positive", "high")
    assert understanding.when is not None
    assert understanding.when.start == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    assert understanding.when.end == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    assert understanding.when.exact
    assert understanding.picked_slot == 0  # the first slot offered
    assert understanding.district == "D18"
    assert understanding.media == ["image"]
    assert len(fake.requests) == 1
    body = fake.requests[0].body
    assert body["model"] == MODEL
    assert body["tool_choice"] == {"type": "tool", "name": UNDERSTAND_TOOL}
    assert [tool["name"] for tool in body["tools"]] == [UNDERSTAND_TOOL]
    schema = body["tools"][0]["input_schema"]["properties"]
    assert schema["requests"]["items"]["enum"] == list(get_args(Request))
    assert schema["facts"]["properties"]["intent"]["anyOf"][0]["enum"] == list(get_args(Intent))
    assert "1. Sat 28 Nov, 3:00 pm" in fake.requests[0].user_text


async def test_understand_without_a_named_time_or_slot(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    fake.push(ToolAnswer({"facts": {}, "requests": ["greeting"], "sentiment": "neutral"}))
    understanding = await engine.understand(context(offered=[]))
    assert understanding.requests == ["greeting"]
    assert understanding.when is None
    assert understanding.picked_slot is None
    assert understanding.facts == Profile()


async def test_compose_returns_the_models_bubbles_in_one_call(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    fake.push(ToolAnswer({"bubbles": ["  Good day Rachel!  ", "", "Which time suits you?"]}))
    appointment = AppointmentView(
        appointment_id="apt-1",
        start=SLOTS[1].start,
        end=SLOTS[1].end,
        label="Mon 30 Nov, 10:00 am",
    )
    draft = await engine.compose(context(), recall(appointment), decision())

    assert draft.bubbles == ["Good day Rachel!", "Which time suits you?"]
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request.body["model"] == MODEL
    assert request.body["tool_choice"] == {"type": "tool", "name": COMPOSE_TOOL}
    bubbles = request.body["tools"][0]["input_schema"]["properties"]["bubbles"]
    assert (bubbles["minItems"], bubbles["maxItems"]) == (1, 3)
    prompt = request.user_text
    assert "Treasure at Tampines, D18, condo, 3 bedrooms, SGD 1,480,000" in prompt
    assert "1. Sat 28 Nov, 3:00 pm" in prompt and "2. Mon 30 Nov, 10:00 am" in prompt
    assert "Action: offer_slots" in prompt
    assert "Appointment on record with Jason Tan: Mon 30 Nov, 10:00 am" in prompt
    assert "budget SGD 1,500,000" in prompt  # the recalled profile


async def test_a_reply_takes_two_calls_one_per_layer(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    thread = context()
    await engine.understand(thread)
    draft = await engine.compose(thread, recall(), decision())
    assert draft.bubbles == REPLY["bubbles"]
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL]


async def test_requests_carry_the_persona_history_and_new_messages_in_order(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    history = (
        ("lead", "Hello, saw your ad for Tampines condos"),
        ("bot", "Good day! I'm Mia. Are you buying to live in or to invest?"),
        ("agent", "Hi Rachel, Jason here, Mia will help you book"),
    )
    where = LeadMessage(
        type="location", place="Tampines Ave 5", latitude=1.3533, longitude=103.9452, at=NOW
    )
    thread = context(history=history, extra_messages=(where,))
    await engine.understand(thread)
    await engine.compose(thread, recall(), decision())

    for request in fake.requests:
        assert request.headers["anthropic-version"]
        assert request.headers.get("x-api-key") == fake.api_key or request.headers.get(
            "authorization"
        ) == (f"Bearer {fake.api_key}")
        system = request.system_text
        assert "You are Mia, the WhatsApp assistant of Jason Tan" in system
        assert "courteous and professional" in system
        assert "— Mia, for Jason Tan" in system
        assert "Always mention that viewings are free of charge." in system
        assert "Good day! I'm Mia, assisting Jason Tan of Tan Homes." in system
        assert request.body["system"][0]["cache_control"] == {"type": "ephemeral"}
        prompt = request.user_text
        positions = [
            prompt.index(json.dumps(text, ensure_ascii=False))
            for text in (
                "Hello, saw your ad for Tampines condos",
                "Good day! I'm Mia. Are you buying to live in or to invest?",
                "Hi Rachel, Jason here, Mia will help you book",
                "Hi, 3 bedder condo in Tampines, budget 1.5m",
                "Sat 3pm works",
            )
        ]
        assert positions == sorted(positions)
        assert "lead: " in prompt and "bot: " in prompt and "agent: " in prompt
        assert 'shared a location: "Tampines Ave 5" (lat 1.35330, lng 103.94520)' in prompt
    # The system prompt is the agent's alone: the same for both layers, so it can be cached.
    assert fake.requests[0].system_text == fake.requests[1].system_text


async def test_prompts_carry_no_data_of_another_lead_or_organization(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    canary = "CANARY-7f3a9c"
    other = context(
        org_id="org-other-agency",
        thread_id="thr-other",
        agent_name=f"Other Agent {canary}",
        persona=Persona(bot_name="Zed", instructions=f"Secret pricing {canary}"),
        texts=(f"My NRIC is {canary}", "call me"),
        history=(("lead", f"my address {canary}"),),
    )
    # A colleague thread of the same organization: only its metadata may reach the prompt.
    colleague = {
        "agent_id": "org-tan-agent-2",
        "agent_name": "Mary Lim",
        "stage": "qualifying",
        "state": "bot",
        "appointment_booked": False,
        "summary": f"colleague summary {canary}",
        "last_text": f"colleague message {canary}",
    }
    mine = context(texts=("MINE-1: hello", "MINE-2: budget 1.5m"), colleague_threads=[colleague])

    # The other lead is served first, then both at once, through the same engine and client.
    await engine.understand(other)
    await engine.compose(other, recall(), decision())
    await asyncio.gather(
        engine.understand(mine),
        engine.understand(other),
        engine.compose(mine, recall(), decision()),
        engine.compose(other, recall(), decision()),
    )
    await engine.compose(mine, recall(), decision())

    my_requests = [r for r in fake.requests if "MINE-1: hello" in r.raw]
    other_requests = [r for r in fake.requests if "My NRIC is" in r.raw]
    assert len(my_requests) == 3 and len(other_requests) == 4
    assert all(canary in r.raw for r in other_requests)  # the canary was really sent
    for request in my_requests:
        assert canary not in request.raw
        assert "org-other-agency" not in request.raw and "Zed" not in request.raw
    compose_prompt = my_requests[-1].user_text
    assert '"Mary Lim"' in compose_prompt and "qualifying" in compose_prompt


@pytest.mark.parametrize(
    ("layer", "outcome", "reason"),
    [
        ("compose", ApiError(500), "api_error"),
        ("compose", ApiError(529), "overloaded"),
        ("understand", ApiError(529), "overloaded"),
        ("compose", ApiError(429), "rate_limited"),
        ("compose", ApiError(400), "bad_request"),
        ("compose", ToolAnswer({"bubbles": "Hi there"}), "invalid_output"),
        ("compose", ToolAnswer({"bubbles": []}), "invalid_output"),
        ("compose", ToolAnswer({"bubbles": ["a", "b", "c", "d"]}), "invalid_output"),
        ("compose", ToolAnswer({"bubbles": ["   "]}), "invalid_output"),
        ("compose", ToolAnswer({"text": "Hi there"}), "invalid_output"),
        ("compose", ToolAnswer(REPLY, name="other_tool"), "invalid_output"),
        ("compose", ToolAnswer(REPLY, stop_reason="max_tokens"), "invalid_output"),
        ("compose", TextAnswer("Hi Rachel! Which area do you like?"), "invalid_output"),
        ("understand", TextAnswer(), "invalid_output"),
        ("understand", ToolAnswer({**UNDERSTOOD, "requests": ["buy_now"]}), "invalid_output"),
        ("understand", ToolAnswer({**UNDERSTOOD, "picked_slot_number": 3}), "invalid_output"),
        ("understand", ToolAnswer({**UNDERSTOOD, "when": {"start": "soon"}}), "invalid_output"),
        ("understand", ToolAnswer({**UNDERSTOOD, "district": "Mars"}), "invalid_output"),
        ("compose", Refusal(), "refusal"),
        ("understand", Refusal("I can't help with that."), "refusal"),
    ],
)
async def test_a_fault_raises_engine_failure_with_its_reason_after_one_call(
    fake: FakeAnthropic, engine: AnthropicEngine, layer: str, outcome: Outcome, reason: str
) -> None:
    before = sample("realtybot_llm_calls_total", {"layer": layer, "outcome": reason})
    fake.push(outcome)
    with pytest.raises(EngineFailure) as failure:
        if layer == "understand":
            await engine.understand(context())
        else:
            await engine.compose(context(), recall(), decision())
    assert failure.value.reason == reason
    assert len(fake.requests) == 1  # never retried: the pipeline falls back instead
    assert sample("realtybot_llm_calls_total", {"layer": layer, "outcome": reason}) == before + 1


async def test_a_wrong_api_key_is_an_auth_failure(fake: FakeAnthropic) -> None:
    engine = AnthropicEngine(api_key="sk-ant-wrong", model=MODEL, base_url=fake.base_url)
    try:
        with pytest.raises(EngineFailure) as failure:
            await engine.understand(context())
    finally:
        await engine.close()
    assert failure.value.reason == "auth"
    assert len(fake.requests) == 1


async def test_an_unreachable_api_is_a_connection_failure() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = AnthropicEngine(api_key="k", model=MODEL, base_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(EngineFailure) as failure:
            await engine.compose(context(), recall(), decision())
    finally:
        await engine.close()
    assert failure.value.reason == "connection"


@pytest.mark.parametrize("layer", ["understand", "compose"])
async def test_a_slow_answer_times_out_within_the_timeout(fake: FakeAnthropic, layer: str) -> None:
    engine = AnthropicEngine(
        api_key=fake.api_key, model=MODEL, base_url=fake.base_url, timeout_seconds=0.5
    )
    before = sample("realtybot_llm_calls_total", {"layer": layer, "outcome": "timeout"})
    fake.push(Delay(5.0))
    started = time.monotonic()
    try:
        with pytest.raises(EngineFailure) as failure:
            if layer == "understand":
                await engine.understand(context())
            else:
                await engine.compose(context(), recall(), decision())
    finally:
        await engine.close()
    elapsed = time.monotonic() - started
    assert failure.value.reason == "timeout"
    assert 0.45 <= elapsed < 0.5 + 0.4
    assert len(fake.requests) == 1
    assert sample("realtybot_llm_calls_total", {"layer": layer, "outcome": "timeout"}) == before + 1


async def test_a_slow_answer_within_the_timeout_is_used(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    fake.push(Delay(0.3))  # then the scripted reply
    draft = await engine.compose(context(), recall(), decision())
    assert draft.bubbles == REPLY["bubbles"]


async def test_a_call_cancelled_by_the_pipeline_is_counted(
    fake: FakeAnthropic, engine: AnthropicEngine
) -> None:
    before = sample("realtybot_llm_calls_total", {"layer": "compose", "outcome": "cancelled"})
    fake.push(Delay(5.0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(engine.compose(context(), recall(), decision()), 0.2)
    after = sample("realtybot_llm_calls_total", {"layer": "compose", "outcome": "cancelled"})
    assert after == before + 1


async def test_tokens_and_call_metrics_are_recorded(fake: FakeAnthropic) -> None:
    seen: list[CallUsage] = []
    engine = AnthropicEngine(
        api_key=fake.api_key, model=MODEL, base_url=fake.base_url, on_usage=seen.append
    )
    labels = {"layer": "compose"}
    tokens_in = sample("realtybot_llm_tokens_total", {**labels, "kind": "input"})
    tokens_out = sample("realtybot_llm_tokens_total", {**labels, "kind": "output"})
    calls_ok = sample("realtybot_llm_calls_total", {**labels, "outcome": "ok"})
    timed = sample("realtybot_llm_call_seconds_count", labels)
    fake.push(ToolAnswer(REPLY, input_tokens=812, output_tokens=57))
    try:
        await engine.compose(context(), recall(), decision())
        fake.push(Refusal())  # tokens spent on a refusal are counted too
        with pytest.raises(EngineFailure):
            await engine.compose(context(), recall(), decision())
    finally:
        await engine.close()

    refusal_usage = fake.responses[1]["usage"]
    assert [(u.input_tokens, u.output_tokens, u.outcome) for u in engine.last_usage] == [
        (812, 57, "ok"),
        (refusal_usage["input_tokens"], refusal_usage["output_tokens"], "refusal"),
    ]
    assert seen == list(engine.last_usage)
    assert seen[0].thread_id == "thr-rachel" and seen[0].model == MODEL
    assert sample("realtybot_llm_tokens_total", {**labels, "kind": "input"}) == (
        tokens_in + 812 + refusal_usage["input_tokens"]
    )
    assert sample("realtybot_llm_tokens_total", {**labels, "kind": "output"}) == (
        tokens_out + 57 + refusal_usage["output_tokens"]
    )
    assert sample("realtybot_llm_calls_total", {**labels, "outcome": "ok"}) == calls_ok + 1
    assert sample("realtybot_llm_call_seconds_count", labels) == timed + 2


def test_from_settings_needs_an_api_key() -> None:
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicEngine.from_settings(make_settings(anthropic_api_key=None))


async def test_the_fake_speaks_anthropics_wire_format(fake: FakeAnthropic) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"name": COMPOSE_TOOL, "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": COMPOSE_TOOL},
    }
    url = f"{fake.base_url}/v1/messages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"x-api-key": fake.api_key}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        headers = {"x-api-key": fake.api_key, "anthropic-version": "2023-06-01"}
        async with http.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            message = await response.json()
        async with http.post(url, json=body, headers={"anthropic-version": "2023-06-01"}) as bad:
            assert bad.status == 401
            assert await bad.json() == {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    assert message["content"][0]["name"] == COMPOSE_TOOL
    assert message["content"][0]["input"] == REPLY
    assert len(fake.requests) == 3 and fake.requests[1].body == body
