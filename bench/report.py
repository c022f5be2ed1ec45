"""bench/RESULTS.md: a table per benchmark (figure, target, baseline, ratio), notes, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.result import read_results
from services.outbound.pacing import MAX_LATENESS_SECONDS
from shared.repositories.rate_slots import SLOT_MARGIN

ORDER = ("ingress", "brain", "pipeline", "outbound", "dedup", "footprint", "scaling")
HEADER = """# Benchmark results

Written by `make bench` (`python -m bench`; `make bench NAMES="ingress brain"` runs some,
`python -m bench --report-only` rewrites this file from the results); do not edit by hand.
Each benchmark runs against a private local stack on loopback: the five services as
processes, the real RabbitMQ, a FerretDB instance of its own (unless `MONGODB_URL` is set),
the Gupshup sandbox and the offline engine. Figures that depend on the machine stand next to
a baseline measured in the same run; **ratio** is figure / baseline. The machine, its load
average and the versions are in each `bench/results/<name>.json`, with the raw figures.
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
    servers = machine.get("servers", {})
    lines.append(
        f"Run {when}, {document.get('duration_seconds', 0):.0f} s"
        + (f", load average before {load}" if load else "")
        + (f", {machine.get('cpus')} CPUs ({machine.get('cpu_model')})" if machine else "")
        + (
            f", RabbitMQ {servers.get('rabbitmq', '?')}, FerretDB {servers.get('ferretdb', '?')}"
            f" ({machine.get('store_instance', 'shared')} instance)"
            if servers
            else ""
        )
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
    if not any(results[n].get("smoke") for n in names):
        parts.append(bounds_section(results))
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


def _figure(document: dict[str, Any] | None, starts: str) -> dict[str, Any] | None:
    for f in (document or {}).get("figures", []):
        if str(f["name"]).startswith(starts):
            return dict(f)
    return None


def _value(figure: dict[str, Any] | None, fmt: str = "{:.0f}") -> str:
    if figure is None or figure.get("value") is None:
        return "n/a"
    return fmt.format(figure["value"])


def bounds_section(results: dict[str, dict[str, Any]]) -> str:
    """What bounds each stage, in sentences built from this run's figures."""
    lines = ["## What bounds each stage", ""]
    ingress = results.get("ingress")
    if ingress and ingress.get("raw", {}).get("steps"):
        steps = ingress["raw"]["steps"]
        one, bare_one = steps["ingress"][0], steps["bare"][0]
        best = max(steps["ingress"], key=lambda s: s["rate_per_second"])
        batch = best.get("mean_batch_events")
        lines.append(
            f"- **Ingress**: at one client a webhook takes {one['latency_ms'].get('p50', 0):.1f} "
            f"ms (p50) against {bare_one['latency_ms'].get('p50', 0):.2f} ms for the bare "
            "handler: the difference is the broker's publish confirm (a persistent message "
            "in a quorum queue) that each request waits for before its 200. Under load, the "
            "webhooks that arrive while confirms are due leave together as one message"
            + (f" ({batch:.1f} webhooks per message at the best level)" if batch else "")
            + f". At its best level (c={best['concurrency']}, {best['rate_per_second']:.0f}/s) "
            f"ingress used {best['server_cpu_share'] or 0:.2f} of a core, RabbitMQ "
            f"{best['rabbitmq_cpu_share'] or 0:.2f} and the load generator "
            f"{best['generator_cpu_share']:.2f}, on two cores shared by all three: the "
            "machine, not the service, sets the ceiling (a second ingress replica on a "
            "machine of its own adds its own)."
        )
    brain = results.get("brain")
    if brain and brain.get("raw"):
        commands = _figure(brain, "store commands per reply")
        share = _figure(brain, "share of Brain.handle time")
        together = _figure(brain, "mean store command time, 32")
        engine = _figure(brain, "engine layers p50")
        alone = _figure(brain, "replies per second, one handler")
        at_once = _figure(brain, "replies per second, 32")
        lines.append(
            f"- **Brain**: the offline engine needs {_value(engine, '{:.2f}')} ms per reply "
            f"(p50); a whole reply makes {_value(commands, '{:.1f}')} store commands and "
            f"spends {_value(share)} % of its time waiting for them. 32 replies at once (the "
            f"service's prefetch) give {_value(at_once, '{:.1f}')} replies/s against "
            f"{_value(alone, '{:.1f}')} one at a time; one store command then takes "
            f"{_value(together, '{:.1f}')} ms instead of {together['baseline']:.1f} ms: the "
            "local store serves concurrent commands largely one after the other."
            if together and together.get("baseline") is not None
            else "- **Brain**: see its section."
        )
    pipeline = results.get("pipeline")
    if pipeline and pipeline.get("raw", {}).get("steps"):
        raw = pipeline["raw"]
        steps = raw["steps"]
        last = steps[-1]
        seconds = max(last.get("watched_seconds") or 1.0, 1e-9)
        cores = {k: v / seconds for k, v in (last.get("cpu_seconds") or {}).items()}
        services = sum(v for k, v in cores.items() if k not in ("store", "rabbitmq", "sandbox"))
        lookups = raw.get("store_lookups_p50_ms_by_collection_size", {})
        sizes = list(lookups)
        growth = ""
        if len(sizes) >= 2:
            small, large = lookups[sizes[0]], lookups[sizes[-1]]
            growth = (
                f" The store's reads slow down as collections grow: find_one by a uniquely "
                f"indexed field {small['by_indexed_field']:.1f} ms at {sizes[0]} documents, "
                f"{large['by_indexed_field']:.1f} ms at {sizes[-1]}; by `_id` "
                f"{small['by_id']:.1f} to {large['by_id']:.1f} ms; by a field without an index "
                f"{small['by_plain_field']:.1f} to {large['by_plain_field']:.1f} ms."
            )
        busy = [
            f"{name} {p['busy_share_of_a_core']:.0%}"
            for name, p in (raw.get("profiles") or {}).get("by_service", {}).items()
        ]
        lines.append(
            f"- **Pipeline**: the highest rate with flat queues and latency was "
            f"{raw.get('best_rate')} msg/s; the {raw.get('slowest_stage')} stage backed up "
            f"first. At {last['rate']:.0f} msg/s the store used {cores.get('store', 0):.2f} "
            f"cores, RabbitMQ {cores.get('rabbitmq', 0):.2f} and the five services together "
            f"{services:.2f}"
            + (": the services wait for the store." if cores.get("store", 0) > services else ".")
            + growth
            + (
                " Sampling profiles of the services at the highest stable rate found them "
                f"busy {', '.join(busy)} of a core, mostly in the event loop's wait."
                if busy
                else ""
            )
            + " The broker alone relays a message through four confirmed hops in "
            f"{raw['relay_floor']['latency_ms'].get('p50', 0):.1f} ms (p50)."
            + (
                " The local store (FerretDB on SQLite: one writer at a time, every document "
                "decoded and filtered again in Go) needs about "
                f"{1000 * cores.get('store', 0) / max(last['rate'], 1e-9):.0f} ms of CPU per "
                "message, against the services' "
                f"{1000 * services / max(last['rate'], 1e-9):.0f} ms together. Lifting the "
                "bound takes a store that serves concurrent commands in parallel (MongoDB in "
                "production) and fewer store round trips per message (batching a reply's "
                "writes, caching listings and agents' settings per process); the services "
                "themselves have CPU to spare."
                if cores.get("store", 0) > services
                else ""
            )
        )
    outbound = results.get("outbound")
    if outbound and outbound.get("raw", {}).get("agents"):
        rows = outbound["raw"]["agents"]
        alone = outbound["raw"].get("alone", {})
        lines.append(
            "- **Outbound**: per-agent rates reached "
            + ", ".join(
                f"{r['share_of_limit']:.0%} of {r['limit']:.0f}/s ({r['sent']} of "
                f"{r['backlog']} sent in the time allowed)"
                for r in rows
            )
            + (
                f" (the 80/s agent alone: {alone['achieved_per_second']:.1f}/s)"
                if alone.get("achieved_per_second")
                else ""
            )
            + (
                "; no one-second window went over its limit."
                if all(r["max_in_any_second"] <= r["limit"] for r in rows)
                else "; **a one-second window went over a limit** (see its section)."
            )
            + " Each send claims its rate slot by inserting a document (replicas that collide "
            "on a slot probe the next); in each process an agent's sends take their slots one "
            f"at a time, just before they leave, and a send that wakes more than "
            f"{MAX_LATENESS_SECONDS * 1000:.0f} ms late takes a fresh slot. Slots are "
            f"{(SLOT_MARGIN - 1) * 100:.1f} % further apart than 1/limit, so an agent gets at "
            f"most {100 / SLOT_MARGIN:.1f} % of its limit: that margin is what keeps every "
            "one-second window at the receiver within the limit when latency to Gupshup "
            "varies (with 1.8 % a loaded run put 6 sends of the 5/s agent in one second), "
            "so the 2 % target is out of reach by design. The slower agents lose more: "
            "their backlogs exceed what a replica may hold waiting (SEND_MAX_WAIT_SECONDS), "
            "so commands go round a delay queue and come back in bursts; an agent's backlog "
            "waiting in the broker, consumed in order per agent (a consistent-hash exchange "
            "with one active consumer per shard), would send it with no round trips. "
            + str(outbound["raw"].get("pacing", ""))
        )
    for name, label in (("dedup", "Dedup"), ("scaling", "Scaling")):
        document = results.get(name)
        if document and document.get("figures"):
            figure = document["figures"][0]
            ratio = figure.get("ratio")
            lines.append(
                f"- **{label}**: {figure['name']}: {_number(figure['value'])} {figure['unit']}"
                + (
                    f" against {_number(figure['baseline'])} with {figure['baseline_name']} "
                    f"(x{ratio:.2f})"
                    + (
                        ": the second replica made it slower; more store commands at once, "
                        "each waiting longer (see the brain's 32-at-once figure)."
                        if ratio < 0.9
                        else ": a second replica adds little; the shared store is the bound."
                        if ratio < 1.2
                        else ": the stage scales out."
                    )
                    if ratio is not None
                    else "."
                )
            )
    footprint = results.get("footprint")
    if footprint and footprint.get("raw", {}).get("processes"):
        processes = footprint["raw"]["processes"]
        worst = max(
            (n for n in processes if n not in ("rabbitmq", "store", "sandbox")),
            key=lambda n: processes[n]["loaded_peak_rss_mb"],
        )
        lines.append(
            f"- **Footprint**: the largest service under load is {worst} at "
            f"{processes[worst]['loaded_peak_rss_mb']:.0f} MB (a bare aiohttp process: "
            f"{footprint['raw']['bare_aiohttp']['rss_mb']:.0f} MB)."
        )
    return "\n".join(lines) + "\n"
