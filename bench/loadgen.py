"""The webhook load generator, run as its own process so that it competes with the server
only for CPU, and reports how much of it it used.

The parent writes a plan (JSON) to `python -m bench.loadgen`'s standard input and reads the
result (JSON) from its standard output. Two modes:

- closed: `concurrency` clients post back to back for `duration` seconds (or `max_requests`);
- open: requests leave at a fixed `rate` for `duration` seconds, whatever the answers do,
  with at most `max_in_flight` outstanding (a request that would exceed it is counted as
  `not_sent`: the system, or the generator, did not keep up).

Request i posts a Gupshup v2 message webhook from lead `lead_start + i // per_lead` to
target i modulo the number of targets, so each lead is new unless `per_lead` > 1.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from shared.settings import CHECKOUT_ROOT

TEXTS = (
    "Hi, any 3-bedroom condo in Tampines?",
    "Hello, I saw your listing. Is it still available?",
    "Looking to buy for own stay, budget around 1.2m",
    "Can I view a unit this Saturday afternoon?",
    "Hi, what's available near an MRT in the East?",
    "Interested in a 2 bedder in Punggol, first time buyer",
)


@dataclass
class Plan:
    """What to send, how hard and for how long."""

    mode: str  # "closed" or "open"
    targets: list[dict[str, str]]  # {"url": webhook URL, "app": Gupshup app name}
    duration: float
    concurrency: int = 1
    rate: float = 0.0
    max_requests: int = 0  # 0: no limit besides the duration
    max_in_flight: int = 256
    lead_start: int = 6580000000
    per_lead: int = 1
    run: str = "bench"
    timeout: float = 30.0


@dataclass
class Outcome:
    """Every request's start (epoch seconds), latency (seconds) and HTTP status (0: error)."""

    start: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    not_sent: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    began_at: float = 0.0


def webhook_body(plan: Plan, i: int, now_ms: int) -> bytes:
    """The v2 message webhook of request i, as Gupshup posts it."""
    target = plan.targets[i % len(plan.targets)]
    lead = str(plan.lead_start + i // plan.per_lead)
    body = {
        "app": target["app"],
        "timestamp": now_ms,
        "version": 2,
        "type": "message",
        "payload": {
            "id": f"wamid.{plan.run}.{i}",
            "source": lead,
            "type": "text",
            "payload": {"text": TEXTS[i % len(TEXTS)]},
            "sender": {
                "phone": lead,
                "name": "Bench Lead",
                "country_code": lead[:2],
                "dial_code": lead[2:],
            },
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def generate(plan: Plan) -> Outcome:
    """Run the plan; every request's outcome and the generator's own CPU time."""
    limit = plan.max_requests or 10**9
    if plan.mode == "open":
        limit = min(limit, int(plan.rate * plan.duration))
    # Bodies are made before the clock starts: building them is not the server's time.
    now_ms = int(time.time() * 1000)
    bodies = [webhook_body(plan, i, now_ms) for i in range(min(limit, _body_cap(plan)))]
    urls = [t["url"] for t in plan.targets]
    outcome = Outcome()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(
        limit=max(plan.concurrency, plan.max_in_flight if plan.mode == "open" else 0)
    )
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int) -> None:
            body = bodies[i % len(bodies)]
            began = time.time()
            started = time.perf_counter()
            status = 0
            try:
                async with http.post(urls[i % len(urls)], data=body, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                name = type(exc).__name__
                outcome.errors[name] = outcome.errors.get(name, 0) + 1
            outcome.start.append(began)
            outcome.latency.append(time.perf_counter() - started)
            outcome.status.append(status)
            outcome.index.append(i)

        outcome.began_at = time.time()
        started = time.perf_counter()
        if plan.mode == "closed":
            await _closed(plan, limit, one)
        else:
            await _open(plan, limit, one, outcome)
        outcome.wall_seconds = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    outcome.cpu_seconds = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return outcome


def _body_cap(plan: Plan) -> int:
    # Closed loops may run longer than any sensible count: bodies repeat past this many
    # (ids repeat too, which ingress does not look at).
    return 200_000 if plan.mode == "closed" else 10**9


async def _closed(plan: Plan, limit: int, one: Any) -> None:
    deadline = time.perf_counter() + plan.duration
    issued = 0

    async def client() -> None:
        nonlocal issued
        while time.perf_counter() < deadline and issued < limit:
            i = issued
            issued += 1
            await one(i)

    await asyncio.gather(*(client() for _ in range(plan.concurrency)))


async def _open(plan: Plan, limit: int, one: Any, outcome: Outcome) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pending: set[asyncio.Task[None]] = set()
    for i in range(limit):
        due = t0 + i / plan.rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= plan.max_in_flight:
            outcome.not_sent += 1
            continue
        task = asyncio.create_task(one(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=plan.timeout)


def main() -> None:
    """Read the plan from stdin, run it, write the outcome to stdout."""
    plan = Plan(**json.load(sys.stdin))
    outcome = asyncio.run(generate(plan))
    json.dump(asdict(outcome), sys.stdout)


async def run_generators(plan: Plan, processes: int = 1) -> dict[str, Any]:
    """Run the plan in `processes` generator processes (the load and leads split between
    them); their outcomes merged, with each one's CPU seconds."""
    parts = []
    for n in range(processes):
        part = Plan(**asdict(plan))
        part.concurrency = max(1, plan.concurrency // processes)
        part.rate = plan.rate / processes
        part.max_in_flight = max(1, plan.max_in_flight // processes)
        part.max_requests = plan.max_requests // processes if plan.max_requests else 0
        part.lead_start = plan.lead_start + n * 10_000_000 // max(1, processes)
        part.run = f"{plan.run}-{n}"
        parts.append(part)
    outcomes = await asyncio.gather(*(_spawn(p) for p in parts))
    merged: dict[str, Any] = {
        "start": [],
        "latency": [],
        "status": [],
        "lead": [],
        "errors": {},
        "not_sent": 0,
        "generator_cpu_seconds": [o["cpu_seconds"] for o in outcomes],
        "generator_wall_seconds": [o["wall_seconds"] for o in outcomes],
        "began_at": min(o["began_at"] for o in outcomes),
    }
    for part, o in zip(parts, outcomes, strict=True):
        merged["start"] += o["start"]
        merged["latency"] += o["latency"]
        merged["status"] += o["status"]
        merged["lead"] += [part.lead_start + i // part.per_lead for i in o["index"]]
        merged["not_sent"] += o["not_sent"]
        for name, count in o["errors"].items():
            merged["errors"][name] = merged["errors"].get(name, 0) + count
    return merged


async def _spawn(plan: Plan) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=CHECKOUT_ROOT,
    )
    out, _ = await process.communicate(json.dumps(asdict(plan)).encode())
    if process.returncode != 0:
        raise RuntimeError(f"load generator exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


if __name__ == "__main__":
    main()
