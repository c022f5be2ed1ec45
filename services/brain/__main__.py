"""Brain service: consumes thread work, publishes send commands; sends due follow-ups."""

from __future__ import annotations

from services.brain.handler import Brain
from services.brain.pipeline import engine_from
from services.brain.scheduler import Sweeper
from shared.broker import Subscription, Subscriptions
from shared.models import ThreadWork
from shared.repositories.agents import AgentDirectory
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def setup(runtime: Runtime) -> Subscriptions:
    """The brain's handler, and the sweeper that sends due follow-ups and reminders."""
    settings = runtime.settings
    agents = AgentDirectory.for_store(runtime.store, settings)
    await runtime.broker.on_config_change(agents.forget)
    brain = Brain(runtime.broker, runtime.store, agents, settings, engine_from(settings))
    sweeper = Sweeper(runtime.broker, runtime.store, agents, settings)
    sweeper.start()
    runtime.on_stop(lambda: sweeper.stop(settings.shutdown_grace_seconds))
    return Subscriptions(Subscription(ThreadWork, brain.handle))


async def main(settings: Settings) -> None:
    """Run the brain until SIGTERM."""
    await run_consumer_service("brain", settings, setup)


if __name__ == "__main__":
    service_main("brain", main)
