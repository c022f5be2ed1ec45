"""Dedup service: consumes routed messages and user events, publishes thread work."""

from __future__ import annotations

from pydantic import TypeAdapter

from services.dedup.handler import Dedup
from shared.models import InboundMessage, UserEvent
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def setup(runtime: Runtime) -> None:
    """Start consuming the dedup queue."""
    settings = runtime.settings
    dedup = Dedup(
        runtime.broker,
        runtime.store,
        settings.default_region,
        burst_quiet_seconds=settings.burst_quiet_seconds,
    )
    adapter: TypeAdapter[InboundMessage | UserEvent] = TypeAdapter(InboundMessage | UserEvent)
    await runtime.broker.consume("dedup", adapter, dedup.handle)


async def main(settings: Settings) -> None:
    """Run dedup until SIGTERM."""
    await run_consumer_service("dedup", settings, setup)


if __name__ == "__main__":
    service_main("dedup", main)
