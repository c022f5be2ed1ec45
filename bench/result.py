"""What a benchmark hands back: figures with their targets and same-run baselines, raw data."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured figure, its target (if the issue sets one) and the same-run baseline."""

    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. "≥ 5000", "< 20"
    met: bool | None = None
    baseline: float | None = None
    baseline_name: str | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline, when there is a baseline."""
        if self.baseline is None or not self.baseline or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


@dataclass
class BenchContext:
    """How a benchmark runs: full size or smoke, where results and logs go."""

    smoke: bool
    out_dir: Path
    log_dir: Path

    def size(self, full: Any, smoke: Any) -> Any:
        """The full-size parameter, or its smoke-size stand-in."""
        return smoke if self.smoke else full


@dataclass
class BenchResult:
    """A benchmark's outcome, written as bench/results/<name>.json."""

    name: str
    title: str
    parameters: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration_seconds: float = 0.0
    smoke: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (figures carry their ratio)."""
        document = asdict(self)
        for figure, out in zip(self.figures, document["figures"], strict=True):
            out["ratio"] = figure.ratio
        return document

    def write(self, out_dir: Path) -> Path:
        """Write `<name>.json` (through a temporary file, so a crash leaves the old one)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=1, default=_finite) + "\n")
        temporary.replace(path)
        return path


def _finite(value: Any) -> Any:
    raise TypeError(f"not serialisable: {type(value).__name__}")


def read_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every result document in the folder, by benchmark name."""
    found = {}
    for path in sorted(out_dir.glob("*.json")):
        document = json.loads(path.read_text())
        found[document["name"]] = document
    return found
