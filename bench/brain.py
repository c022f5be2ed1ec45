"""Brain: the offline engine's latency per reply, in process, and `Brain.handle` per reply
against the real store and broker, next to one store round trip and one confirmed publish.

Four measurements, each over the same kinds of lead messages:
- engine layers: Understand, Decide, Compose and Guard on an in-memory Recall (no I/O);
- five layers: the same with Recall reading the store (listings, appointments);
- the Anthropic engine: the five layers with the Messages API played by a local stand-in
  answering each call after a fixed delay (model calls, tokens and time per reply);
- handle: the whole work item (lease, reads, five layers, reply stored with the thread's
  state and follow-ups planned, send command published with a confirm).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from pymongo import monitoring

from bench.loadgen import TEXTS as LOAD_TEXTS
from bench.plots import lines
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import BenchAgent, bench_settings, create_agents
from bench.stats import percentile, summary
from services.brain.engines.anthropic_engine import COMPOSE_TOOL, UNDERSTAND_TOOL, AnthropicEngine
from services.brain.engines.offline import OfflineEngine
from services.brain.reply import model as reply
from services.brain.reply.handler import Brain
from services.brain.reply.pipeline import Pipeline
from services.brain.reply.recall import Recaller
from shared.broker import Broker
from shared.identity import WhatsAppUser
from shared.models import InboundMessage, ThreadWork, utcnow
from shared.repositories.agents import AgentDirectory
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.listings import ListingFields, ListingRepository
from shared.repositories.messages import MessageRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.fakes.anthropic_api import Delay, FakeAnthropic, ToolAnswer

TARGET_P50_MS = 20.0
# How long the local stand-in for the Messages API takes to answer each model call.
MODEL_DELAY_SECONDS = 0.2
# The load generator's messages, and two that take the brain down other paths.
TEXTS = (
    *LOAD_TEXTS,
    "just browsing for now, agents keep calling me",
    "Can I speak to Jason directly?",
)
DISTRICTS = ("Tampines", "Punggol", "Bedok", "Pasir Ris", "Bishan", "Queenstown")


async def run(context: BenchContext) -> BenchResult:
    """Seed threads, then time each of the three measurements and the two baselines."""
    replies = context.size(120, 10)
    result = BenchResult(
        "brain",
        "Brain: time per reply (offline engine)",
        {"replies": replies, "listings": 60, "engine": "offline"},
    )
    settings = bench_settings("brain", burst_quiet_seconds=0)
    commands = StoreCommands()
    monitoring.register(commands)  # clients made from now on report their commands
    store = Store(settings)
    await store.migrate()
    broker = Broker(settings, "bench")
    await broker.connect()
    await broker.declare_topology()
    try:
        (agent,) = await create_agents(store, settings, 1)
        await _listings(store, agent.org_id)
        works = [await _seed(store, agent, i) for i in range(replies)]
        pipeline = Pipeline(OfflineEngine())
        engine_ms, layers = await _engine_layers(pipeline, agent, replies)
        five_ms = await _five_layers(pipeline, store, agent, replies)
        directory = AgentDirectory.for_store(store, settings)
        brain = Brain(broker, store, directory, settings)
        handle_ms = []
        commands.reset()
        for work in works:
            started = time.perf_counter()
            await brain.handle(work)
            handle_ms.append((time.perf_counter() - started) * 1000)
        handle_commands = dict(commands.count)
        slowing = commands.growth()
        heaviest = commands.heaviest()
        handle_store_ms = commands.milliseconds
        sequential_command_ms = commands.mean_command_ms
        # As the service runs: up to 32 work items at once (its prefetch).
        together = context.size(48, 10)
        more = [await _seed(store, agent, i) for i in range(together)]
        gate = asyncio.Semaphore(32)

        async def handle(work: ThreadWork) -> None:
            async with gate:
                await brain.handle(work)

        commands.reset()
        started = time.perf_counter()
        await asyncio.gather(*(handle(w) for w in more))
        concurrent_seconds = time.perf_counter() - started
        concurrent_command_ms = commands.mean_command_ms
        commands.reset()
        model_replies = context.size(30, 3)
        model = await _model_layers(agent, model_replies)
        find_ms = await _find_one(store, agent, replies)
        publish_ms = await _publish(broker, settings, agent, replies)
        answered = await store.db["replies"].count_documents({})
    finally:
        await broker.delete_topology()
        await broker.close()
        await store.client.drop_database(settings.mongodb_db)
        await store.close()

    stats = {
        "engine_layers": summary(engine_ms),
        "five_layers": summary(five_ms),
        "handle": summary(handle_ms),
        "store_find_one": summary(find_ms),
        "confirmed_publish": summary(publish_ms),
    }
    result.raw = {
        "milliseconds": {
            "engine_layers": engine_ms,
            "five_layers": five_ms,
            "handle": handle_ms,
            "store_find_one": find_ms,
            "confirmed_publish": publish_ms,
        },
        "summary_ms": stats,
        "engine_layer_means_ms": {k: sum(v) / len(v) for k, v in layers.items()},
        "replies_stored": answered,
        "anthropic_engine": model,
        "store_commands_during_handle": handle_commands,
        "store_commands_slowing_down": slowing,
        "store_commands_heaviest": heaviest,
        "concurrent_handle": {
            "replies": together,
            "seconds": concurrent_seconds,
            "mean_store_command_ms": concurrent_command_ms,
            "sequential_mean_store_command_ms": sequential_command_ms,
        },
        "store_command_ms_during_handle": handle_store_ms,
    }
    per_reply = sum(handle_commands.values()) / replies
    result.parameters["model_replies"] = model["replies"]
    result.parameters["model_delay_seconds"] = MODEL_DELAY_SECONDS
    store_share = handle_store_ms / sum(handle_ms)
    find_p50 = stats["store_find_one"]["p50"]
    result.figures += [
        _against_target("engine layers p50 (no I/O)", stats["engine_layers"]["p50"], find_p50),
        Figure("engine layers p99", stats["engine_layers"]["p99"], "ms"),
        _against_target(
            "five layers p50 (Recall reads the store)", stats["five_layers"]["p50"], find_p50
        ),
        Figure("five layers p99", stats["five_layers"]["p99"], "ms"),
        Figure(
            "Brain.handle p50 (whole reply, real store)",
            stats["handle"]["p50"],
            "ms",
            baseline=find_p50,
            baseline_name="one store find_one p50",
        ),
        *(
            Figure(
                f"Brain.handle {q}",
                stats["handle"][q],
                "ms",
                baseline=stats["store_find_one"][q],
                baseline_name=f"find_one {q}",
            )
            for q in ("p95", "p99")
        ),
        Figure(
            "replies per second, one handler in sequence",
            1000 / stats["handle"]["mean"],
            "/s",
            baseline=1000 / stats["store_find_one"]["mean"],
            baseline_name="find_one round trips per second",
        ),
        Figure("confirmed publish p50", stats["confirmed_publish"]["p50"], "ms"),
        Figure(
            "replies per second, 32 at once (as the service runs)",
            together / concurrent_seconds,
            "/s",
            baseline=1000 / stats["handle"]["mean"],
            baseline_name="one at a time",
        ),
        Figure(
            "mean store command time, 32 replies at once",
            concurrent_command_ms,
            "ms",
            baseline=sequential_command_ms,
            baseline_name="one reply at a time",
        ),
    ]
    result.figures += [
        Figure(
            "Anthropic engine: model calls per reply",
            model["calls_per_reply"],
            "",
            target="≤ 2",
            met=model["calls_per_reply"] <= 2,
        ),
        Figure(
            "Anthropic engine: tokens per reply (input + output)", model["tokens_per_reply"], ""
        ),
        Figure(
            "Anthropic engine: five layers p50 per reply",
            model["milliseconds"]["p50"],
            "ms",
            baseline=2 * MODEL_DELAY_SECONDS * 1000,
            baseline_name="two model calls' fixed delay",
        ),
        Figure("Anthropic engine: layers answered by the offline fallback", model["fallbacks"], ""),
    ]
    result.figures.append(Figure("store commands per reply (Brain.handle)", per_reply, ""))
    result.figures.append(
        Figure("share of Brain.handle time inside store commands", store_share * 100, "%")
    )
    means = result.raw["engine_layer_means_ms"]
    busiest = sorted(handle_commands.items(), key=lambda kv: -kv[1])[:6]
    result.notes += [
        "Engine layer means (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()) + ".",
        f"What bounds Brain.handle: {per_reply:.1f} store commands per reply, "
        f"{store_share:.0%} of its time with at least one of them waiting for its answer "
        "(the store client's command monitoring), the rest in Python (models, validation, "
        "logging) and the confirmed publish; the offline engine itself is "
        f"{stats['engine_layers']['mean'] / stats['handle']['mean']:.1%} of it. Most frequent "
        "commands: " + ", ".join(f"{k} {v / replies:.1f}/reply" for k, v in busiest) + ".",
    ]
    if heaviest:
        result.notes.append(
            "Store commands that took the most of Brain.handle's time (count over the "
            f"{replies} replies, mean): "
            + "; ".join(f"{r['command']} {r['count']}x {r['mean_ms']:.1f} ms" for r in heaviest)
            + "."
        )
    if slowing:
        result.notes.append(
            f"Brain.handle slows down as replies accumulate (first quarter of the {replies} "
            f"replies: {percentile(handle_ms[: replies // 4 or 1], 50):.0f} ms p50, last "
            f"quarter: {percentile(handle_ms[-(replies // 4 or 1) :], 50):.0f} ms). The store "
            "commands whose mean time grew most, first quarter to last: "
            + "; ".join(
                f"{r['command']} {r['first_quarter_mean_ms']:.1f} to "
                f"{r['last_quarter_mean_ms']:.1f} ms"
                for r in slowing
            )
            + "."
        )
    result.plots.append(
        lines(
            context.out_dir / "brain.png",
            "Brain: time per reply, in order",
            "reply #",
            {
                name: (list(range(len(values))), values)
                for name, values in result.raw["milliseconds"].items()
            },
            "milliseconds",
        )
    )
    return result


def _against_target(name: str, p50: float, find_p50: float) -> Figure:
    """A p50 held to the layers' target, next to one store round trip."""
    return Figure(
        name,
        p50,
        "ms",
        target=f"< {TARGET_P50_MS:.0f}",
        met=p50 < TARGET_P50_MS,
        baseline=find_p50,
        baseline_name="one store find_one p50",
    )


