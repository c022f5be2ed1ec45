"""Brain with the Anthropic engine, against a local fake of the Messages API.

The reply a lead gets is the model's, made with two calls whose prompts carry the agent's
persona and this thread's history and nothing of another lead or organization. A model that
fails, times out or writes something Guard blocks is replaced by the offline engine, and the
replacement is counted. Each test also shows the offline engine did not answer when it should
not have: a silent fall-back fails these tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.brain.engines.anthropic_engine import COMPOSE_TOOL, UNDERSTAND_TOOL, AnthropicEngine
from services.brain.engines.offline import OfflineEngine
from services.brain.engines.prompts import TONES
from services.brain.reply.guard import guard
from services.brain.reply.handler import Brain
from services.brain.reply.model import Context, Decision, Draft, Recall, Understanding
from shared.broker import Broker, Subscription, Subscriptions
from shared.crypto import KeyRing
from shared.identity import WhatsAppUser
from shared.models import Bubble, InboundMessage, SendCommand, ThreadWork, utcnow
from shared.repositories.agents import Agent, AgentDirectory, AgentRepository, Persona
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.messages import MessageRepository
from shared.repositories.threads import ThreadRepository
from shared.service import Runtime
from shared.settings import Settings
from shared.store import Store
from tests.fakes.anthropic_api import (
    ApiError,
    Delay,
    FakeAnthropic,
    Outcome,
    RecordedRequest,
    ToolAnswer,
)
from tests.services.conftest import RunningService, ServiceRunner, Tenants, fetch_event

MODEL = "claude-services-test-model"
# Longer than the fake takes to answer, short enough for the timeout tests to be quick.
CALL_TIMEOUT_SECONDS = 1.0
PERSONA = Persona(
    bot_name="Marisol",
    tone="professional",
    greeting="Good day, this is Marisol from Tan Homes.",
    signature="— Marisol, for Daniel Tan",
    instructions="Viewings on Sundays are possible by arrangement with Daniel.",
)
# What the model understands: a budget nobody wrote, so only the model can be its source.
UNDERSTOOD: dict[str, Any] = {
    "facts": {"intent": "own_stay", "budget": 2_345_678, "bedrooms": 3, "area": "Pasir Ris"},
    "requests": [],
    "sentiment": "positive",
    "resistant": False,
    "urgency": "normal",
}
# Sentences the offline engine's templates can never produce.
MODEL_BUBBLES = [
    "Noted with thanks: a three-bedroom home by the Pasir Ris coast, where the kingfishers are.",
    "When would you like to move in?",
]


class RecordingOfflineEngine(OfflineEngine):
    """The offline engine, remembering every layer it answered and with what."""

    def __init__(self) -> None:
        self.understood: list[Understanding] = []
        self.composed: list[tuple[Context, Recall, Decision, Draft]] = []

    async def understand(self, context: Context) -> Understanding:
        understanding = await super().understand(context)
        self.understood.append(understanding)
        return understanding

    async def compose(self, context: Context, recall: Recall, decision: Decision) -> Draft:
        draft = await super().compose(context, recall, decision)
        self.composed.append((context, recall, decision, draft))
        return draft

    def guarded_reply(self) -> list[str]:
        """The bubbles Guard lets through of the one reply this engine composed."""
        assert len(self.composed) == 1, self.composed
        context, recall, decision, draft = self.composed[0]
        return guard(context, recall, decision, draft).bubbles


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as running:
        running.on_tool(UNDERSTAND_TOOL, UNDERSTOOD)
        running.on_tool(COMPOSE_TOOL, {"bubbles": MODEL_BUBBLES})
        yield running


@pytest.fixture
async def engine(fake: FakeAnthropic) -> AsyncIterator[AnthropicEngine]:
    running = AnthropicEngine(
        api_key=fake.api_key,
        model=MODEL,
        base_url=fake.base_url,
        timeout_seconds=CALL_TIMEOUT_SECONDS,
    )
    yield running
    await running.close()


@pytest.fixture
def offline() -> RecordingOfflineEngine:
    return RecordingOfflineEngine()


async def start_brain(
    services: ServiceRunner,
    store: Store,
    settings: Settings,
    engine: AnthropicEngine,
    offline: RecordingOfflineEngine,
) -> RunningService:
    """The brain on the Anthropic engine, its fallback engine recording what it answers."""
    agents = AgentDirectory.for_store(store, settings)

    async def setup(runtime: Runtime) -> Subscriptions:
        brain = Brain(runtime.broker, store, agents, settings, engine)
        brain.pipeline.offline = offline
        return Subscriptions(Subscription(ThreadWork, brain.handle))

    return await services.start("brain", setup)


async def new_agent(
    store: Store, settings: Settings, org_id: str, name: str, persona: Persona
) -> Agent:
    """An agent of the organization with its own number and Gupshup app."""
    suffix = uuid.uuid4().int % 1_000_000
    agent, _callback_key = await AgentRepository(store, KeyRing.from_settings(settings)).create(
        org_id=org_id,
        name=name,
        number=f"+6591{suffix:06d}",
        gupshup_app=f"App{uuid.uuid4().hex[:10]}",
        gupshup_api_key=f"gs-{uuid.uuid4().hex}",
        persona=persona,
    )
    return agent


@dataclass
class Conversation:
    """A seeded thread: its work item and what it holds."""

    work: ThreadWork
    history: list[str]  # earlier messages, both ways, oldest first
    new: list[str]  # the lead's unanswered messages


async def seed_conversation(
    store: Store,
    agent: Agent,
    *,
    phone: str,
    lead_name: str,
    history: list[tuple[str, str]],
    new: list[str],
) -> Conversation:
    """A thread with earlier messages (("in" | "out", text), answered) and new unanswered ones.

    Stored as dedup and the reply outbox store them, through the repositories.
    """
    messages = MessageRepository(store)
    threads = ThreadRepository(store)
    now = utcnow()
    start = now - timedelta(hours=2)
    source = {"source": "organic"}
    lead, _ = await LeadRepository(store).resolve(
        WhatsAppUser(phone=phone),
        Sighting(
            org_id=agent.org_id,
            agent_id=agent.id,
            portfolio=f"agent:{agent.id}",
            at=start,
            name=lead_name,
            source=source,
        ),
    )
    thread, _ = await threads.resolve(
        org_id=agent.org_id, agent_id=agent.id, lead_id=lead.id, at=start, source=source
    )
    tag = uuid.uuid4().hex[:8]

    async def inbound(n: int, text: str, at: Any) -> str:
        message = InboundMessage(
            event_id=f"evt-{tag}-{n}",
            org_id=agent.org_id,
            agent_id=agent.id,
            provider_message_id=f"wamid.{tag}.{n}",
            lead_wa_id=phone.removeprefix("+"),
            lead_name=lead_name,
            type="text",
            text=text,
            sent_at=at,
            received_at=at,
        )
        stored, _created = await messages.store_inbound(
            message, thread_id=thread.id, lead_id=lead.id, sender=phone
        )
        await threads.touch_inbound(agent.org_id, thread.id, at)
        return str(stored.id)

    for n, (direction, text) in enumerate(history):
        at = start + timedelta(minutes=n)
        if direction == "in":
            stored_id = await inbound(n, text, at)
            await messages.mark_answered(agent.org_id, [stored_id], f"rpl-earlier-{tag}")
            continue
        send_id = f"snd-{tag}-{n}"
        earlier = SendCommand(
            event_id=f"rpl-{tag}-{n}",
            command_id=f"rpl-{tag}-{n}",
            org_id=agent.org_id,
            agent_id=agent.id,
            thread_id=thread.id,
            lead_id=lead.id,
            destination=phone,
            bubbles=[Bubble(text=text)],
            created_at=at,
        )
        await messages.store_outbound(earlier, send_id, Bubble(text=text), "anthropic")
    for n, text in enumerate(new):  # a second apart, the last one just now
        await inbound(len(history) + n, text, now - timedelta(seconds=len(new) - n))
    if history:
        await threads.update_state(agent.org_id, thread.id, {"stage": "qualifying"})
    work = ThreadWork(
        event_id=f"wrk-{tag}",
        org_id=agent.org_id,
        agent_id=agent.id,
        thread_id=thread.id,
        lead_id=lead.id,
    )
    return Conversation(work, [text for _, text in history], new)


async def rachel_in_tan_homes(store: Store, settings: Settings, tenants: Tenants) -> Conversation:
    """Rachel's thread with Daniel Tan (persona Marisol): earlier messages and two new ones."""
    agent = await new_agent(store, settings, await tenants.organization(), "Daniel Tan", PERSONA)
    return await seed_conversation(
        store,
        agent,
        phone="+6598887777",
        lead_name="Rachel Lim",
        history=[
            ("in", "Hello, I saw your listing on the notice board near Loyang"),
            ("out", "Good day, this is Marisol from Tan Homes. How may I help?"),
            ("in", "We are a family of four, thinking about our next home"),
        ],
        new=["Something with three bedrooms please", "near the coast would be lovely"],
    )


