"""Outbound service: consumes send commands and provider events, calls Gupshup."""

from __future__ import annotations

from services.outbound.handler import Outbound
from shared.broker import Subscription, Subscriptions
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.models import BillingEvent, DeliveryStatus, SendCommand, TemplateEvent
from shared.repositories.agents import AgentDirectory
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def wire(runtime: Runtime, key_ring: KeyRing, gupshup: GupshupClient) -> Subscriptions:
    """Outbound's handlers, by the model each one consumes."""
    agents = AgentDirectory.for_store(runtime.store, runtime.settings)
    await runtime.broker.on_config_change(agents.forget)
    outbound = Outbound(runtime.broker, runtime.store, agents, key_ring, gupshup, runtime.settings)
    return Subscriptions(
        Subscription(SendCommand, outbound.send),
        Subscription(DeliveryStatus, outbound.record_status),
        Subscription(TemplateEvent, outbound.record_template),
        Subscription(BillingEvent, outbound.record_billing),
    )


async def main(settings: Settings) -> None:
    """Run outbound until SIGTERM."""
    key_ring = KeyRing.from_settings(settings)
    gupshup = GupshupClient(str(settings.gupshup_base_url), settings.gupshup_timeout_seconds)

    async def setup(runtime: Runtime) -> Subscriptions:
        return await wire(runtime, key_ring, gupshup)

    try:
        await run_consumer_service("outbound", settings, setup)
    finally:
        await gupshup.close()


if __name__ == "__main__":
    service_main("outbound", main)
