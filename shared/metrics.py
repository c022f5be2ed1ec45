"""Prometheus metrics of what the services share: the broker's consumers, the store's
repositories, the Gupshup client, HTTP limits (label values are always bounded). A metric
only one service exports lives in that service's `metrics` module."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_PROCESSED = Counter(
    "realtybot_messages_processed_total",
    "Broker messages handled, by outcome (ok, retried, dead_lettered, deferred).",
    ["service", "outcome"],
)
HANDLER_DURATION = Histogram(
    "realtybot_handler_duration_seconds",
    "Time spent handling one broker message.",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERED = Counter(
    "realtybot_dead_lettered_total",
    "Messages sent to a stage's dead-letter queue, by reason.",
    ["service", "reason"],
)
IN_FLIGHT = Gauge("realtybot_in_flight_messages", "Messages being handled now.", ["service"])
PUBLISH_BATCH_SIZE = Histogram(
    "realtybot_publish_batch_events",
    "Events per confirmed publish when publishes are batched (ingress): 1 at low load.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SENDS = Counter(
    "realtybot_outbound_sends_total",
    "Bubbles handed to Gupshup, by outcome (submitted, duplicate, refused, ambiguous, retry).",
    ["agent", "outcome"],
)
GUPSHUP_DURATION = Histogram(
    "realtybot_gupshup_request_duration_seconds",
    "Gupshup send API latency.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_STATUSES = Counter(
    "realtybot_delivery_statuses_total", "Delivery statuses received, by status.", ["status"]
)
THROTTLED = Counter(
    "realtybot_outbound_throttled_total",
    "Sends deferred because the agent's rate limit had no slot close enough.",
    ["agent"],
)
SEND_WAIT = Histogram(
    "realtybot_outbound_pacing_wait_seconds",
    "Time a send waited for its rate slot and the pause between messages to one lead.",
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
LEAD_MERGES = Counter(
    "realtybot_lead_merges_total",
    "Leads found to be one person (a number or a shared user ID joined them) and merged.",
)
LEADS = Counter(
    "realtybot_leads_total",
    "Leads created in the registry, and existing leads merged into a new agent's thread or an "
    "import (outcome created or merged).",
    ["outcome"],
)
QUEUE_WAIT = Histogram(
    "realtybot_outbound_queue_wait_seconds",
    "Time from a reply being made to its first bubble's request to Gupshup (queueing, "
    "deferrals and pacing included).",
    ["agent"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 43200),
)
TIER_USAGE = Gauge(
    "realtybot_messaging_tier_usage_ratio",
    "Unique leads reached by business-initiated messages in the last 24 h, over the agent's "
    "messaging tier.",
    ["agent"],
)
APPOINTMENTS = Counter(
    "realtybot_appointments_total",
    "Appointment bookings by outcome: booked, taken (the time was held), rescheduled, cancelled.",
    ["outcome"],
)
HTTP_REFUSED = Counter(
    "realtybot_http_refused_total",
    "Requests refused by a listener's limits before their handler saw them whole, by reason "
    "(body_too_large: declared over the limit; body_timeout: the body came too slowly).",
    ["reason"],
)
