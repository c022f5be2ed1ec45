"""Prometheus metrics of the brain: model calls, layers, follow-ups (label values are bounded)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LLM_CALLS = Counter(
    "realtybot_llm_calls_total",
    "Model calls by layer (understand, compose) and outcome: ok, or why the call failed "
    "(timeout, connection, rate_limited, overloaded, auth, bad_request, api_error, refusal, "
    "invalid_output, cancelled, unexpected).",
    ["layer", "outcome"],
)
LLM_TOKENS = Counter(
    "realtybot_llm_tokens_total",
    "Tokens the model provider billed, by layer and kind (input, output, cache_read, "
    "cache_creation).",
    ["layer", "kind"],
)
LLM_CALL_SECONDS = Histogram(
    "realtybot_llm_call_seconds",
    "Time from sending a model request to its answer or failure, by layer.",
    ["layer"],
    buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30),
)

# --- the reply path -----------------------------------------------------------------------

LAYER_SECONDS = Histogram(
    "realtybot_brain_layer_seconds",
    "Time spent in each layer of the brain, by the engine that answered.",
    ["layer", "engine"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
LAYER_FALLBACKS = Counter(
    "realtybot_brain_fallbacks_total",
    "Layers answered by their fallback instead of their engine, by reason.",
    ["layer", "engine", "reason"],
)
GUARD_BLOCKS = Counter(
    "realtybot_brain_guard_blocked_total",
    "Replies Guard replaced, by what it found.",
    ["reason"],
)

# --- follow-ups and reminders -------------------------------------------------------------

SCHEDULED = Counter(
    "realtybot_scheduled_messages_total",
    "Follow-ups and reminders by kind and outcome: planned, cancelled (replaced before they "
    "were due), sent, skipped (see the reasons), held (quiet hours), failed (tried again).",
    ["kind", "outcome"],
)
SKIPPED = Counter(
    "realtybot_scheduled_messages_skipped_total",
    "Due follow-ups and reminders that were not sent, by kind and reason.",
    ["kind", "reason"],
)
SWEEPS = Counter(
    "realtybot_scheduler_sweeps_total",
    "Looks for due follow-ups and reminders, by outcome (ok, failed).",
    ["outcome"],
)
REPLIES = Counter("realtybot_replies_total", "Replies composed by the brain.", ["engine"])
CONTACT_REQUESTS = Counter(
    "realtybot_contact_requests_total",
    "Leads whose number WhatsApp withholds asked (once per lead and agent) to share it.",
)
