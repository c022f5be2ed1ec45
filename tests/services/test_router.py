"""Router: raw callbacks become typed events of a known organization and agent."""

from __future__ import annotations

from typing import Any

import pytest

from services.router import __main__ as router_main
from shared.broker import Broker
from shared.models import DeliveryStatus, InboundMessage, RawWebhook, UserEvent, utcnow
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import (
    LEAD_WA_ID,
    RunningService,
    ServiceRunner,
    Tenant,
    Tenants,
    fetch_event,
    gupshup_fixture,
)


@pytest.fixture
async def router(services: ServiceRunner, store: Store, settings: Settings) -> RunningService:
    """The router consuming its stage, wired as services/router/__main__.py wires it."""
    return await services.start("router", router_main.setup)


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent()


def raw_webhook(tenant: Tenant, body: dict[str, Any], event_id: str = "evt-1") -> RawWebhook:
    return RawWebhook(
        event_id=event_id,
        org_id=tenant.org_id,
        agent_id=tenant.agent_id,
        received_at=utcnow(),
        body=body,
    )


async def test_v3_text_becomes_an_inbound_message_of_the_agents_organization(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    await broker.publish(raw_webhook(tenant, gupshup_fixture("v3_text.json")), message_id="evt-1")
    message = await fetch_event(broker, "dedup", InboundMessage)
    assert message is not None
    assert message.org_id == tenant.org_id
    assert message.agent_id == tenant.agent_id
    assert message.lead_wa_id == LEAD_WA_ID
    assert message.lead_name == "Rachel Lim"
    assert message.type == "text"
    assert message.text == "Is the Tampines unit still available?"
    assert message.provider_message_id.startswith("wamid.")


async def test_status_callback_becomes_a_delivery_status_for_outbound(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    body = gupshup_fixture("v3_status_delivered.json")
    await broker.publish(raw_webhook(tenant, body), message_id="evt-1")
    status = await fetch_event(broker, "outbound", DeliveryStatus)
    assert status is not None
    assert status.org_id == tenant.org_id
    assert status.agent_id == tenant.agent_id
    assert status.status == "delivered"
    assert status.gupshup_message_id == "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
    assert (
        status.whatsapp_message_id == body["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    )


async def test_opt_out_user_event_goes_to_dedup(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    await broker.publish(
        raw_webhook(tenant, gupshup_fixture("v2_user_opted_out.json")), message_id="evt-1"
    )
    event = await fetch_event(broker, "dedup", UserEvent)
    assert event is not None
    assert (event.type, event.lead_wa_id, event.org_id) == ("opted-out", LEAD_WA_ID, tenant.org_id)


async def test_raw_event_of_an_unknown_agent_is_dead_lettered_with_the_reason(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    raw = raw_webhook(tenant, gupshup_fixture("v3_text.json")).model_copy(
        update={"agent_id": "agt_nobody"}
    )
    await broker.publish(raw, message_id="evt-1")
    dead = await broker.fetch(broker.topology.dead_letter_queue("router"), timeout=5)
    assert dead is not None
    reason = str(dead.headers["x-dead-reason"])
    assert "agt_nobody" in reason
    assert "agent" in reason.lower()
    assert RawWebhook.model_validate_json(dead.body).agent_id == "agt_nobody"
    assert await broker.queue_depth(broker.topology.queue("dedup")) == 0


async def test_raw_event_of_an_agent_of_another_organization_is_dead_lettered(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    raw = raw_webhook(tenant, gupshup_fixture("v3_text.json")).model_copy(
        update={"org_id": "org_someone_else"}
    )
    await broker.publish(raw, message_id="evt-1")
    dead = await broker.fetch(broker.topology.dead_letter_queue("router"), timeout=5)
    assert dead is not None
    assert tenant.agent_id in str(dead.headers["x-dead-reason"])
    assert await broker.queue_depth(broker.topology.queue("dedup")) == 0


async def test_platform_event_publishes_nothing(
    router: RunningService, broker: Broker, tenant: Tenant
) -> None:
    body = gupshup_fixture("v2_platform_connectivity_check.json")
    await broker.publish(raw_webhook(tenant, body), message_id="evt-1")
    await router.wait_for("ok", 1)
    for stage in ("dedup", "outbound", "brain"):
        assert await broker.queue_depth(broker.topology.queue(stage)) == 0, stage
    assert await broker.queue_depth(broker.topology.dead_letter_queue("router")) == 0