async def _model_layers(agent: BenchAgent, replies: int) -> dict[str, Any]:
    """The five layers on the Anthropic engine, the Messages API played by a local fake that
    answers each call after MODEL_DELAY_SECONDS: calls, tokens and time per reply."""
    understood = {
        "facts": {"intent": "own_stay", "budget": 1_200_000, "bedrooms": 3, "area": "Tampines"},
        "requests": [],
        "sentiment": "positive",
        "resistant": False,
        "urgency": "normal",
    }
    bubbles = {"bubbles": ["Thanks! A 3-bedder in Tampines, noted.", "When would you move?"]}
    fallbacks_before = _sample("realtybot_brain_fallbacks_total")
    tokens_before = _tokens()
    async with FakeAnthropic() as fake:
        fake.on_tool(UNDERSTAND_TOOL, Delay(MODEL_DELAY_SECONDS, ToolAnswer(understood)))
        fake.on_tool(COMPOSE_TOOL, Delay(MODEL_DELAY_SECONDS, ToolAnswer(bubbles)))
        engine = AnthropicEngine(
            api_key=fake.api_key, model="bench-model", base_url=fake.base_url, timeout_seconds=8
        )
        pipeline = Pipeline(engine)
        spent = []
        try:
            for i in range(replies):
                context = _context(agent, i)
                started = time.perf_counter()
                understanding, _ = await pipeline.understand(context)
                recall = _recall(context, understanding.facts)
                decision = pipeline.decide(context, understanding, recall)
                draft, by = await pipeline.compose(context, recall, decision)
                await pipeline.finish(context, recall, decision, draft, by)
                spent.append((time.perf_counter() - started) * 1000)
        finally:
            await engine.close()
        calls = len(fake.requests)
    return {
        "replies": replies,
        "calls_per_reply": calls / replies,
        "tokens_per_reply": (_tokens() - tokens_before) / replies,
        "milliseconds": summary(spent),
        "fallbacks": _sample("realtybot_brain_fallbacks_total") - fallbacks_before,
    }


