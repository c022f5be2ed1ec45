"""Ingress: Gupshup webhooks in, raw events to the broker; the admin API beside it."""

from __future__ import annotations

import asyncio

from services.ingress.admin import create_admin_app
from services.ingress.calendar import add_calendar_route
from services.ingress.webhooks import create_webhook_app
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.partner import partner_from_settings
from shared.health import HttpLimits, start_http
from shared.logs import get_logger
from shared.repositories.agents import AgentDirectory
from shared.repositories.appointments import AppointmentRepository
from shared.service import service_main, stop_requested, until_stopped
from shared.settings import Settings
from shared.store import Store

log = get_logger("services.ingress")


async def main(settings: Settings) -> None:
    """Serve webhooks and the admin API until SIGTERM, then drain and stop."""
    key_ring = KeyRing.from_settings(settings)  # first: without it there is nothing to start
    stop = stop_requested()
    broker = Broker(settings, "ingress")
    store = Store(settings)
    agents = AgentDirectory.for_store(store, settings)
    webhooks = create_webhook_app(settings, broker, agents, key_ring, stopping=stop)
    add_calendar_route(webhooks, AppointmentRepository(store), agents)  # leads' calendar links
    partner = partner_from_settings(settings)
    admin = create_admin_app(settings, store, broker, key_ring, partner)

    grace = settings.shutdown_grace_seconds
    limits = HttpLimits.from_settings(settings)
    public = await start_http(
        webhooks, settings.http_host, settings.ingress_port, shutdown_timeout=grace, limits=limits
    )
    internal = await start_http(
        admin, settings.http_host, settings.admin_port, shutdown_timeout=grace, limits=limits
    )

    async def connect() -> None:
        # Until the broker answers, webhooks get 503 and Gupshup retries them.
        await broker.connect(wait=True)
        await broker.declare_topology()
        await broker.on_config_change(agents.forget)

    log.info("service started", port=settings.ingress_port, admin_port=settings.admin_port)
    try:
        if await until_stopped(stop, connect()):
            log.info("connected to the broker")
            await stop.wait()
            # /readyz answers 503 from now on, while webhooks are still served: load
            # balancers stop sending new ones before the listener goes away.
            log.info("stopping: not ready any more", drain_seconds=settings.ingress_drain_seconds)
            await asyncio.sleep(settings.ingress_drain_seconds)
        log.info("stopping: finishing in-flight requests", grace_seconds=grace)
    finally:
        # Both listeners stop accepting at once and wait (up to the grace) for requests in
        # progress; the broker stays open until then, so those still get their confirms.
        await asyncio.gather(public.cleanup(), internal.cleanup())
        await broker.close()
        await store.close()
        if partner is not None:
            await partner.close()
        log.info("service stopped")


if __name__ == "__main__":
    service_main("ingress", main)
