"""How a lead found the agent, read from the first message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.dedup.handler import first_touch_source
from shared.models import InboundMessage

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def message(text: str, referral: dict[str, Any] | None = None) -> InboundMessage:
    return InboundMessage(
        event_id="e1",
        org_id="org_1",
        agent_id="agt_1",
        provider_message_id="wamid.1",
        lead_wa_id="6598887777",
        type="text",
        text=text,
        referral=referral,
        sent_at=NOW,
        received_at=NOW,
    )


def test_click_to_whatsapp_ad_wins_and_keeps_its_referral() -> None:
    referral = {"source_id": "120208", "source_type": "ad", "headline": "Tampines EC"}
    assert first_touch_source(message("Hi #EXPO", referral)) == {
        "source": "ad",
        "referral": referral,
    }


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Hi, saw your flyer #TAMPINES24", "TAMPINES24"),
        ("code: ec2025 please", "EC2025"),
        ("ref PARC88, is it available?", "PARC88"),
        ("Promo=XMAS-2026", "XMAS-2026"),
    ],
)
def test_campaign_codes_in_the_first_message_are_attribution(text: str, code: str) -> None:
    assert first_touch_source(message(text)) == {"source": "campaign", "campaign_code": code}


@pytest.mark.parametrize(
    "text",
    [
        "Is unit #05-12 still available?",
        "What's the postal code 520123?",
        "with reference to the Bedok unit",
        "code for the gate?",
        "Hello",
    ],
)
def test_ordinary_messages_are_organic(text: str) -> None:
    assert first_touch_source(message(text)) == {"source": "organic"}