def _tokens() -> float:
    """Input and output tokens the model reported so far in this process."""
    return _sample("realtybot_llm_tokens_total", kind="input") + _sample(
        "realtybot_llm_tokens_total", kind="output"
    )


def _sample(name: str, **labels: str) -> float:
    """A counter's total in this process over the series matching `labels`."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class StoreCommands(monitoring.CommandListener):
    """Counts the store commands this process sends, and the time spent waiting on them."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.intervals: list[tuple[float, float]] = []
        self.timeline: list[tuple[str, float]] = []  # ("find leads", ms), in order
        self._open: dict[int, tuple[float, str]] = {}

    def reset(self) -> None:
        """Start counting afresh."""
        self.count.clear()
        self.intervals.clear()
        self.timeline.clear()
        self._open.clear()

    def heaviest(self, top: int = 6) -> list[dict[str, Any]]:
        """The commands (by collection) that took the most time in total, with their mean."""
        totals: dict[str, list[float]] = {}
        for key, ms in self.timeline:
            totals.setdefault(key, []).append(ms)
        ranked = sorted(totals.items(), key=lambda kv: -sum(kv[1]))[:top]
        return [
            {"command": key, "count": len(times), "mean_ms": sum(times) / len(times)}
            for key, times in ranked
        ]

    def growth(self, top: int = 6) -> list[dict[str, Any]]:
        """The commands (by collection) whose mean time grew most from the first quarter of
        the recorded ones to the last: where the store slows down as the data grows."""
        quarter = max(len(self.timeline) // 4, 1)
        early: dict[str, list[float]] = {}
        late: dict[str, list[float]] = {}
        for key, ms in self.timeline[:quarter]:
            early.setdefault(key, []).append(ms)
        for key, ms in self.timeline[-quarter:]:
            late.setdefault(key, []).append(ms)
        means = [
            (key, sum(early[key]) / len(early[key]), sum(late[key]) / len(late[key]))
            for key in early.keys() & late.keys()
        ]
        means.sort(key=lambda m: m[1] - m[2])
        rows: list[dict[str, Any]] = [
            {"command": key, "first_quarter_mean_ms": first, "last_quarter_mean_ms": last}
            for key, first, last in means
        ]
        return rows[:top]

    @property
    def mean_command_ms(self) -> float:
        """Mean time from a command's start to its answer."""
        if not self.intervals:
            return float("nan")
        return sum(stop - start for start, stop in self.intervals) / len(self.intervals) * 1000

    @property
    def milliseconds(self) -> float:
        """Time during which at least one command was waiting for its answer (commands that
        run at once count once)."""
        busy, end = 0.0, float("-inf")
        for start, stop in sorted(self.intervals):
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        return busy * 1000

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """A command went out."""
        self.count[event.command_name] += 1
        collection = event.command.get(event.command_name)
        key = (
            f"{event.command_name} {collection}"
            if isinstance(collection, str)
            else (event.command_name)
        )
        self._open[event.request_id] = (time.perf_counter(), key)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """A command's answer came back."""
        self._close(event.request_id)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A command failed (a duplicate key is an answer too)."""
        self._close(event.request_id)

    def _close(self, request_id: int) -> None:
        opened = self._open.pop(request_id, None)
        if opened is not None:
            started, key = opened
            now = time.perf_counter()
            self.intervals.append((started, now))
            self.timeline.append((key, (now - started) * 1000))


async def _listings(store: Store, org_id: str) -> None:
    rows = [
        ListingFields(
            project=f"{district} Residences {n}",
            district=district,
            property_type="condo" if n % 3 else "hdb",
            bedrooms=1 + n % 4,
            price=700_000 + 50_000 * n,
            size_sqft=600 + 40 * n,
            tenure="99-year",
        )
        for n in range(10)
        for district in DISTRICTS
    ]
    await ListingRepository(store).import_all(org_id, rows)


async def _seed(store: Store, agent: BenchAgent, i: int) -> ThreadWork:
    """A new lead's first message to the agent, stored as dedup stores it."""
    at = utcnow() - timedelta(seconds=5)
    phone = f"+658{uuid.uuid4().int % 10_000_000:07d}"
    source = {"source": "organic"}
    seen = Sighting(
        org_id=agent.org_id,
        agent_id=agent.agent.id,
        portfolio=agent.agent.portfolio,
        at=at,
        name="Bench Lead",
        source=source,
    )
    lead, _ = await LeadRepository(store).resolve(WhatsAppUser(phone=phone), seen)
    threads = ThreadRepository(store)
    thread, _ = await threads.resolve(
        org_id=agent.org_id, agent_id=agent.agent.id, lead_id=lead.id, at=at, source=source
    )
    message = InboundMessage(
        event_id=f"evt-{i}",
        org_id=agent.org_id,
        agent_id=agent.agent.id,
        provider_message_id=f"wamid.bench.{uuid.uuid4().hex}",
        lead_wa_id=phone.lstrip("+"),
        lead_name="Bench Lead",
        type="text",
        text=TEXTS[i % len(TEXTS)],
        sent_at=at,
        received_at=at,
    )
    stored, _ = await MessageRepository(store).store_inbound(
        message, thread_id=thread.id, lead_id=lead.id, sender=phone
    )
    await threads.touch_inbound(agent.org_id, thread.id, at)
    return ThreadWork(
        event_id=f"wrk-{stored.id}",
        org_id=agent.org_id,
        agent_id=agent.agent.id,
        thread_id=thread.id,
        lead_id=lead.id,
    )


def _context(agent: BenchAgent, i: int) -> reply.Context:
    """A lead's message in a new thread, or (every other one) mid-conversation."""
    now = utcnow()
    ongoing = i % 2 == 1
    history = (
        [
            reply.Turn(who="lead", text="Hi, looking for a condo", at=now - timedelta(minutes=9)),
            reply.Turn(who="bot", text="Hi, I'm Ava. What area do you prefer?", at=now),
            reply.Turn(who="lead", text="Somewhere in the East", at=now - timedelta(minutes=5)),
            reply.Turn(who="bot", text="Great! What budget do you have in mind?", at=now),
        ]
        if ongoing
        else []
    )
    return reply.Context(
        org_id=agent.org_id,
        agent_id=agent.agent.id,
        thread_id=f"thr_{i}",
        lead_id=f"lead_{i}",
        agent_name=agent.agent.name,
        persona=agent.agent.persona,
        timezone=agent.agent.timezone,
        now=now,
        stage="qualifying" if ongoing else "new",
        profile=reply.Profile(area="East") if ongoing else reply.Profile(),
        new_messages=[reply.LeadMessage(type="text", text=TEXTS[i % len(TEXTS)], at=now)],
        history=history,
        asked=["area", "budget"] if ongoing else [],
    )


def _recall(context: reply.Context, facts: reply.Profile) -> reply.Recall:
    now = context.now
    slots = [
        reply.SlotOption(
            start=now + timedelta(days=1, hours=h),
            end=now + timedelta(days=1, hours=h, minutes=30),
            label=f"Tomorrow {h}:00 pm",
        )
        for h in (2, 3, 4)
    ]
    listings = [
        reply.ListingCard(
            listing_id=f"lst_{n}",
            project=f"Tampines Residences {n}",
            district="Tampines",
            property_type="condo",
            bedrooms=3,
            price=1_100_000 + n * 50_000,
        )
        for n in range(3)
    ]
    return reply.Recall(profile=context.profile.merged(facts), listings=listings, free_slots=slots)


async def _engine_layers(
    pipeline: Pipeline, agent: BenchAgent, replies: int
) -> tuple[list[float], dict[str, list[float]]]:
    totals: list[float] = []
    layers: dict[str, list[float]] = {"understand": [], "decide": [], "compose": [], "guard": []}
    for i in range(replies):
        context = _context(agent, i)
        t0 = time.perf_counter()
        understanding, _ = await pipeline.understand(context)
        t1 = time.perf_counter()
        recall = _recall(context, understanding.facts)
        t2 = time.perf_counter()
        decision = pipeline.decide(context, understanding, recall)
        t3 = time.perf_counter()
        draft, engine = await pipeline.compose(context, recall, decision)
        t4 = time.perf_counter()
        await pipeline.finish(context, recall, decision, draft, engine)
        t5 = time.perf_counter()
        totals.append((t1 - t0 + t5 - t2) * 1000)
        for name, spent in zip(layers, (t1 - t0, t3 - t2, t4 - t3, t5 - t4), strict=True):
            layers[name].append(spent * 1000)
    return totals, layers


async def _five_layers(
    pipeline: Pipeline, store: Store, agent: BenchAgent, replies: int
) -> list[float]:
    recaller = Recaller(store)
    totals = []
    for i in range(replies):
        context = _context(agent, i)
        started = time.perf_counter()
        understanding, _ = await pipeline.understand(context)

        async def read(
            c: reply.Context = context, u: reply.Understanding = understanding
        ) -> reply.Recall:
            return await recaller.recall(c, u, agent.agent)

        recall = await pipeline.recall(read, context, understanding)
        decision = pipeline.decide(context, understanding, recall)
        draft, engine = await pipeline.compose(context, recall, decision)
        await pipeline.finish(context, recall, decision, draft, engine)
        totals.append((time.perf_counter() - started) * 1000)
    return totals


async def _find_one(store: Store, agent: BenchAgent, count: int) -> list[float]:
    agents = store.db["agents"]
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        await agents.find_one({"_id": agent.agent.id})
        spent.append((time.perf_counter() - started) * 1000)
    return spent


async def _publish(
    broker: Broker, settings: Settings, agent: BenchAgent, count: int
) -> list[float]:
    spent = []
    for i in range(count):
        work = ThreadWork(
            event_id=f"bench-{i}",
            org_id=agent.org_id,
            agent_id=agent.agent.id,
            thread_id=f"thr_{i}",
            lead_id=f"lead_{i}",
        )
        started = time.perf_counter()
        await broker.publish(work, message_id=work.event_id)
        spent.append((time.perf_counter() - started) * 1000)
    return spent
