"""Dedup service: consumes routed messages and user events, publishes thread work."""

from __future__ import annotations

from services.dedup.handler import Dedup
from shared.broker import Subscription, Subscriptions
from shared.models import InboundMessage, UserEvent
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def setup(runtime: Runtime) -> Subscriptions:
    """Dedup's handlers, by the model each one consumes."""
    settings = runtime.settings
    dedup = Dedup(
        runtime.broker,
        runtime.store,
        settings.default_region,
        burst_quiet_seconds=settings.burst_quiet_seconds,
    )
    return Subscriptions(
        Subscription(InboundMessage, dedup.handle_message),
        Subscription(UserEvent, dedup.handle_user_event),
    )


async def main(settings: Settings) -> None:
    """Run dedup until SIGTERM."""
    await run_consumer_service("dedup", settings, setup)


if __name__ == "__main__":
    service_main("dedup", main)
