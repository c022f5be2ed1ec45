"""bench/RESULTS.md: a table per benchmark (figure, target, baseline, ratio), notes, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.result import read_results

ORDER = ("ingress", "brain", "pipeline", "outbound", "dedup", "footprint", "scaling")
HEADER = """# Benchmark results

Written by `make bench` (`python -m bench`); do not edit by hand. Each benchmark runs against
a private local stack on loopback (real RabbitMQ and store, the Gupshup sandbox, the offline
engine). Figures that depend on the machine stand next to a baseline measured in the same
run; **ratio** is figure / baseline. Raw figures: `bench/results/<name>.json`.
"""


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _met(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: ""}[met]


def section(document: dict[str, Any], plots_prefix: str) -> str:
    """The markdown of one benchmark."""
    machine = document.get("machine", {})
    lines = [f"## {document['title']}", ""]
    when = document.get("started_at", "")
    load = machine.get("load_average")
    lines.append(
        f"Run {when}, {document.get('duration_seconds', 0):.0f} s"
        + (f", load average before {load}" if load else "")
        + (" (smoke size: says nothing about speed)" if document.get("smoke") else "")
        + "."
    )
    params = ", ".join(f"{k}={v}" for k, v in document.get("parameters", {}).items())
    if params:
        lines += ["", f"Parameters: {params}."]
    if document.get("error"):
        lines += ["", f"**Failed:** `{document['error']}`"]
    figures = document.get("figures", [])
    if figures:
        lines += [
            "",
            "| figure | value | target | | baseline (same run) | ratio |",
            "|---|---:|---|---|---|---:|",
        ]
        for f in figures:
            baseline = ""
            if f.get("baseline") is not None:
                baseline = f"{_number(f['baseline'])} {f['unit']} ({f.get('baseline_name')})"
            ratio = "" if f.get("ratio") is None else f"{f['ratio']:.2f}"
            target = f"{f['target']} {f['unit']}" if f.get("target") else ""
            lines.append(
                f"| {f['name']} | {_number(f['value'])} {f['unit']} | {target} "
                f"| {_met(f.get('met'))} | {baseline} | {ratio} |"
            )
    notes = document.get("notes", [])
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    for plot in document.get("plots", []):
        lines += ["", f"![{plot}]({plots_prefix}{plot})"]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: Path) -> Path:
    """Regenerate the report from every result in `out_dir`."""
    results = read_results(out_dir)
    names = [n for n in ORDER if n in results] + sorted(set(results) - set(ORDER))
    prefix = (
        str(out_dir.relative_to(report.parent)) + "/"
        if out_dir.is_relative_to(report.parent)
        else str(out_dir) + "/"
    )
    parts = [HEADER]
    summary = summary_table([results[n] for n in names])
    if summary:
        parts.append(summary)
    parts += [section(results[n], prefix) for n in names]
    report.write_text("\n".join(parts))
    return report


def summary_table(documents: list[dict[str, Any]]) -> str:
    """One line per figure that has a target: the closing table of the issue."""
    rows = []
    for document in documents:
        for f in document.get("figures", []):
            if f.get("target"):
                rows.append(
                    f"| {document['name']} | {f['name']} | {_number(f['value'])} {f['unit']} "
                    f"| {f['target']} {f['unit']} | {_met(f.get('met'))} |"
                )
    if not rows:
        return ""
    head = (
        "## Targets at a glance\n\n"
        "| benchmark | figure | value | target | |\n|---|---|---:|---|---|"
    )
    return head + "\n" + "\n".join(rows) + "\n"
