"""Router service: consumes raw webhooks, publishes typed events."""

from __future__ import annotations

from services.router.handler import Router
from shared.broker import Subscription, Subscriptions
from shared.models import RawWebhook
from shared.repositories.agents import AgentDirectory
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def setup(runtime: Runtime) -> Subscriptions:
    """The router's handlers, by the model each one consumes."""
    agents = AgentDirectory.for_store(runtime.store, runtime.settings)
    await runtime.broker.on_config_change(agents.forget)
    router = Router(runtime.broker, agents)
    return Subscriptions(Subscription(RawWebhook, router.handle))


async def main(settings: Settings) -> None:
    """Run the router until SIGTERM."""
    await run_consumer_service("router", settings, setup)


if __name__ == "__main__":
    service_main("router", main)
