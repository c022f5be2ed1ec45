"""Onboarding's pure parts: the callback URL and an agent's numbers."""

from __future__ import annotations

import pytest

from shared.onboarding import InvalidAgentNumber, agent_phone, callback_url
from tests.conftest import make_settings


def test_callback_url_joins_the_public_base_url_and_the_key() -> None:
    settings = make_settings(public_base_url="https://bot.example.com/")
    assert callback_url(settings, "cbk_1") == "https://bot.example.com/v1/webhooks/gupshup/cbk_1"


def test_an_agents_number_is_read_in_the_organizations_region() -> None:
    assert agent_phone("9123 4567", "number", "SG") == "+6591234567"


def test_an_invalid_number_names_its_field() -> None:
    with pytest.raises(InvalidAgentNumber) as raised:
        agent_phone("12", "notify_number", "SG")
    assert raised.value.field == "notify_number"
