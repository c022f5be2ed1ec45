"""Scaling: the pipeline's throughput with one and with two replicas of its slowest stage,
offered more than it can take, to show whether the stage scales out or the broker or the
store becomes the bound.

The slowest stage is the one whose queue grew first in the last full pipeline run (the brain
when there is none). Baseline of the same run: one replica of every stage.
"""

from __future__ import annotations

import json
from typing import Any

from bench.flow import StepOutcome, run_step
from bench.pipeline import ENV, first_lead, infra_pids
from bench.plots import bars
from bench.result import BenchContext, BenchResult, Figure
from bench.stack import bench_stack
from shared.settings import CHECKOUT_ROOT


def pipeline_findings() -> tuple[str, float]:
    """The slowest stage and highest stable rate of the last full pipeline run."""
    path = CHECKOUT_ROOT / "bench" / "results" / "pipeline.json"
    try:
        raw = json.loads(path.read_text())["raw"]
        return str(raw.get("slowest_stage") or "brain"), float(raw.get("best_rate") or 2.0)
    except (OSError, KeyError, ValueError):
        return "brain", 2.0


def throughput(step: StepOutcome, stage: str) -> tuple[float, float]:
    """First bubbles per second and the stage's messages handled per second, over the load
    and its drain."""
    seconds = max(step.seconds + step.drain_seconds, 1e-9)
    handled = float(step.stages.get(stage, {}).get("outcomes", {}).get("ok", 0.0))
    return step.answered / seconds, handled / seconds


async def run(context: BenchContext) -> BenchResult:
    """Saturate with one replica of the stage, then with two, each with new leads."""
    stage, best = pipeline_findings()
    rate = context.size(max(best * 3, 6.0), 4.0)
    duration = context.size(15.0, 0.5)
    drain = context.size(30.0, 8.0)
    result = BenchResult(
        "scaling",
        f"Scaling: one and two replicas of the slowest stage ({stage})",
        {"stage": stage, "offered_rate": rate, "seconds": duration, "drain_limit_seconds": drain},
    )
    outcomes: dict[int, StepOutcome] = {}
    for replicas in (1, 2):
        # A fresh stack each time: no leftovers of the other run, and a store of equal size.
        async with bench_stack(
            f"scaling{replicas}", context.log_dir / f"scaling-{replicas}", ENV
        ) as stack:
            agents = await stack.onboard(8, rate=1000.0)
            if replicas == 2:
                await stack.add_replica(stage)
            outcomes[replicas] = await run_step(
                stack,
                agents,
                rate,
                duration,
                drain_timeout=drain,
                lead_start=first_lead(),
                pids=infra_pids(stack),
            )
    one, two = (throughput(outcomes[n], stage) for n in (1, 2))
    result.figures += [
        Figure(
            "first bubbles per second, two replicas",
            two[0],
            "msg/s",
            baseline=one[0],
            baseline_name="one replica",
        ),
        Figure(
            f"{stage} messages handled per second, two replicas",
            two[1],
            "msg/s",
            baseline=one[1],
            baseline_name="one replica",
        ),
    ]
    for replicas, step in outcomes.items():
        seconds = max(step.watched_seconds, 1e-9)
        cores = {n: round(c / seconds, 2) for n, c in step.cpu_seconds.items()}
        result.notes.append(
            f"{replicas} replica(s) of {stage}: offered {rate:.0f}/s for {step.seconds:.0f} s, "
            f"{step.answered} of {step.accepted} answered within {step.drain_seconds:.0f} s "
            f"after the load, p50 {step.latency_ms.get('p50', float('nan')):.0f} ms; CPU "
            f"(cores): {_cores(cores)}."
        )
    result.raw = {
        "steps": {str(n): s.as_json() for n, s in outcomes.items()},
        "throughput": {"1": one, "2": two},
    }
    result.plots.append(
        bars(
            context.out_dir / "scaling.png",
            f"Throughput with one and two {stage} replicas",
            ["first bubbles/s", f"{stage} handled/s"],
            {"1 replica": list(one), "2 replicas": list(two)},
            "per second",
        )
    )
    return result


def _cores(cores: dict[str, Any]) -> str:
    return ", ".join(f"{n} {c:.2f}" for n, c in sorted(cores.items(), key=lambda kv: -kv[1]))
