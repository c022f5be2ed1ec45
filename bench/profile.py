"""Sampling profiles of running services (py-spy, without pausing them), summarised as the
functions where their CPU time goes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLES_PER_SECOND = 50
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def profiler() -> str | None:
    """The py-spy executable beside this interpreter, or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, Path]:
    """Profile every process for `seconds` at once; the collapsed-stack file of each."""
    executable = profiler()
    if executable is None:
        return {}
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    runs = {}
    for name, pid in pids.items():
        path = out_dir / f"{name}.collapsed.txt"
        process = await asyncio.create_subprocess_exec(
            executable,
            "record",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--duration",
            str(max(1, round(seconds))),
            "--pid",
            str(pid),
            "--output",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        runs[name] = (process, path)
    done = {}
    for name, (process, path) in runs.items():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=seconds + 30)
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.returncode == 0 and path.exists():
            done[name] = path
    return done


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    if match is None:
        return raw.strip(), ""
    return match["function"], match["file"]


def _short(function: str, file: str) -> str:
    return f"{function} ({file})" if file else function


def summarise(path: Path, seconds: float, top: int = 8) -> dict[str, Any]:
    """Busy share of one core, and the functions with the most samples: on the CPU
    themselves (self) and with what they call (inclusive, the project's own code only)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f[0].startswith("thread ")]
        if not frames:
            continue
        own[_short(*frames[-1])] += count
        packages[_package(frames[-1][1])] += count
        seen = set()
        for function, file in frames:
            entry = file.endswith("__main__.py") or file == "shared/service.py"
            if (
                file.startswith(("services/", "shared/"))
                and not entry
                and (function, file) not in seen
            ):
                seen.add((function, file))
                inclusive[_short(function, file)] += count
    busy = total / (SAMPLES_PER_SECOND * seconds) if seconds else 0.0

    def shares(counts: Counter[str]) -> list[list[Any]]:
        return [[name, round(n / total, 3)] for name, n in counts.most_common(top)] if total else []

    return {
        "samples": total,
        "busy_share_of_a_core": round(busy, 3),
        "self": shares(own),
        "inclusive_project_code": shares(inclusive),
        "self_by_package": shares(packages),
    }


def _package(file: str) -> str:
    """Who owns a frame's file: the project's module, a library, the standard library."""
    parts = Path(file).parts
    if not parts:
        return "native"
    if parts[0] in ("services", "shared") and len(parts) > 1:
        return "/".join(parts[:2])
    top = parts[0].removesuffix(".py")
    if top in sys.stdlib_module_names or top.startswith("<"):
        return "python stdlib"
    return top
