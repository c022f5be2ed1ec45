"""Prometheus metrics of dedup (label values are bounded)."""

from __future__ import annotations

from prometheus_client import Counter

INBOUND_STORED = Counter(
    "realtybot_inbound_messages_total",
    "Inbound lead messages seen by dedup, by outcome (stored, duplicate).",
    ["outcome"],
)
NUMBERS_SHARED = Counter(
    "realtybot_lead_numbers_shared_total",
    "Numbers leads known only by user ID shared with an agent (answering a request for it).",
)