def fallbacks(layer: str, reason: str) -> float:
    """realtybot_brain_fallbacks_total for the Anthropic engine's layer and reason."""
    labels = {"layer": layer, "engine": "anthropic", "reason": reason}
    return REGISTRY.get_sample_value("realtybot_brain_fallbacks_total", labels) or 0.0


def guard_blocks(reason: str) -> float:
    """realtybot_brain_guard_blocked_total for the reason."""
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("realtybot_brain_guard_blocked_total", labels) or 0.0


def llm_calls(layer: str, outcome: str) -> float:
    """realtybot_llm_calls_total for the layer and outcome."""
    labels = {"layer": layer, "outcome": outcome}
    return REGISTRY.get_sample_value("realtybot_llm_calls_total", labels) or 0.0


async def reply_of(broker: Broker, store: Store, work: ThreadWork) -> tuple[list[str], str]:
    """The bubbles published to outbound for the thread, and the engine its stored reply names."""
    command = await fetch_event(broker, "outbound", SendCommand)
    assert command is not None, "no reply was published"
    assert (command.org_id, command.thread_id) == (work.org_id, work.thread_id)
    stored = await store.db["replies"].find_one({"_id": command.command_id})
    assert stored is not None and stored["published"] is True
    return [bubble.text for bubble in command.bubbles], stored["engine"]


