"""Pipeline: new leads' messages through all five services at fixed rates (no burst wait),
webhook-to-first-bubble latency at the sandbox, the highest rate the queues stay flat at,
and each stage's share from the services' own histograms.

The rate steps up until a step is unstable (a refused or unanswered webhook, or more than a
second of messages waiting in a stage's queue); the queue that grew names the bound. At the
highest stable rate the services are then profiled (a separate step, so the profiler does not
touch the reported figures). Baselines of the same run: four hops of confirmed publishes
through quorum queues with no work (the broker's floor) and one store round trip.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.flow import STAGES, StepOutcome, run_step
from bench.machine import CpuWatch, listening_pid
from bench.plots import lines
from bench.profile import record, summarise
from bench.relay import relay_floor
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import BenchStack, bench_stack
from bench.stats import percentile, summary
from shared.store import Store

TARGET_RATE = 300.0
TARGET_P50_MS = 150.0
TARGET_P99_MS = 500.0
TARGET_ROUTING_P99_MS = 100.0
ENV = {"BURST_QUIET_SECONDS": "0"}


async def store_round_trips(store: Store, count: int) -> dict[str, float]:
    """Latency (ms) of one find_one by id, `count` times in sequence."""
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        await store.db["agents"].find_one({"_id": "none"})
        spent.append((time.perf_counter() - started) * 1000)
    return summary(spent)


async def store_writes(store: Store, count: int, concurrency: int) -> dict[str, float]:
    """insert_one of a small document, `count` times with `concurrency` at once: latency (ms)
    and inserts per second (the store's write ceiling for one database)."""
    collection = store.db["bench_writes"]
    gate = asyncio.Semaphore(concurrency)
    spent: list[float] = []

    async def one(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            await collection.insert_one({"n": n, "text": "x" * 200})
            spent.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    seconds = time.perf_counter() - started
    await collection.drop()
    return {**summary(spent), "per_second": count / seconds, "concurrency": concurrency}


async def store_lookups(store: Store, sizes: list[int]) -> dict[str, dict[str, float]]:
    """find_one latency (p50, ms) by `_id`, by a uniquely indexed field and by a field without
    an index, as one collection grows to each size: how the store's reads scale with data."""
    collection = store.db["bench_lookups"]
    await collection.create_index("phone", unique=True)
    found: dict[str, dict[str, float]] = {}
    size = 0
    for target in sizes:
        rows = [
            {"_id": f"d{n}", "phone": f"+65{80000000 + n}", "x": "y" * 200}
            for n in range(size, target)
        ]
        for start in range(0, len(rows), 500):
            await collection.insert_many(rows[start : start + 500])
        size = target
        timings: dict[str, list[float]] = {
            "by_id": [],
            "by_indexed_field": [],
            "by_plain_field": [],
        }
        for n in range(20):
            probes = {
                "by_id": {"_id": f"d{(n * 37) % size}"},
                "by_indexed_field": {"phone": f"+65{80000000 + (n * 53) % size}"},
                "by_plain_field": {"x": "absent"},
            }
            for name, query in probes.items():
                started = time.perf_counter()
                await collection.find_one(query)
                timings[name].append((time.perf_counter() - started) * 1000)
        found[str(size)] = {name: percentile(t, 50) for name, t in timings.items()}
    await collection.drop()
    return found


async def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU share (cores) while this stack is idle: what others' use of the
    shared RabbitMQ and store costs them meanwhile."""
    watch = CpuWatch(pids, interval=seconds)
    watch.start()
    await asyncio.sleep(seconds)
    await watch.stop()
    return {name: round(spent / seconds, 3) for name, spent in watch.cpu_seconds().items()}


def infra_pids(stack: BenchStack) -> dict[str, int]:
    """The service processes plus RabbitMQ and the store, when they are found."""
    pids = stack.pids()
    store_port = int(stack.settings.mongodb_url.rsplit(":", 1)[-1].split("/")[0])
    for name, port in (("rabbitmq", 5672), ("store", store_port)):
        pid = listening_pid(port)
        if pid is not None:
            pids[name] = pid
    return pids


def first_lead() -> int:
    """A first lead number (Singapore mobiles 8xxxxxxx) unlikely to repeat across runs."""
    return 6580000000 + random.randrange(0, 5_000_000)


async def run(context: BenchContext) -> BenchResult:
    """Step the rate up until unstable; profile at the highest stable rate."""
    rates = context.size([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 100, 150, 200, 300], [5])
    duration = context.size(10.0, 0.6)
    drain = context.size(20.0, 10.0)
    agent_count = context.size(8, 2)
    result = BenchResult(
        "pipeline",
        "Pipeline: webhook to first reply bubble, all five services",
        {
            "rates": rates,
            "seconds_per_step": duration,
            "agents": agent_count,
            "burst_quiet_seconds": 0,
            "lead_pause_seconds": "default (1.0)",
            "status_callbacks": "off",
        },
    )
    steps: list[StepOutcome] = []
    profiles: dict[str, Any] = {}
    async with bench_stack("pipeline", context.log_dir / "pipeline", ENV) as stack:
        agents = await stack.onboard(agent_count, rate=1000.0)
        pids = infra_pids(stack)
        floor = await relay_floor(stack.settings, context.size(100, 5), context.size(1000, 20))
        store_trip = await store_round_trips(stack.store, context.size(200, 10))
        writes = {
            "sequential": await store_writes(stack.store, context.size(100, 10), 1),
            "concurrent": await store_writes(stack.store, context.size(400, 20), 32),
        }
        lookups = await store_lookups(stack.store, context.size([100, 2000, 10000], [50, 100]))
        idle = await idle_cpu(pids, context.size(3.0, 0.5))
        lead = first_lead()
        if not context.smoke:  # connections, caches and imports warm, not measured
            await run_step(stack, agents, 5, 2, drain_timeout=drain, lead_start=lead)
            lead += 100
        for rate in rates:
            step = await run_step(
                stack, agents, rate, duration, drain_timeout=drain, lead_start=lead, pids=pids
            )
            lead += int(rate * duration) + 100
            steps.append(step)
            print(
                f"  pipeline {rate}/s: stable={step.stable} p50={step.latency_ms.get('p50')}",
                flush=True,
            )
            if not step.stable:
                break
            await asyncio.sleep(1.0)
        stable = [s for s in steps if s.stable]
        best = stable[-1] if stable else steps[0]
        if not context.smoke:
            await stack.purge(*STAGES)  # an unstable step's backlog is not profiled
            await asyncio.sleep(2.0)
            profiles = await _profile(context, stack, agents, best.rate, duration, lead, drain)
    _report(result, steps, best, bool(stable), floor, store_trip, writes, profiles)
    result.raw["store_lookups_p50_ms_by_collection_size"] = lookups
    sizes = list(lookups)
    small, large = lookups[sizes[0]], lookups[sizes[-1]]
    for name, label in (
        ("by_id", "by _id"),
        ("by_indexed_field", "by a uniquely indexed field"),
        ("by_plain_field", "by a field without an index"),
    ):
        result.figures.append(
            Figure(
                f"store: find_one {label}, {sizes[-1]} documents",
                large[name],
                "ms",
                baseline=small[name],
                baseline_name=f"same, {sizes[0]} documents",
            )
        )
    result.raw["idle_cpu_cores"] = idle
    result.notes.insert(
        0,
        "CPU of the shared servers with this stack idle (others' use of them): "
        + ", ".join(f"{k} {v:.2f}" for k, v in idle.items() if k in ("store", "rabbitmq"))
        + " cores; subtract it from their figures below.",
    )
    _plots(context, result, steps)
    return result


async def _profile(
    context: BenchContext,
    stack: BenchStack,
    agents: list[Any],
    rate: float,
    duration: float,
    lead: int,
    drain: float,
) -> dict[str, Any]:
    services = {name: pid for name, pid in stack.pids().items() if name != "sandbox"}
    out_dir = context.log_dir / "pipeline" / "profiles"
    step, files = await asyncio.gather(
        run_step(stack, agents, rate, duration, drain_timeout=drain, lead_start=lead),
        record(services, duration, out_dir),
    )
    profiles = {name: summarise(path, duration) for name, path in files.items()}
    return {
        "rate": rate,
        "seconds": duration,
        "latency_ms": step.latency_ms,
        "by_service": profiles,
    }


def _ms(view: dict[str, Any], key: str) -> float:
    value = view.get(key)
    return float(value) * 1000 if isinstance(value, (int, float)) else float("nan")


def _report(
    result: BenchResult,
    steps: list[StepOutcome],
    best: StepOutcome,
    any_stable: bool,
    floor: dict[str, Any],
    store_trip: dict[str, float],
    writes: dict[str, dict[str, float]],
    profiles: dict[str, Any],
) -> None:
    sustained = best.rate if any_stable else 0.0
    result.figures.append(
        Figure(
            "highest sustained rate, queues flat",
            sustained,
            "msg/s",
            target=f"≥ {TARGET_RATE:.0f}",
            met=sustained >= TARGET_RATE,
            baseline=floor["messages_per_second"],
            baseline_name="4 confirmed quorum hops, no work",
        )
    )
    result.figures.append(
        Figure(
            "store: inserts per second, 32 at once (baseline for the rate)",
            writes["concurrent"]["per_second"],
            "/s",
        )
    )
    result.figures.append(
        Figure(
            "store: one insert_one, p50 (in sequence)",
            writes["sequential"]["p50"],
            "ms",
            baseline=store_trip.get("p50"),
            baseline_name="one find_one p50",
        )
    )
    result.figures.append(
        Figure(
            f"first bubbles per second at {best.rate:.0f} msg/s",
            best.answered / max(best.seconds, 1e-9),
            "msg/s",
        )
    )
    for q, target in (("p50", TARGET_P50_MS), ("p95", None), ("p99", TARGET_P99_MS)):
        value = best.latency_ms.get(q, float("nan"))
        result.figures.append(
            Figure(
                f"webhook to first bubble {q} at {best.rate:.0f} msg/s",
                value,
                "ms",
                target=None if target is None else f"< {target:.0f}",
                met=None if target is None else value < target,
                baseline=floor["latency_ms"].get(q),
                baseline_name="4 confirmed hops, no work",
            )
        )
    stages = best.stages
    routing = _ms(stages.get("router", {}), "p99_seconds") + _ms(
        stages.get("dedup", {}), "p99_seconds"
    )
    result.figures.append(
        Figure(
            "router + dedup handler p99 (sum of the two)",
            routing,
            "ms",
            target=f"< {TARGET_ROUTING_P99_MS:.0f}",
            met=routing < TARGET_ROUTING_P99_MS,
            baseline=store_trip.get("p99"),
            baseline_name="one store find_one p99",
        )
    )
    # The first bubble's path, stage by stage: each handler until its publish was confirmed,
    # then outbound from the reply being made to its first request, and that request.
    path = {
        "ingress: webhook handled (until the confirm)": stages.get("ingress", {}),
        "router: handler": stages.get("router", {}),
        "dedup: handler": stages.get("dedup", {}),
        "brain: handler (reply stored and published)": stages.get("brain", {}),
        "outbound: reply made to first Gupshup request": stages.get("outbound_queue_wait", {}),
        "outbound: Gupshup (sandbox) request": stages.get("gupshup_request", {}),
    }
    handler_sum = 0.0
    for label, view in path.items():
        mean = _ms(view, "mean_seconds")
        handler_sum += 0.0 if mean != mean else mean
        result.figures.append(
            Figure(
                f"{label}, mean (p99 {_ms(view, 'p99_seconds'):.0f} ms)",
                mean,
                "ms",
                baseline=store_trip.get("mean"),
                baseline_name="one store round trip",
            )
        )
    e2e_mean = best.latency_ms.get("mean", float("nan"))
    _notes(result, steps, best, any_stable, handler_sum, e2e_mean, profiles)
    result.raw = {
        "steps": [s.as_json() for s in steps],
        "latencies_ms_by_rate": {str(s.rate): s.latencies for s in steps},
        "relay_floor": floor,
        "store_round_trip_ms": store_trip,
        "store_writes": writes,
        "profiles": profiles,
        "best_rate": best.rate,
        "slowest_stage": _slowest(steps, best),
    }


def _slowest(steps: list[StepOutcome], best: StepOutcome) -> str:
    """The stage whose queue grew first, else the one with the longest handling time."""
    for step in steps:
        if not step.stable and step.growing_queue:
            return step.growing_queue
    means = {s: best.stages.get(s, {}).get("mean_seconds") or 0.0 for s in STAGES}
    return max(means, key=lambda s: means[s])


def _cpu_line(step: StepOutcome) -> str:
    seconds = max(step.watched_seconds, 1e-9)
    shares = sorted(step.cpu_seconds.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {spent / seconds:.2f}" for name, spent in shares)


def _notes(
    result: BenchResult,
    steps: list[StepOutcome],
    best: StepOutcome,
    any_stable: bool,
    handler_sum: float,
    e2e_mean: float,
    profiles: dict[str, Any],
) -> None:
    for step in steps:
        verdict = "stable" if step.stable else f"unstable: {step.unstable_because}"
        result.notes.append(
            f"{step.rate:.0f} msg/s for {step.seconds:.0f} s: {step.accepted} accepted, "
            f"{step.answered} answered, p50 {step.latency_ms.get('p50', float('nan')):.0f} ms, "
            f"p99 {step.latency_ms.get('p99', float('nan')):.0f} ms, drained "
            f"{step.drain_seconds:.1f} s after the load; {verdict}. CPU (cores): "
            f"{_cpu_line(step)}."
        )
    unstable = [s for s in steps if not s.stable]
    if unstable and unstable[0].growing_queue:
        result.notes.append(
            f"Bound: at {unstable[0].rate:.0f} msg/s the {unstable[0].growing_queue} queue grew "
            "first (deepest backlog in the second half of the step)."
        )
    if not any_stable:
        result.notes.append("No step was stable: the figures are those of the lowest rate.")
    result.notes.append(
        f"At {best.rate:.0f} msg/s the stage times above add up to {handler_sum:.0f} ms against "
        f"a {e2e_mean:.0f} ms mean webhook-to-first-bubble time. They overlap: outbound's "
        "wait starts when the brain makes the reply, before the brain stores and publishes "
        "it; what they leave out is the wait in the router, dedup and brain queues. "
        f"Outbound's own handler time, {_ms(best.stages.get('outbound', {}), 'mean_seconds'):.0f}"
        " ms mean, covers every bubble of a reply with the pause between messages to one lead "
        "(LEAD_PAUSE_SECONDS), so it is not on the first bubble's path."
    )
    for service, summary_ in profiles.get("by_service", {}).items():
        top = "; ".join(f"{name} {share:.0%}" for name, share in summary_["self"][:5])
        packages = ", ".join(
            f"{name} {share:.0%}" for name, share in summary_["self_by_package"][:5]
        )
        result.notes.append(
            f"Profile of {service} at {profiles['rate']:.0f} msg/s: busy "
            f"{summary_['busy_share_of_a_core']:.0%} of a core; CPU by package: {packages}; "
            f"hottest functions: {top}."
        )


def _plots(context: BenchContext, result: BenchResult, steps: list[StepOutcome]) -> None:
    offered = [s.rate for s in steps]
    result.plots.append(
        lines(
            context.out_dir / "pipeline_rates.png",
            "Pipeline: offered rate, answered rate and latency",
            "offered webhooks per second",
            {
                "answered leads/s": (offered, [s.answered / max(s.seconds, 1e-9) for s in steps]),
                "offered": (offered, offered),
            },
            "per second",
            right={
                "p50 ms": (offered, [s.latency_ms.get("p50", 0) for s in steps]),
                "p99 ms": (offered, [s.latency_ms.get("p99", 0) for s in steps]),
            },
            right_label="webhook to first bubble (ms)",
        )
    )
    webhooks: list[float] = []
    sends: list[float] = []
    latency: list[float] = []
    for step in steps:
        length = max(len(step.webhooks_per_second), len(step.first_sends_per_second))

        def padded(values: list[Any], n: int = length) -> list[float]:
            return [float(x) for x in values[:n]] + [float("nan")] * max(0, n - len(values))

        webhooks += padded(step.webhooks_per_second)
        sends += padded(step.first_sends_per_second)
        latency += padded(step.latency_p50_by_second)
    seconds = list(range(len(webhooks)))
    result.plots.append(
        lines(
            context.out_dir / "pipeline_time.png",
            "Pipeline over time (steps back to back)",
            "second of load (drain pauses left out)",
            {"webhooks accepted/s": (seconds, webhooks), "first bubbles/s": (seconds, sends)},
            "per second",
            right={"p50 latency of the webhooks sent that second": (seconds, latency)},
            right_label="webhook to first bubble (ms)",
        )
    )
