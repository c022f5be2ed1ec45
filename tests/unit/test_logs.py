"""Logs: secrets never appear, phone numbers are shortened, JSON in containers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from shared.logs import REDACTED, configure_logging, get_logger, redact

SECRET = "sk_live_7f3a9c0e4b2d4e8f"
CALLBACK_KEY = "cbk_Q2xh7dZ0p9vT3mYkR8sLwN4eJ6uF1aXo"
WEBHOOK_URL = f"https://bot.example.com/v1/webhooks/gupshup/{CALLBACK_KEY}"


def redacted(**event: Any) -> dict[str, Any]:
    result: dict[str, Any] = redact(None, "info", event)
    return result


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apikey",
        "apiKey",
        "gupshup_api_key",
        "token",
        "access_token",
        "partner_token",
        "authorization",
        "Authorization",
        "password",
        "partner_password",
        "client_secret",
        "cookie",
        "credentials",
        "callback_key",
        "agent_key",
    ],
)
def test_values_under_secret_looking_keys_are_removed(key: str) -> None:
    assert redacted(**{key: SECRET, "agent_id": "agent-1"}) == {
        key: REDACTED,
        "agent_id": "agent-1",
    }


def test_secrets_nested_in_dicts_and_lists_are_removed() -> None:
    event = redacted(
        event="gupshup request",
        request={
            "headers": {"apikey": SECRET, "Content-Type": "application/x-www-form-urlencoded"},
            "attempts": [{"token": SECRET, "status": 429}, {"Authorization": f"Bearer {SECRET}"}],
        },
        credentials={"api_key": SECRET, "app": "RealtyBotApp"},
    )
    assert SECRET not in json.dumps(event)
    assert event["request"]["headers"] == {
        "apikey": REDACTED,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert event["request"]["attempts"] == [
        {"token": REDACTED, "status": 429},
        {"Authorization": REDACTED},
    ]
    assert event["credentials"] == REDACTED  # a whole secret-looking subtree goes


@pytest.mark.parametrize(
    "key",
    [
        "phone",
        "Phone",
        "number",
        "destination",
        "source",
        "from",
        "to",
        "wa_id",
        "lead_wa_id",
        "lead_phone",
        "notify_number",
    ],
)
def test_phone_numbers_under_phone_like_keys_keep_only_the_last_four_digits(key: str) -> None:
    assert redacted(**{key: "+65 9888 7777"}) == {key: "…7777"}


def test_phone_numbers_nested_in_payloads_and_lists_are_shortened() -> None:
    event = redacted(
        payload={"sender": {"phone": "6598887777", "name": "Rachel Lim"}, "type": "text"},
        to=["6598887777", "+6591234567"],
    )
    assert event == {
        "payload": {"sender": {"phone": "…7777", "name": "Rachel Lim"}, "type": "text"},
        "to": ["…7777", "…4567"],
    }


def test_ids_and_counts_are_left_for_operators() -> None:
    event = {
        "event": "reply sent",
        "agent_id": "agt_123",
        "thread_id": "thr_456",
        "message_id": "wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkQ1RTZGN0E4QjlDMEQxRTIA",
        "phone_number_id": "109876543210987",
        "bubbles": 2,
    }
    assert redacted(**event) == event


USER_ID = "SG.1349120865530274"
PARENT_USER_ID = "SG.ENT.118034567890"


@pytest.mark.parametrize(
    "key", ["user_id", "lead_user_id", "parent_user_id", "userId", "lead_parent_user_id"]
)
def test_business_scoped_user_ids_under_user_id_keys_keep_country_and_last_four(
    key: str,
) -> None:
    assert redacted(**{key: USER_ID}) == {key: "SG.…0274"}


def test_a_parent_user_id_keeps_its_marker_and_last_four() -> None:
    assert redacted(parent_user_id=PARENT_USER_ID) == {"parent_user_id": "SG.ENT.…7890"}


@pytest.mark.parametrize("key", ["destination", "source", "to", "address", "recipient", "event"])
def test_a_user_id_is_masked_under_any_key_not_just_user_id_keys(key: str) -> None:
    assert redacted(**{key: USER_ID}) == {key: "SG.…0274"}


def test_user_ids_inside_text_nested_payloads_and_lists_are_masked() -> None:
    event = redacted(
        event=f"reply sent to {USER_ID} (parent {PARENT_USER_ID})",
        payload={"sender": {"userId": USER_ID, "name": "Rachel Lim"}, "source": USER_ID},
        user_ids=[{"business_portfolio_id": "1234567890", "user_id": USER_ID}],
        to=[USER_ID, "+6591234567"],
    )
    assert event == {
        "event": "reply sent to SG.…0274 (parent SG.ENT.…7890)",
        "payload": {"sender": {"userId": "SG.…0274", "name": "Rachel Lim"}, "source": "SG.…0274"},
        "user_ids": [{"business_portfolio_id": "1234567890", "user_id": "SG.…0274"}],
        "to": ["SG.…0274", "…4567"],
    }
    assert "1349120865530274" not in json.dumps(event, ensure_ascii=False)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("username", "@rachel.homes", "@…omes"),
        ("lead_username", "rachel.homes", "…omes"),
        ("usernames", ["@rachel.homes", "@ra"], ["@…omes", "@…"]),
        ("user_id", "not-a-bsuid-123456", "…3456"),  # malformed, still someone's
    ],
)
def test_usernames_and_malformed_user_ids_keep_only_their_last_four(
    key: str, value: object, expected: object
) -> None:
    assert redacted(**{key: value}) == {key: expected}


def test_dotted_names_and_message_ids_are_not_taken_for_user_ids() -> None:
    event = {
        "logger": "services.dedup.handler",
        "message_id": "wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkQ1RTZGN0E4QjlDMEQxRTIA",
        "event": "Error in shared.logs at step ID",
    }
    assert redacted(**event) == event


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (WEBHOOK_URL, "https://bot.example.com/v1/webhooks/gupshup/[redacted]"),
        (
            f"{WEBHOOK_URL}?retry=1",
            "https://bot.example.com/v1/webhooks/gupshup/[redacted]?retry=1",
        ),
        (
            f"POST /v1/webhooks/gupshup/{CALLBACK_KEY} HTTP/1.1",
            "POST /v1/webhooks/gupshup/[redacted] HTTP/1.1",
        ),
        (
            f"callback '{WEBHOOK_URL}' failed",
            "callback 'https://bot.example.com/v1/webhooks/gupshup/[redacted]' failed",
        ),
    ],
)
def test_callback_key_in_webhook_urls_is_masked(text: str, expected: str) -> None:
    assert redacted(event=text, callback_url=text, path=[text]) == {
        "event": expected,
        "callback_url": expected,
        "path": [expected],
    }


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_context_but_no_secret_from_structlog_or_stdlib(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="INFO", fmt="json", service="outbound")
    structlog.contextvars.bind_contextvars(agent_id="agent-1", thread_id="thr-1")

    get_logger("tests.logs").warning(
        "gupshup send refused",
        api_key=SECRET,
        destination="6598887777",
        callback_url=WEBHOOK_URL,
        lead_user_id="SG.1349120865530274",
    )
    logging.getLogger("aiohttp.server").error(
        "Error handling request to /v1/webhooks/gupshup/%s", CALLBACK_KEY
    )
    try:
        raise RuntimeError(f"callback {WEBHOOK_URL} unreachable")
    except RuntimeError:
        logging.getLogger("tests.stdlib").exception("callback failed")

    err = capsys.readouterr().err
    assert SECRET not in err
    assert CALLBACK_KEY not in err
    assert "6598887777" not in err
    assert "1349120865530274" not in err
    structured, stdlib, failure = json_lines(err)
    assert structured["event"] == "gupshup send refused"
    assert structured["level"] == "warning"
    assert structured["service"] == "outbound"
    assert structured["agent_id"] == "agent-1" and structured["thread_id"] == "thr-1"
    assert structured["api_key"] == REDACTED
    assert structured["destination"] == "…7777"
    assert structured["lead_user_id"] == "SG.…0274"
    assert stdlib["event"] == "Error handling request to /v1/webhooks/gupshup/[redacted]"
    assert stdlib["level"] == "error" and stdlib["logger"] == "aiohttp.server"
    assert stdlib["agent_id"] == "agent-1"
    assert "RuntimeError" in failure["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_log_level_filters_lower_levels(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", fmt="json")
    log = get_logger("tests.level")
    log.info("routine detail")
    log.warning("needs attention")
    logging.getLogger("tests.stdlib").info("stdlib detail")
    events = [line["event"] for line in json_lines(capsys.readouterr().err)]
    assert events == ["needs attention"]
