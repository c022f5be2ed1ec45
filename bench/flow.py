"""One step of load through all five services: unique leads' messages posted as webhooks at a
fixed rate, then every lead's first reply bubble found at the sandbox.

Shared by the pipeline, footprint and scaling benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.loadgen import Plan, run_generators
from bench.machine import CpuWatch
from bench.stack import BenchAgent, BenchStack
from bench.stats import (
    Samples,
    combine,
    counter,
    difference,
    histogram,
    per_interval,
    percentile,
    summary,
)

STAGES = ("router", "dedup", "brain", "outbound")


@dataclass
class StepOutcome:
    """What one step measured."""

    rate: float
    seconds: float
    posted: int
    accepted: int
    not_sent: int
    answered: int
    latency_ms: dict[str, float]
    webhooks_per_second: list[int]
    first_sends_per_second: list[int]
    queue_depths: list[dict[str, Any]]
    generator_cpu_share: float
    stages: dict[str, Any] = field(default_factory=dict)
    stable: bool = False
    unstable_because: str | None = None
    growing_queue: str | None = None
    drain_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    # Median latency of the webhooks sent in each second of the load.
    latency_p50_by_second: list[float] = field(default_factory=list)
    # CPU seconds and peak RSS of each watched process over the load and the drain.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    watched_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The step without the per-message latencies (kept apart in the raw data)."""
        document = dict(self.__dict__)
        document.pop("latencies")
        return document


async def scrape_by_service(stack: BenchStack) -> dict[str, Samples]:
    """Every service's metrics, replicas summed."""
    scraped = await stack.scrape()
    by_service: dict[str, list[Samples]] = {}
    for label, samples in scraped.items():
        by_service.setdefault(label.split("#")[0], []).append(samples)
    return {name: combine(parts) for name, parts in by_service.items()}


def stage_figures(before: dict[str, Samples], after: dict[str, Samples]) -> dict[str, Any]:
    """Each stage's own histograms over the step: handling time, brain layers, pacing."""
    grown = {name: difference(after[name], before.get(name, {})) for name in after}
    stages: dict[str, Any] = {}
    if "ingress" in grown:
        stages["ingress"] = histogram(
            grown["ingress"], "realtybot_webhook_duration_seconds"
        ).as_json()
    for stage in STAGES:
        if stage in grown:
            view = histogram(grown[stage], "realtybot_handler_duration_seconds", service=stage)
            stages[stage] = view.as_json()
            stages[stage]["outcomes"] = {
                outcome: counter(
                    grown[stage],
                    "realtybot_messages_processed_total",
                    service=stage,
                    outcome=outcome,
                )
                for outcome in ("ok", "retried", "deferred", "dead_lettered")
            }
    if "brain" in grown:
        stages["brain_layers"] = {
            layer: histogram(grown["brain"], "realtybot_brain_layer_seconds", layer=layer).as_json()
            for layer in ("understand", "recall", "decide", "compose", "guard")
        }
    if "outbound" in grown:
        stages["outbound_pacing_wait"] = histogram(
            grown["outbound"], "realtybot_outbound_pacing_wait_seconds"
        ).as_json()
        stages["gupshup_request"] = histogram(
            grown["outbound"], "realtybot_gupshup_request_duration_seconds"
        ).as_json()
        stages["outbound_queue_wait"] = histogram(
            grown["outbound"], "realtybot_outbound_queue_wait_seconds"
        ).as_json()
    return stages


