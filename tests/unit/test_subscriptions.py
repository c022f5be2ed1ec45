"""What each stage consumes is derived from the models; a stage's table must cover it."""

from __future__ import annotations

import pytest

from shared.broker import STAGE_BINDINGS, Subscription, Subscriptions
from shared.models import (
    BillingEvent,
    DeliveryStatus,
    InboundMessage,
    SendCommand,
    TemplateEvent,
    ThreadWork,
    utcnow,
)


async def ignore(_event: object) -> None:
    """A handler that does nothing."""


def test_stage_bindings_are_the_kinds_each_stage_has_always_consumed() -> None:
    # Queue bindings are part of the deployed topology: a rolling update must find them.
    assert {stage: set(patterns) for stage, patterns in STAGE_BINDINGS.items()} == {
        "router": {"inbound.raw.*"},
        "dedup": {"inbound.message.*", "user.event.*"},
        "brain": {"thread.work.*"},
        "outbound": {
            "send.command.*",
            "delivery.status.*",
            "template.event.*",
            "billing.event.*",
        },
    }


def test_a_table_that_leaves_a_model_of_its_stage_unhandled_is_refused() -> None:
    with pytest.raises(ValueError, match="no handler for UserEvent"):
        Subscriptions(Subscription(InboundMessage, ignore))


def test_a_table_mixing_stages_is_refused() -> None:
    with pytest.raises(ValueError, match="one stage"):
        Subscriptions(Subscription(ThreadWork, ignore), Subscription(SendCommand, ignore))


async def test_each_message_reaches_the_handler_of_its_model_by_kind() -> None:
    seen: list[str] = []

    async def record(event: object) -> None:
        seen.append(type(event).__name__)

    table = Subscriptions(
        Subscription(SendCommand, ignore),
        Subscription(DeliveryStatus, record),
        Subscription(TemplateEvent, ignore),
        Subscription(BillingEvent, ignore),
    )
    assert table.stage == "outbound"
    status = table.adapter.validate_json(
        DeliveryStatus(
            event_id="e1", org_id="o", agent_id="a", status="sent", at=utcnow()
        ).model_dump_json()
    )
    await table.dispatch(status)
    assert seen == ["DeliveryStatus"]
