"""At LOG_LEVEL=DEBUG, libraries that dump whole requests stay at WARNING.

The Anthropic SDK logs every request's options (the prompt: a lead's messages, and any
number the lead typed) at DEBUG, and its HTTP client (httpx2, httpcore2) each request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.logs import configure_logging, get_logger

LEAD_TEXT = "Budget about 1.5m, call me on +6598887777"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("anthropic", "httpx2", "httpcore2")}
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


@pytest.mark.usefixtures("restore_logging")
def test_debug_logs_leave_out_the_model_sdks_request_dumps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="DEBUG", fmt="json", service="brain")
    options = {"json_data": {"messages": [{"role": "user", "content": LEAD_TEXT}]}}
    logging.getLogger("anthropic._base_client").debug("Request options: %s", options)
    logging.getLogger("httpcore2.http11").debug("send_request_body.started")
    logging.getLogger("httpx2").info("HTTP Request: POST /v1/messages 200")
    logging.getLogger("anthropic._base_client").warning("the SDK's own warning")
    get_logger("services.brain").debug("our own detail")

    err = capsys.readouterr().err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.strip()]
    assert events == ["the SDK's own warning", "our own detail"]
    assert "98887777" not in err
