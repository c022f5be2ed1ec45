"""Outbound service: consumes send commands and provider events, calls Gupshup."""

from __future__ import annotations

from pydantic import TypeAdapter

from services.outbound.handler import Outbound, OutboundEvent
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.repositories.agents import AgentDirectory
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def main(settings: Settings) -> None:
    """Run outbound until SIGTERM."""
    key_ring = KeyRing.from_settings(settings)
    gupshup = GupshupClient(str(settings.gupshup_base_url), settings.gupshup_timeout_seconds)

    async def setup(runtime: Runtime) -> None:
        agents = AgentDirectory.for_store(runtime.store, settings)
        await runtime.broker.on_config_change(agents.forget)
        outbound = Outbound(runtime.broker, runtime.store, agents, key_ring, gupshup, settings)
        adapter: TypeAdapter[OutboundEvent] = TypeAdapter(OutboundEvent)
        await runtime.broker.consume("outbound", adapter, outbound.handle)

    try:
        await run_consumer_service("outbound", settings, setup)
    finally:
        await gupshup.close()


if __name__ == "__main__":
    service_main("outbound", main)
