"""Prometheus metrics of the brain's model calls (label values are bounded)."""

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
