"""Brain service: consumes thread work, publishes send commands; sends due follow-ups.

What it does, one hop away: `reply.handler.Brain.handle` answers a thread's work item;
`followups.sweeper.Sweeper` sends due follow-ups and reminders.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from services.brain.followups.sweeper import Sweeper
from services.brain.reply.handler import Brain
from services.brain.reply.pipeline import engine_from
from shared.models import ThreadWork
from shared.repositories.agents import AgentDirectory
from shared.service import Runtime, run_consumer_service, service_main
from shared.settings import Settings


async def setup(runtime: Runtime) -> None:
    """Start consuming the brain's queue and sweeping for due follow-ups and reminders."""
    settings = runtime.settings
    agents = AgentDirectory.for_store(runtime.store, settings)
    await runtime.broker.on_config_change(agents.forget)
    brain = Brain(runtime.broker, runtime.store, agents, settings, engine_from(settings))
    await runtime.broker.consume("brain", TypeAdapter(ThreadWork), brain.handle)
    sweeper = Sweeper(runtime.broker, runtime.store, agents, settings)
    sweeper.start()
    runtime.on_stop(lambda: sweeper.stop(settings.shutdown_grace_seconds))


async def main(settings: Settings) -> None:
    """Run the brain until SIGTERM."""
    await run_consumer_service("brain", settings, setup)


if __name__ == "__main__":
    service_main("brain", main)
