"""Ingress: webhooks per second accepted (200 after the broker's confirm) and latency at
increasing concurrency, against a bare aiohttp handler (the HTTP ceiling) in the same run.

Only ingress runs (nothing consumes its queue: the router's queue is purged after each step).
The load generator is its own process; its CPU share is reported, since on two cores it
competes with the server and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from typing import Any

import aiohttp

from bench.flow import scrape_by_service
from bench.loadgen import Plan, run_generators
from bench.machine import listening_pid, sample_process
from bench.plots import lines
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import bench_stack, free_port
from bench.stats import difference, histogram, per_interval, summary
from shared.settings import CHECKOUT_ROOT

TARGET_RATE = 5000.0
TARGET_P99_MS = 25.0


async def run(context: BenchContext) -> BenchResult:
    """Each concurrency level: the bare handler, then ingress, for the same duration."""
    levels = context.size([1, 8, 32, 64], [4])
    duration = context.size(8.0, 0.5)
    result = BenchResult(
        "ingress",
        "Ingress: webhooks accepted per second",
        {"concurrency": levels, "seconds_per_step": duration, "generators": 1},
    )
    port = free_port()
    bare = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bare_http", "--port", str(port), cwd=CHECKOUT_ROOT
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz")
        async with bench_stack(
            "ingress", context.log_dir / "ingress", services=("ingress",), sandbox=False
        ) as stack:
            (agent,) = await stack.onboard(1)
            ingress_url = stack.webhook_url(agent)
            bare_url = f"http://127.0.0.1:{port}/v1/webhooks/gupshup/{agent.callback_key}"
            ingress_pid = stack.pids()["ingress"]
            rabbit_pid = listening_pid(5672)
            steps: dict[str, list[dict[str, Any]]] = {"bare": [], "ingress": []}
            # A short warm-up of both, so that neither pays for first connections and imports.
            for url, pid in ((bare_url, bare.pid), (ingress_url, ingress_pid)):
                if not context.smoke:
                    await _step(url, agent.app, 8, 1.0, pid, None)
            await stack.purge("router")
            for level in levels:
                steps["bare"].append(
                    await _step(bare_url, agent.app, level, duration, bare.pid, None)
                )
                before = await scrape_by_service(stack)
                step = await _step(ingress_url, agent.app, level, duration, ingress_pid, rabbit_pid)
                grown = difference((await scrape_by_service(stack))["ingress"], before["ingress"])
                batches = histogram(grown, "realtybot_publish_batch_events")
                step["broker_messages"] = batches.count
                step["mean_batch_events"] = batches.total / batches.count if batches.count else None
                steps["ingress"].append(step)
                await stack.purge("router")
    finally:
        bare.terminate()
        await bare.wait()
    _figures(result, steps)
    result.raw = {"steps": steps}
    result.plots.append(
        lines(
            context.out_dir / "ingress.png",
            "Ingress vs bare aiohttp handler",
            "concurrent clients",
            {
                f"{name} webhooks/s": (
                    [s["concurrency"] for s in runs],
                    [s["rate_per_second"] for s in runs],
                )
                for name, runs in steps.items()
            },
            "accepted per second",
            right={
                f"{name} p99 ms": (
                    [s["concurrency"] for s in runs],
                    [s["latency_ms"].get("p99", 0) for s in runs],
                )
                for name, runs in steps.items()
            },
            right_label="p99 latency (ms)",
            logx=True,
        )
    )
    return result


async def wait_ready(url: str) -> None:
    """Poll a URL until it answers 200."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


