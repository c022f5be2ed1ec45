"""Old and new versions of a message model side by side, as during a rolling update.

A field added to a v1 model (optional, with a default) must not break a consumer still on
the previous version of the model, which refuses unknown fields, nor the reverse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.broker import Broker
from shared.models import Bubble, Choice, InboundMessage, SendCommand, utcnow


class PreviousBubble(BaseModel):
    """Bubble as it was before list messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text", "template"] = "text"
    text: str
    template_id: str | None = None
    params: list[str] = []


class PreviousSendCommand(BaseModel):
    """SendCommand v1 as the outbound of the previous release knows it (no fallback)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    org_id: str
    agent_id: str
    kind: Literal["send.command.v1"] = "send.command.v1"
    command_id: str
    thread_id: str
    lead_id: str
    destination: str
    bubbles: list[PreviousBubble]
    created_at: datetime
    purpose: Literal["reply", "opt_out_confirmation"] = "reply"


def command(bubbles: list[Bubble] | None = None) -> SendCommand:
    return SendCommand(
        event_id="rpl_1",
        command_id="rpl_1",
        org_id="org_1",
        agent_id="agt_1",
        thread_id="thr_1",
        lead_id="lead_1",
        destination="+6591234567",
        bubbles=bubbles or [Bubble(text="Hi Rachel!")],
        created_at=utcnow(),
    )


async def test_a_new_producer_and_a_previous_consumer_agree(broker: Broker) -> None:
    await broker.publish(command(), message_id="rpl_1")
    message = await broker.fetch(broker.topology.queue("outbound"), timeout=5)
    assert message is not None
    previous = PreviousSendCommand.model_validate_json(message.body)
    assert previous.bubbles[0].text == "Hi Rachel!" and previous.kind == "send.command.v1"


async def test_a_previous_producer_and_a_new_consumer_agree(broker: Broker) -> None:
    old = PreviousSendCommand(
        event_id="rpl_2",
        org_id="org_1",
        agent_id="agt_1",
        command_id="rpl_2",
        thread_id="thr_1",
        lead_id="lead_1",
        destination="+6591234567",
        bubbles=[PreviousBubble(text="Hello")],
        created_at=utcnow(),
    )
    await broker.publish(old, message_id="rpl_2")
    message = await broker.fetch(broker.topology.queue("outbound"), timeout=5)
    assert message is not None
    new = SendCommand.model_validate_json(message.body)
    assert new.fallback == [] and new.bubbles[0].type == "text" and new.purpose == "reply"


async def test_a_new_field_in_use_is_refused_by_a_previous_consumer_not_misread(
    broker: Broker,
) -> None:
    # Using the new feature needs the new consumer: the old one refuses, it never guesses.
    listing = Bubble(type="list", text="Pick one", choices=[Choice(id="slot:0", title="Mon")])
    await broker.publish(command(bubbles=[listing]), message_id="rpl_3")
    message = await broker.fetch(broker.topology.queue("outbound"), timeout=5)
    assert message is not None
    try:
        PreviousSendCommand.model_validate_json(message.body)
    except ValueError:
        pass
    else:
        raise AssertionError("a previous consumer must not accept a list bubble")


class PreviousInboundMessage(BaseModel):
    """InboundMessage v1 as the dedup of the previous release knows it (leads by number only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    org_id: str
    agent_id: str
    kind: Literal["inbound.message.v1"] = "inbound.message.v1"
    provider_message_id: str
    lead_wa_id: str
    lead_name: str | None = None
    type: str
    text: str | None = None
    media: dict[str, object] | None = None
    location: dict[str, object] | None = None
    choice: dict[str, object] | None = None
    context_message_id: str | None = None
    context_gupshup_message_id: str | None = None
    referral: dict[str, object] | None = None
    sent_at: datetime
    received_at: datetime


def lead_message(**lead: str) -> InboundMessage:
    now = utcnow()
    return InboundMessage(
        event_id="evt_1",
        org_id="org_1",
        agent_id="agt_1",
        provider_message_id="wamid.1",
        lead_name="Rachel",
        type="text",
        text="Hi",
        sent_at=now,
        received_at=now,
        **lead,
    )


async def test_a_lead_message_by_number_crosses_releases_both_ways(broker: Broker) -> None:
    await broker.publish(lead_message(lead_wa_id="6591234567"), message_id="evt_1")
    message = await broker.fetch(broker.topology.queue("dedup"), timeout=5)
    assert message is not None
    assert PreviousInboundMessage.model_validate_json(message.body).lead_wa_id == "6591234567"

    old = PreviousInboundMessage.model_validate_json(message.body)
    await broker.publish(old, message_id="evt_2")
    message = await broker.fetch(broker.topology.queue("dedup"), timeout=5)
    assert message is not None
    new = InboundMessage.model_validate_json(message.body)
    assert (new.lead_wa_id, new.lead_user_id, new.shared_numbers) == ("6591234567", None, [])


async def test_a_lead_without_a_number_is_refused_by_a_previous_consumer_not_misread(
    broker: Broker,
) -> None:
    await broker.publish(lead_message(lead_user_id="SG.1349120865530274"), message_id="evt_3")
    message = await broker.fetch(broker.topology.queue("dedup"), timeout=5)
    assert message is not None
    try:
        PreviousInboundMessage.model_validate_json(message.body)
    except ValueError:
        pass
    else:
        raise AssertionError("a previous consumer must not take a user ID for a number")
