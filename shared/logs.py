"""structlog set-up: JSON in containers, readable in a terminal, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEY = re.compile(
    r"(api_?key|apikey|token|secret|password|authorization|credential|cookie"
    r"|callback_key|agent_key)",
    re.IGNORECASE,
)
# These names, and any key ending like a phone ("lead_phone", "Phone", "notify_number"),
# but not ids about a phone such as Meta's "phone_number_id".
PHONE_KEY = re.compile(
    r"^(number|destination|source|from|to)$"
    r"|(phone|phone_number|mobile|wa_id|notify_number|whatsapp_number)$",
    re.IGNORECASE,
)
# Callback URLs carry the agent's secret key as their last path segment.
WEBHOOK_PATH = re.compile(r"(/v1/webhooks/gupshup/)[^/?\s\"']+")
REDACTED = "[redacted]"


def shorten_phone(value: str) -> str:
    """Keep only the last four digits of a phone number: enough to correlate, not to dial."""
    digits = re.sub(r"\D", "", value)
    return f"…{digits[-4:]}" if len(digits) > 4 else "…"


def _redact_value(key: str, value: Any) -> Any:
    if SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        if PHONE_KEY.search(key):
            return shorten_phone(value)
        return WEBHOOK_PATH.sub(r"\1" + REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: drop secrets and shorten phone numbers wherever they appear."""
    return {key: _redact_value(key, value) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO", fmt: str = "auto", service: str | None = None) -> None:
    """Configure structlog and the standard library logging to write to stderr."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that dump whole requests at DEBUG: the Anthropic SDK (and its HTTP client,
    # httpx2/httpcore2) would write every prompt, a lead's messages and the numbers in them.
    noisy_loggers = (
        "aiormq",
        "aio_pika",
        "pymongo",
        "aiohttp.access",
        "httpx",
        "httpcore",
        "httpx2",
        "httpcore2",
        "anthropic",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
