"""Prometheus metrics of the router (label values are bounded)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_ROUTED = Counter(
    "realtybot_events_routed_total", "Typed events produced by the router, by kind.", ["kind"]
)
UNATTRIBUTED = Counter(
    "realtybot_unattributed_events_total",
    "Raw events the router could not attribute to an agent (dead-lettered), by reason.",
    ["reason"],
)
