"""structlog set-up: JSON in containers, readable in a terminal, secrets redacted, phone
numbers and business-scoped user IDs shortened."""

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
# Keys that hold a WhatsApp user's business-scoped user ID or username ("user_id",
# "lead_user_id", "parent_user_id", Gupshup's "userId", "username", "usernames" ...): the
# value is masked whatever its shape, since a malformed ID is still someone's.
USER_ID_KEY = re.compile(r"(user_?id|username)s?$", re.IGNORECASE)
# A BSUID (`SG.1349120865530274`, parent `SG.ENT.118…`) inside any text; the look-arounds
# keep it from matching the tail of a dotted name such as `shared.logs`.
BSUID_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9.])([A-Z]{2}\.(?:ENT\.)?)([A-Za-z0-9]{1,128})(?![A-Za-z0-9])"
)
# Callback URLs carry the agent's secret key as their last path segment.
WEBHOOK_PATH = re.compile(r"(/v1/webhooks/gupshup/)[^/?\s\"']+")
REDACTED = "[redacted]"


def shorten_phone(value: str) -> str:
    """Keep only the last four digits of a phone number: enough to correlate, not to dial."""
    digits = re.sub(r"\D", "", value)
    return f"…{digits[-4:]}" if len(digits) > 4 else "…"


def _masked_bsuid(match: re.Match[str]) -> str:
    prefix, rest = match.group(1), match.group(2)
    return f"{prefix}…{rest[-4:]}" if len(rest) > 4 else f"{prefix}…"


def mask_bsuid(value: str) -> str:
    """A BSUID as logs show it: its country prefix and last four characters (`SG.…0274`);
    any BSUID inside a longer text is masked the same way."""
    return BSUID_IN_TEXT.sub(_masked_bsuid, value)


def mask_user_identifier(value: str) -> str:
    """A value under a user-ID or username key: a BSUID masked as such, anything else
    (a username, a malformed ID) cut to its last four characters."""
    text = value.strip()
    if BSUID_IN_TEXT.fullmatch(text):
        return mask_bsuid(text)
    marker = "@" if text.startswith("@") else ""
    return f"{marker}…{text[-4:]}" if len(text) > 4 else f"{marker}…"


def _redact_value(key: str, value: Any) -> Any:
    if SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        if USER_ID_KEY.search(key):
            return mask_user_identifier(value)
        # A destination or source may be a BSUID instead of a number now.
        if PHONE_KEY.search(key) and not BSUID_IN_TEXT.fullmatch(value.strip()):
            return shorten_phone(value)
        return WEBHOOK_PATH.sub(r"\1" + REDACTED, mask_bsuid(value))
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: drop secrets, shorten phone numbers and mask business-scoped
    user IDs and usernames wherever they appear."""
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
