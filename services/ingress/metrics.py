"""Prometheus metrics of ingress: its webhooks and its admin API (label values are bounded)."""

from __future__ import annotations

from prometheus_client import Counter

ADMIN_AUTH_FAILURES = Counter(
    "realtybot_admin_auth_failures_total",
    "Admin API requests refused for their key, by reason (missing_key, unknown_key: wrong or "
    "revoked, locked_out: the address presented too many wrong keys lately).",
    ["reason"],
)
