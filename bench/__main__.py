"""`python -m bench [names...] [--smoke]`: run benchmarks, write their results and the report.

Full size writes `bench/results/<name>.json` and `bench/RESULTS.md`; `--smoke` runs each at a
tiny size (seconds, asserting nothing about speed) into `.local/bench-smoke/`, so the
published results stay those of the last full run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bench.machine import describe_machine
from bench.report import ORDER, write_report
from bench.result import BenchContext, BenchResult
from bench.stack import bench_settings
from bench.store_server import private_store
from shared.logs import configure_logging
from shared.settings import CHECKOUT_ROOT

BENCH_DIR = CHECKOUT_ROOT / "bench"
SMOKE_DIR = CHECKOUT_ROOT / ".local" / "bench-smoke"
LOG_DIR = CHECKOUT_ROOT / ".local" / "bench-logs"
# Each benchmark is cut off after this long (seconds), full size and smoke size.
TIME_LIMITS = {"full": 420.0, "smoke": 45.0}


async def run_one(name: str, context: BenchContext) -> BenchResult:
    """Run one benchmark within its time limit; a failure becomes a result with its error."""
    module: Any = importlib.import_module(f"bench.{name}")
    machine = await describe_machine(bench_settings(name))
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    limit = TIME_LIMITS["smoke" if context.smoke else "full"]
    try:
        result: BenchResult = await asyncio.wait_for(module.run(context), timeout=limit)
    except Exception as exc:
        traceback.print_exc()
        result = BenchResult(name, name, {}, error=f"{type(exc).__name__}: {exc}")
    result.machine = machine
    result.started_at = started_at
    result.duration_seconds = time.monotonic() - started
    result.smoke = context.smoke
    return result


async def main_async(names: list[str], smoke: bool) -> int:
    """Run the named benchmarks in order, on a private store when one can be started; 1 if
    any failed."""
    with private_store() as url:
        if url is not None:
            os.environ["MONGODB_URL"] = url
            print(f"bench: private store at {url}", file=sys.stderr, flush=True)
        try:
            return await _run_all(names, smoke, "private" if url else "shared")
        finally:
            if url is not None:
                del os.environ["MONGODB_URL"]


async def _run_all(names: list[str], smoke: bool, store: str) -> int:
    base = SMOKE_DIR if smoke else BENCH_DIR
    context = BenchContext(smoke=smoke, out_dir=base / "results", log_dir=LOG_DIR)
    failed = 0
    for name in names:
        began = time.monotonic()
        print(f"bench {name}: running{' (smoke)' if smoke else ''}", file=sys.stderr, flush=True)
        result = await run_one(name, context)
        result.machine["store_instance"] = store
        result.write(context.out_dir)
        write_report(context.out_dir, base / "RESULTS.md")
        status = "failed: " + result.error if result.error else "done"
        print(
            f"bench {name}: {status} in {time.monotonic() - began:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        failed += result.error is not None
    print(f"report: {base / 'RESULTS.md'}", file=sys.stderr)
    return 1 if failed else 0


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(ORDER))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds each")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the results"
    )
    args = parser.parse_args()
    if args.report_only:
        base = SMOKE_DIR if args.smoke else BENCH_DIR
        print(write_report(base / "results", base / "RESULTS.md"))
        return
    configure_logging("WARNING", "console", service="bench")
    names = args.names or [n for n in ORDER if importlib.util.find_spec(f"bench.{n}")]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ORDER)}")
    raise SystemExit(asyncio.run(main_async(names, args.smoke)))


if __name__ == "__main__":
    main()
