"""Outbound service: consumes send commands and provider events, calls Gupshup.

What outbound consumes is the table `wire` answers: one message model, one handler, each a
plain async method of the module that owns it (sending, statuses, provider_events); the
broker derives the queue's bindings and the parsing from the models. Every rule the
handlers apply is in `rules`, pure.
"""

from __future__ import annotations

from services.outbound.pacing import Pacer
from services.outbound.provider_events import ProviderEvents
from services.outbound.sending import Sending
from services.outbound.statuses import DeliveryStatuses
from shared.broker import Subscription, Subscriptions
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.models import BillingEvent, DeliveryStatus, SendCommand, TemplateEvent
from shared.replies import ReplyOutbox
from shared.repositories.agents import AgentDirectory
from shared.repositories.costs import CostRepository
from shared.repositories.rate_slots import AgentPauses, RateSlots
from shared.repositories.templates import TemplateRepository
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def wire(runtime: Runtime, key_ring: KeyRing, gupshup: GupshupClient) -> Subscriptions:
    """Outbound's handlers, by the model each one consumes (the service and its tests)."""
    store, settings = runtime.store, runtime.settings
    agents = AgentDirectory.for_store(store, settings)
    await runtime.broker.on_config_change(agents.forget)
    # One pacer per process: its per-agent turns order this process's sends; statuses use it
    # to pause an agent Gupshup throttled (pauses are in the store, seen by every replica).
    pacer = Pacer(RateSlots(store), AgentPauses(store), settings)
    sending = Sending(store, agents, pacer, key_ring, gupshup, settings)
    statuses = DeliveryStatuses(store, ReplyOutbox(store, runtime.broker), pacer, settings)
    provider = ProviderEvents(TemplateRepository(store), CostRepository(store))
    return Subscriptions(
        Subscription(SendCommand, sending.handle),
        Subscription(DeliveryStatus, statuses.handle),
        Subscription(TemplateEvent, provider.template_status),
        Subscription(BillingEvent, provider.billing),
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