async def test_reply_is_the_models_made_in_two_calls_with_persona_and_history(
    services: ServiceRunner,
    broker: Broker,
    store: Store,
    settings: Settings,
    tenants: Tenants,
    fake: FakeAnthropic,
    engine: AnthropicEngine,
    offline: RecordingOfflineEngine,
) -> None:
    conversation = await rachel_in_tan_homes(store, settings, tenants)
    ok_before = {layer: llm_calls(layer, "ok") for layer in ("understand", "compose")}
    await start_brain(services, store, settings, engine, offline)
    await broker.publish(conversation.work, message_id=conversation.work.event_id)

    bubbles, engine_name = await reply_of(broker, store, conversation.work)

    # The model's bubbles, with the signature Guard adds when the model left it out.
    assert bubbles == [MODEL_BUBBLES[0], f"{MODEL_BUBBLES[1]}\n{PERSONA.signature}"]
    assert engine_name == "anthropic"
    assert offline.understood == [] and offline.composed == [], "the offline engine answered"
    assert fake.unscripted == []
    for layer in ("understand", "compose"):
        assert llm_calls(layer, "ok") == ok_before[layer] + 1
    # Two calls for the reply: Understand, then Compose, each forcing its tool.
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL]
    for request in fake.requests:
        assert request.body["model"] == MODEL
        credentials = {request.headers.get("x-api-key"), request.headers.get("authorization")}
        assert credentials & {fake.api_key, f"Bearer {fake.api_key}"}, request.headers
        system = request.system_text
        assert "You are Marisol, the WhatsApp assistant of Daniel Tan" in system
        assert TONES["professional"] in system
        for said in (PERSONA.greeting, PERSONA.signature, PERSONA.instructions):
            assert said is not None and said in system, said
        user = request.user_text
        # The thread's earlier messages in order, each as the lead or the bot said it, then
        # the new messages.
        history_at = user.index("Conversation so far")
        new_at = user.index("The lead's new messages")
        positions = [user.index(text) for text in [*conversation.history, *conversation.new]]
        assert positions == sorted(positions)
        assert all(history_at < p < new_at for p in positions[: len(conversation.history)])
        assert all(p > new_at for p in positions[len(conversation.history) :])
        assert f'lead: "{conversation.history[0]}"' in user
        assert f'bot: "{conversation.history[1]}"' in user
    # What the model understood is what Compose was told and what the thread now knows.
    understand_request, compose_request = fake.requests
    assert "SGD 2,345,678" not in understand_request.user_text
    assert "budget SGD 2,345,678" in compose_request.user_text
    thread = await store.db["threads"].find_one({"_id": conversation.work.thread_id})
    assert thread is not None
    assert thread["profile"]["budget"] == 2_345_678
    assert thread["profile"]["area"] == "Pasir Ris"


