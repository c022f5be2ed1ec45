"""Prometheus metrics of ingress: its webhooks and its admin API (label values are bounded)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ADMIN_AUTH_FAILURES = Counter(
    "realtybot_admin_auth_failures_total",
    "Admin API requests refused for their key, by reason (missing_key, unknown_key: wrong or "
    "revoked, locked_out: the address presented too many wrong keys lately).",
    ["reason"],
)
WEBHOOKS = Counter(
    "realtybot_webhooks_total",
    "Webhook requests answered by ingress, by HTTP status.",
    ["status"],
)
WEBHOOK_DURATION = Histogram(
    "realtybot_webhook_duration_seconds",
    "Webhook request handling time, until the broker confirmed.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
