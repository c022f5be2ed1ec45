"""Outbound service: consumes send commands and provider events, calls Gupshup.

What outbound consumes is the table in `handlers`: one message model, one handler, each a
plain async method of the module that owns it (sending, statuses, provider_events). Kept
from before: the service is thin here; every rule it applies is in `rules`, pure.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from services.outbound.pacing import Pacer
from services.outbound.provider_events import ProviderEvents
from services.outbound.sending import Sending
from services.outbound.statuses import DeliveryStatuses
from shared.broker import Broker
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
from shared.store import Store

Handler = Callable[[Any], Awaitable[None]]


def handlers(
    broker: Broker,
    store: Store,
    settings: Settings,
    *,
    agents: AgentDirectory,
    key_ring: KeyRing,
    gupshup: GupshupClient,
) -> dict[type[BaseModel], Handler]:
    """Outbound's subscriptions: each message model it consumes and the function handling it."""
    # One pacer per process: sends and statuses share its pauses, and its turns per agent.
    pacer = Pacer(RateSlots(store), AgentPauses(store), settings)
    sending = Sending(store, agents, pacer, key_ring, gupshup, settings)
    statuses = DeliveryStatuses(store, ReplyOutbox(store, broker), pacer, settings)
    provider = ProviderEvents(TemplateRepository(store), CostRepository(store))
    return {
        SendCommand: sending.handle,
        DeliveryStatus: statuses.handle,
        TemplateEvent: provider.template_status,
        BillingEvent: provider.billing,
    }


async def consume(broker: Broker, table: dict[type[BaseModel], Handler]) -> None:
    """Consume outbound's stage, each event going to the handler of its model."""
    union: Any = functools.reduce(operator.or_, table)
    adapter: TypeAdapter[BaseModel] = TypeAdapter(union)

    async def dispatch(event: BaseModel) -> None:
        await table[type(event)](event)

    await broker.consume("outbound", adapter, dispatch)


async def start(
    broker: Broker, store: Store, settings: Settings, key_ring: KeyRing, gupshup: GupshupClient
) -> None:
    """Build outbound on a connected broker and start consuming (the service and its tests)."""
    agents = AgentDirectory.for_store(store, settings)
    await broker.on_config_change(agents.forget)
    table = handlers(broker, store, settings, agents=agents, key_ring=key_ring, gupshup=gupshup)
    await consume(broker, table)


async def main(settings: Settings) -> None:
    """Run outbound until SIGTERM."""
    key_ring = KeyRing.from_settings(settings)
    gupshup = GupshupClient(str(settings.gupshup_base_url), settings.gupshup_timeout_seconds)

    async def setup(runtime: Runtime) -> None:
        await start(runtime.broker, runtime.store, settings, key_ring, gupshup)

    try:
        await run_consumer_service("outbound", settings, setup)
    finally:
        await gupshup.close()


if __name__ == "__main__":
    service_main("outbound", main)