async def _step(
    url: str, app: str, concurrency: int, duration: float, pid: int, rabbit_pid: int | None
) -> dict[str, Any]:
    plan = Plan(
        mode="closed",
        targets=[{"url": url, "app": app}],
        duration=duration,
        concurrency=concurrency,
        run=uuid.uuid4().hex[:8],
    )
    server_before = sample_process(pid)
    rabbit_before = sample_process(rabbit_pid) if rabbit_pid else None
    outcome = await run_generators(plan)
    server_after = sample_process(pid)
    rabbit_after = sample_process(rabbit_pid) if rabbit_pid else None
    ok = [
        lat
        for lat, status in zip(outcome["latency"], outcome["status"], strict=True)
        if status == 200
    ]
    ends = [s + lat for s, lat in zip(outcome["start"], outcome["latency"], strict=True)]
    # The servers are idle while the generator starts: their CPU is divided by the time it
    # sent load.
    seconds = outcome["generator_wall_seconds"][0]
    statuses: dict[str, int] = {}
    for status in outcome["status"]:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def share(before: Any, after: Any) -> float | None:
        if before is None or after is None:
            return None
        return float((after.cpu_seconds - before.cpu_seconds) / seconds)

    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "accepted": len(ok),
        "statuses": statuses,
        "errors": outcome["errors"],
        "rate_per_second": len(ok) / seconds if seconds else 0.0,
        "latency_ms": {k: v * 1000 if k != "count" else v for k, v in summary(ok).items()},
        "per_second": per_interval(ends, outcome["began_at"]),
        "generator_cpu_share": sum(outcome["generator_cpu_seconds"]) / seconds,
        "server_cpu_share": share(server_before, server_after),
        "rabbitmq_cpu_share": share(rabbit_before, rabbit_after),
    }


def _figures(result: BenchResult, steps: dict[str, list[dict[str, Any]]]) -> None:
    ingress, bare = steps["ingress"], steps["bare"]
    best = max(range(len(ingress)), key=lambda i: ingress[i]["rate_per_second"])
    top, ceiling = ingress[best], bare[best]
    result.figures.append(
        Figure(
            f"webhooks/s accepted, best level (c={top['concurrency']})",
            top["rate_per_second"],
            "/s",
            target=f"≥ {TARGET_RATE:.0f}",
            met=top["rate_per_second"] >= TARGET_RATE,
            baseline=ceiling["rate_per_second"],
            baseline_name="bare handler, same c",
        )
    )
    p99 = top["latency_ms"].get("p99", float("nan"))
    result.figures.append(
        Figure(
            f"p99 latency at c={top['concurrency']}",
            p99,
            "ms",
            target=f"< {TARGET_P99_MS:.0f}",
            met=p99 < TARGET_P99_MS,
            baseline=ceiling["latency_ms"].get("p99"),
            baseline_name="bare handler, same c",
        )
    )
    for step, base in zip(ingress, bare, strict=True):
        c = step["concurrency"]
        result.figures.append(
            Figure(
                f"c={c}: webhooks/s",
                step["rate_per_second"],
                "/s",
                baseline=base["rate_per_second"],
                baseline_name="bare",
            )
        )
        for q in ("p50", "p95", "p99"):
            result.figures.append(
                Figure(
                    f"c={c}: {q}",
                    step["latency_ms"].get(q, float("nan")),
                    "ms",
                    baseline=base["latency_ms"].get(q),
                    baseline_name="bare",
                )
            )
    result.notes.append(
        "CPU share (1.0 = one core) at the best level: ingress "
        f"{_fmt(top['server_cpu_share'])}, RabbitMQ {_fmt(top['rabbitmq_cpu_share'])}, load "
        f"generator {_fmt(top['generator_cpu_share'])}; bare handler "
        f"{_fmt(ceiling['server_cpu_share'])} with its generator at "
        f"{_fmt(ceiling['generator_cpu_share'])}. Two cores are shared by all three: a "
        "generator near 1.0 means the client, not the server, set the bare ceiling."
    )
    refused = {s["concurrency"]: s["statuses"] for s in ingress if set(s["statuses"]) - {"200"}}
    if refused:
        result.notes.append(f"Answers other than 200 (by concurrency): {refused}.")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