async def test_prompts_carry_only_their_own_threads_data(
    services: ServiceRunner,
    broker: Broker,
    store: Store,
    settings: Settings,
    tenants: Tenants,
    fake: FakeAnthropic,
    engine: AnthropicEngine,
    offline: RecordingOfflineEngine,
) -> None:
    rachel = await rachel_in_tan_homes(store, settings, tenants)
    agent = await AgentRepository(store).get(rachel.work.agent_id)
    assert agent is not None
    # Another lead of the same agent, and the same person (one global lead) writing to an
    # agent of another organization under another name: their words are canaries.
    same_agent = await seed_conversation(
        store,
        agent,
        phone="+6597776666",
        lead_name="Canary Koh",
        history=[("in", "CANARY-SAME-AGENT my unit number is 12-34")],
        new=["CANARY-SAME-AGENT any 5-room HDB in Bishan"],
    )
    other_agent = await new_agent(
        store, settings, await tenants.organization(), "Bertrand Ong", Persona(bot_name="Bert")
    )
    other_org = await seed_conversation(
        store,
        other_agent,
        phone="+6598887777",
        lead_name="Rachel Canaryname",
        history=[
            ("in", "CANARY-OTHER-ORG my salary is 9k"),
            ("out", "CANARY-OTHER-ORG noted, thank you"),
        ],
        new=["CANARY-OTHER-ORG looking to sell my Bukit Timah bungalow"],
    )
    marks = {
        rachel.work.thread_id: "kingfishers",
        same_agent.work.thread_id: "herons",
        other_org.work.thread_id: "pelicans",
    }
    canaries = {
        rachel.work.thread_id: ["Rachel Lim", *rachel.history, *rachel.new],
        same_agent.work.thread_id: ["CANARY-SAME-AGENT", "Canary Koh"],
        other_org.work.thread_id: ["CANARY-OTHER-ORG", "Rachel Canaryname", "Bertrand Ong"],
    }

    def thread_of(request: RecordedRequest) -> str:
        """The one thread whose words the request carries (fails on none or several)."""
        text = request.system_text + request.user_text
        found = {t for t, words in canaries.items() if any(word in text for word in words)}
        assert len(found) == 1, (found, text)
        return found.pop()

    def compose(request: RecordedRequest) -> dict[str, Any]:
        return {"bubbles": [f"A reply written by the model about {marks[thread_of(request)]}."]}

    fake.on_tool(COMPOSE_TOOL, compose)
    await start_brain(services, store, settings, engine, offline)
    works = [rachel.work, same_agent.work, other_org.work]
    await asyncio.gather(*(broker.publish(w, message_id=w.event_id) for w in works))

    replies: dict[str, list[str]] = {}
    for _ in works:
        command = await fetch_event(broker, "outbound", SendCommand)
        assert command is not None
        replies[command.thread_id] = [bubble.text for bubble in command.bubbles]
    assert replies[rachel.work.thread_id] == [
        f"A reply written by the model about kingfishers.\n{PERSONA.signature}"
    ]
    assert replies[same_agent.work.thread_id] == [
        f"A reply written by the model about herons.\n{PERSONA.signature}"
    ]
    assert replies[other_org.work.thread_id] == ["A reply written by the model about pelicans."]
    engines = {r["thread_id"]: r["engine"] for r in await store.db["replies"].find({}).to_list()}
    assert engines == dict.fromkeys(marks, "anthropic")
    assert offline.understood == [] and offline.composed == []
    # Every request belongs to exactly one thread (checked by thread_of), two per thread.
    assert len(fake.requests) == 6
    for thread_id in marks:
        tools = sorted(r.forced_tool or "" for r in fake.requests if thread_of(r) == thread_id)
        assert tools == sorted([UNDERSTAND_TOOL, COMPOSE_TOOL]), thread_id
    # Rachel's requests name her as this organization knows her, and carry no canary.
    for request in fake.requests:
        if thread_of(request) == rachel.work.thread_id:
            assert "canary" not in request.raw.lower()
            assert "Rachel Lim" in request.user_text


