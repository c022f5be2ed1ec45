"""Ingress: Gupshup webhooks in, raw events to the broker; the admin API beside it."""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin import create_admin_app
from services.ingress.webhooks import WEBHOOK_PATH, WebhookReceiver
from shared.broker import Broker
from shared.health import add_health_routes, start_http
from shared.logs import get_logger
from shared.repositories.agents import AgentDirectory, AgentRepository
from shared.service import service_main, wait_for_stop_signal
from shared.settings import Settings
from shared.store import Store

log = get_logger("services.ingress")


async def main(settings: Settings) -> None:
    """Serve webhooks and the admin API until SIGTERM."""
    broker = Broker(settings, "ingress")
    store = Store(settings)
    agents = AgentDirectory(
        AgentRepository(store), settings.agent_cache_seconds, settings.agent_negative_cache_seconds
    )

    async def readiness() -> dict[str, bool]:
        # Ingress keeps accepting known agents' webhooks while the store is down.
        return {"broker": broker.is_ready()}

    webhooks = web.Application(client_max_size=settings.webhook_max_body_bytes)
    webhooks.router.add_post(WEBHOOK_PATH, WebhookReceiver(broker, agents).receive)
    add_health_routes(webhooks, readiness)
    admin = create_admin_app(store)

    await broker.connect()
    await broker.declare_topology()
    public = await start_http(webhooks, settings.http_host, settings.ingress_port)
    internal = await start_http(admin, settings.http_host, settings.admin_port)
    log.info("service started", port=settings.ingress_port, admin_port=settings.admin_port)
    try:
        await wait_for_stop_signal()
        log.info("stopping: finishing in-flight requests")
    finally:
        await public.cleanup()  # stops accepting, waits for requests in progress
        await internal.cleanup()
        await broker.close()
        await store.close()
        log.info("service stopped")


if __name__ == "__main__":
    service_main("ingress", main)