async def run_step(
    stack: BenchStack,
    agents: list[BenchAgent],
    rate: float,
    duration: float,
    *,
    drain_timeout: float,
    lead_start: int,
    pids: dict[str, int] | None = None,
) -> StepOutcome:
    """Post `rate` webhooks per second for `duration` seconds from new leads; wait for every
    lead's first reply at the sandbox (up to `drain_timeout` after the last webhook)."""
    before = await scrape_by_service(stack)
    depths: list[dict[str, Any]] = []
    began = time.monotonic()

    async def watch_queues() -> None:
        while True:
            depths.append({"t": round(time.monotonic() - began, 2), **await stack.queue_depths()})
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch_queues())
    cpu = CpuWatch(pids or {})
    cpu.start()
    plan = Plan(
        mode="open",
        targets=[{"url": stack.webhook_url(a), "app": a.app} for a in agents],
        duration=duration,
        rate=rate,
        max_in_flight=512,
        lead_start=lead_start,
        run=uuid.uuid4().hex[:8],
    )
    try:
        outcome = await run_generators(plan)
        generated = time.monotonic()
        end_of_load = [d for d in depths if d["t"] >= duration / 2]
        accepted = [
            (lead, start)
            for lead, start, status in zip(
                outcome["lead"], outcome["start"], outcome["status"], strict=True
            )
            if status == 200
        ]
        await _drain(stack, before, len(accepted), drain_timeout)
        drain_seconds = time.monotonic() - generated
    finally:
        await cpu.stop()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    after = await scrape_by_service(stack)
    first = await first_sends(stack, agents, {str(lead) for lead, _ in accepted})
    # In the order the webhooks left, so that a latency growing during the step shows.
    timed = [
        (start, (first[str(lead)] - start) * 1000)
        for lead, start in sorted(accepted, key=lambda pair: pair[1])
        if str(lead) in first
    ]
    latencies = [latency for _, latency in timed]
    by_second: dict[int, list[float]] = {}
    for start, latency in timed:
        by_second.setdefault(int(start - outcome["began_at"]), []).append(latency)
    seconds = outcome["generator_wall_seconds"][0]
    step = StepOutcome(
        rate=rate,
        seconds=seconds,
        posted=len(outcome["status"]),
        accepted=len(accepted),
        not_sent=outcome["not_sent"],
        answered=len(latencies),
        latency_ms=summary(latencies),
        webhooks_per_second=per_interval(
            [s for s, st in zip(outcome["start"], outcome["status"], strict=True) if st == 200],
            outcome["began_at"],
        ),
        first_sends_per_second=per_interval(first.values(), outcome["began_at"]),
        queue_depths=depths,
        generator_cpu_share=sum(outcome["generator_cpu_seconds"]) / max(seconds, 1e-9),
        stages=stage_figures(before, after),
        drain_seconds=drain_seconds,
        latencies=latencies,
        latency_p50_by_second=[
            percentile(by_second.get(n, []), 50) if n in by_second else float("nan")
            for n in range(int(seconds) + 1)
        ],
        cpu_seconds=cpu.cpu_seconds(),
        peak_rss_bytes=cpu.peak_rss(),
        watched_seconds=cpu.samples[-1][0] - cpu.samples[0][0] if cpu.samples else 0.0,
    )
    _judge(step, end_of_load)
    return step


async def _drain(
    stack: BenchStack, before: dict[str, Samples], expected: int, timeout: float
) -> None:
    """Until the brain made `expected` replies and outbound's sends and queue settled."""
    deadline = time.monotonic() + timeout
    last_sends, settled_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now = await scrape_by_service(stack)
        replies = counter(now.get("brain", {}), "realtybot_replies_total") - counter(
            before.get("brain", {}), "realtybot_replies_total"
        )
        sends = counter(
            now.get("outbound", {}), "realtybot_outbound_sends_total", outcome="submitted"
        )
        if sends != last_sends:
            last_sends, settled_since = sends, time.monotonic()
        if replies >= expected and time.monotonic() - settled_since > 1.0:
            depths = await stack.queue_depths()
            if not any(depths.values()):
                return
        await asyncio.sleep(0.5)


async def first_sends(
    stack: BenchStack, agents: list[BenchAgent], leads: set[str]
) -> dict[str, float]:
    """Each lead's first bubble's time at the sandbox (epoch seconds)."""
    first: dict[str, float] = {}
    for agent in agents:
        for message in await stack.sent(agent.app):
            lead = message["destination"]
            if lead in leads:
                at = datetime.fromisoformat(message["at"]).timestamp()
                if lead not in first or at < first[lead]:
                    first[lead] = at
    return first


def _growing(latencies: list[float]) -> bool:
    """The last quarter's median latency is more than twice the first's (and 250 ms more)."""
    if len(latencies) < 8:
        return False
    quarter = len(latencies) // 4
    early, late = percentile(latencies[:quarter], 50), percentile(latencies[-quarter:], 50)
    return late > 2 * early + 250


def _judge(step: StepOutcome, end_of_load: list[dict[str, Any]]) -> None:
    """Stable: every webhook accepted and answered, less than a second of the rate waiting in
    the stages' queues during the second half of the load, and a latency that did not grow
    during the step (messages held by a consumer are not in its queue's ready count)."""
    backlog_limit = max(step.rate, 10.0)
    worst: dict[str, int] = {}
    for sample in end_of_load:
        for stage in STAGES:
            worst[stage] = max(worst.get(stage, 0), int(sample.get(stage, 0)))
    if step.not_sent or step.accepted < step.posted:
        step.unstable_because = (
            f"{step.posted - step.accepted} webhooks refused, {step.not_sent} not sent "
            "(more than 512 waiting for ingress)"
        )
    elif step.answered < step.accepted:
        step.unstable_because = f"{step.accepted - step.answered} leads not answered in time"
    elif worst and max(worst.values()) > backlog_limit:
        step.unstable_because = f"queues over one second of messages: {worst}"
    elif _growing(step.latencies):
        quarter = max(len(step.latencies) // 4, 1)
        step.unstable_because = (
            "latency grew during the step (median of the first quarter "
            f"{percentile(step.latencies[:quarter], 50):.0f} ms, of the last "
            f"{percentile(step.latencies[-quarter:], 50):.0f} ms): messages wait in the "
            "services (prefetched, unacknowledged) or in delay queues"
        )
    step.stable = step.unstable_because is None
    if worst and max(worst.values()) > 0:
        step.growing_queue = max(worst, key=lambda s: worst[s])