FAULTS = [
    pytest.param(
        "understand", Delay(3.0, ToolAnswer(UNDERSTOOD)), "timeout", id="understand-timeout"
    ),
    pytest.param("understand", ApiError(500), "api_error", id="understand-500"),
    pytest.param("understand", ApiError(529), "overloaded", id="understand-529"),
    pytest.param(
        "understand",
        ToolAnswer({"facts": {"budget": "plenty"}, "requests": ["teleport"]}),
        "invalid_output",
        id="understand-malformed",
    ),
    pytest.param(
        "compose",
        Delay(3.0, ToolAnswer({"bubbles": MODEL_BUBBLES})),
        "timeout",
        id="compose-timeout",
    ),
    pytest.param("compose", ApiError(500), "api_error", id="compose-500"),
    pytest.param("compose", ApiError(529), "overloaded", id="compose-529"),
    pytest.param(
        "compose",
        ToolAnswer({"bubbles": "one long string"}),
        "invalid_output",
        id="compose-malformed",
    ),
]


@pytest.mark.parametrize(("layer", "fault", "reason"), FAULTS)
async def test_failed_model_call_is_answered_by_the_offline_engine_and_counted(
    services: ServiceRunner,
    broker: Broker,
    store: Store,
    settings: Settings,
    tenants: Tenants,
    fake: FakeAnthropic,
    engine: AnthropicEngine,
    offline: RecordingOfflineEngine,
    layer: str,
    fault: Outcome,
    reason: str,
) -> None:
    conversation = await rachel_in_tan_homes(store, settings, tenants)
    fake.on_tool(UNDERSTAND_TOOL if layer == "understand" else COMPOSE_TOOL, fault)
    before = fallbacks(layer, reason)
    await start_brain(services, store, settings, engine, offline)
    await broker.publish(conversation.work, message_id=conversation.work.event_id)

    bubbles, engine_name = await reply_of(broker, store, conversation.work)

    assert fallbacks(layer, reason) == before + 1
    # One call per layer: the failed one is not retried, the other layer still uses the model.
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL]
    if layer == "understand":
        assert engine_name == "offline+anthropic"
        assert len(offline.understood) == 1 and offline.composed == []
        assert bubbles == [MODEL_BUBBLES[0], f"{MODEL_BUBBLES[1]}\n{PERSONA.signature}"]
        # Compose worked from what the offline engine understood, not the model's budget.
        assert "2,345,678" not in fake.requests[1].user_text
    else:
        assert engine_name == "anthropic+offline"
        assert offline.understood == []
        assert bubbles == offline.guarded_reply()
        assert not any(text in " ".join(bubbles) for text in MODEL_BUBBLES)


async def test_blocked_model_reply_is_replaced_by_the_offline_engines(
    services: ServiceRunner,
    broker: Broker,
    store: Store,
    settings: Settings,
    tenants: Tenants,
    fake: FakeAnthropic,
    engine: AnthropicEngine,
    offline: RecordingOfflineEngine,
) -> None:
    conversation = await rachel_in_tan_homes(store, settings, tenants)
    fake.on_tool(COMPOSE_TOOL, {"bubbles": ["Only 2 units left, book now!"]})
    blocked_before = guard_blocks("scarcity")
    fallbacks_before = fallbacks("compose", "invalid_output")
    await start_brain(services, store, settings, engine, offline)
    await broker.publish(conversation.work, message_id=conversation.work.event_id)

    bubbles, engine_name = await reply_of(broker, store, conversation.work)

    assert guard_blocks("scarcity") == blocked_before + 1
    assert bubbles == offline.guarded_reply()
    assert "units left" not in " ".join(bubbles)
    assert engine_name == "anthropic+offline"
    # The model answered its call; Guard, not a failed call, replaced the reply.
    assert [r.forced_tool for r in fake.requests] == [UNDERSTAND_TOOL, COMPOSE_TOOL]
    assert fallbacks("compose", "invalid_output") == fallbacks_before
