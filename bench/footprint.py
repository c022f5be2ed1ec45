"""Footprint: resident memory of each service idle and under the pipeline's load, and CPU
seconds per thousand messages per stage.

Baselines of the same run: the RSS of a bare aiohttp process (Python with its HTTP stack and
nothing else), and its CPU seconds per thousand requests answered without any I/O.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from bench.flow import run_step
from bench.ingress import wait_ready
from bench.loadgen import Plan, run_generators
from bench.machine import CpuWatch, sample_process
from bench.pipeline import ENV, first_lead, infra_pids
from bench.plots import bars
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import bench_stack, free_port
from shared.settings import CHECKOUT_ROOT

MB = 1024 * 1024
TARGET_IDLE_MB = 150
TARGET_LOADED_MB = 300
SERVICES = ("ingress", "router", "dedup", "brain", "outbound")


def pipeline_rate(default: float) -> float:
    """The highest stable rate of the last full pipeline run, if there is one."""
    path = CHECKOUT_ROOT / "bench" / "results" / "pipeline.json"
    try:
        rate = json.loads(path.read_text())["raw"]["best_rate"]
    except (OSError, KeyError, ValueError):
        return default
    return float(rate) if rate else default


async def bare_baseline(requests: int) -> dict[str, float]:
    """RSS of a bare aiohttp process after serving, and its CPU per thousand requests."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bare_http", "--port", str(port), cwd=CHECKOUT_ROOT
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz")
        before = sample_process(process.pid)
        await run_generators(
            Plan(
                mode="closed",
                targets=[{"url": f"http://127.0.0.1:{port}/v1/webhooks/gupshup/x", "app": "A"}],
                duration=30,
                concurrency=8,
                max_requests=requests,
                run=uuid.uuid4().hex[:8],
            )
        )
        after = sample_process(process.pid)
    finally:
        process.terminate()
        await process.wait()
    assert before is not None and after is not None
    return {
        "rss_mb": after.rss_bytes / MB,
        "cpu_seconds_per_1000": (after.cpu_seconds - before.cpu_seconds) / requests * 1000,
    }


async def run(context: BenchContext) -> BenchResult:
    """Idle for a while, then one pipeline step at the pipeline's highest stable rate."""
    rate = context.size(pipeline_rate(2.0), 4.0)
    duration = context.size(20.0, 0.5)
    idle_seconds = context.size(10.0, 0.2)
    result = BenchResult(
        "footprint",
        "Footprint: memory and CPU per service",
        {"rate": rate, "seconds_under_load": duration, "idle_seconds": idle_seconds},
    )
    bare = await bare_baseline(context.size(2000, 100))
    async with bench_stack("footprint", context.log_dir / "footprint", ENV) as stack:
        agents = await stack.onboard(4, rate=1000.0)
        pids = infra_pids(stack)
        watch = CpuWatch(pids)
        watch.start()
        await asyncio.sleep(idle_seconds)
        await watch.stop()
        idle_rss = {name: s.rss_bytes / MB for name, s in watch.snapshot().items()}
        idle_cpu = {name: spent / idle_seconds for name, spent in watch.cpu_seconds().items()}
        step = await run_step(
            stack,
            agents,
            rate,
            duration,
            drain_timeout=context.size(30.0, 10.0),
            lead_start=first_lead(),
            pids=pids,
        )
    messages = max(step.accepted, 1)
    rows: dict[str, dict[str, float]] = {}
    for name in (*SERVICES, "sandbox", "rabbitmq", "store"):
        if name not in step.peak_rss_bytes:
            continue
        rows[name] = {
            "idle_rss_mb": idle_rss.get(name, 0.0),
            "loaded_peak_rss_mb": step.peak_rss_bytes[name] / MB,
            # Less what the process spends idle (timers, sweeps, heartbeats) over the same time.
            "cpu_seconds_per_1000_messages": max(
                step.cpu_seconds.get(name, 0.0) - idle_cpu.get(name, 0.0) * step.watched_seconds,
                0.0,
            )
            / messages
            * 1000,
            "idle_cpu_cores": idle_cpu.get(name, 0.0),
        }
    for name in SERVICES:
        row = rows[name]
        result.figures += [
            Figure(
                f"{name}: RSS idle",
                row["idle_rss_mb"],
                "MB",
                target=f"< {TARGET_IDLE_MB}",
                met=(row["idle_rss_mb"]) < TARGET_IDLE_MB,
                baseline=bare["rss_mb"],
                baseline_name="bare aiohttp process",
            ),
            Figure(
                f"{name}: RSS peak under load",
                row["loaded_peak_rss_mb"],
                "MB",
                target=f"< {TARGET_LOADED_MB}",
                met=row["loaded_peak_rss_mb"] < TARGET_LOADED_MB,
                baseline=bare["rss_mb"],
                baseline_name="bare aiohttp process",
            ),
            Figure(
                f"{name}: CPU seconds per 1000 messages",
                row["cpu_seconds_per_1000_messages"],
                "s",
                baseline=bare["cpu_seconds_per_1000"],
                baseline_name="bare handler per 1000 requests",
            ),
        ]
    result.raw = {"processes": rows, "bare_aiohttp": bare, "step": step.as_json()}
    result.notes.append(
        f"Load: {step.accepted} new leads' messages at {rate:.0f}/s for {duration:.0f} s "
        f"({step.answered} answered); the kernel counts CPU in 10 ms ticks, so a figure per "
        f"thousand is good to {10 / messages:.2f} s. The shared servers' figures (rabbitmq, "
        "store) include whatever else used them meanwhile: "
        + ", ".join(
            f"{n} {rows[n]['cpu_seconds_per_1000_messages']:.1f} s/1000 "
            f"(idle {rows[n]['idle_cpu_cores']:.2f} cores)"
            for n in ("rabbitmq", "store")
            if n in rows
        )
        + "."
    )
    # The services against their targets (the shared RabbitMQ holds every other user's
    # queues too: its RSS is in the JSON, not on this scale).
    shown = [n for n in rows if n != "rabbitmq"]
    result.plots.append(
        bars(
            context.out_dir / "footprint.png",
            "Resident memory per process (RabbitMQ left out: shared)",
            shown,
            {
                "idle": [rows[n]["idle_rss_mb"] for n in shown],
                "under load (peak)": [rows[n]["loaded_peak_rss_mb"] for n in shown],
            },
            "MB",
            hlines={"idle target": TARGET_IDLE_MB, "loaded target": TARGET_LOADED_MB},
        )
    )
    return result
