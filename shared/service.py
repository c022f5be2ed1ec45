"""Start-up and graceful shutdown shared by the consumer services."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shared.broker import Broker
from shared.health import add_health_routes, start_http
from shared.logs import configure_logging, get_logger
from shared.settings import ConfigError, Settings, load_settings
from shared.store import Store

log = get_logger(__name__)


@dataclass
class Runtime:
    """What a running service holds: its settings, broker connection and store."""

    name: str
    settings: Settings
    broker: Broker
    store: Store

    async def readiness(self) -> dict[str, bool]:
        """The broker and the store are both usable."""
        try:
            store_ok = await asyncio.wait_for(self.store.ping(), timeout=2)
        except TimeoutError:
            store_ok = False
        return {"broker": self.broker.is_ready(), "store": store_ok}


Setup = Callable[[Runtime], Awaitable[None]]


async def wait_for_stop_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_consumer_service(name: str, settings: Settings, setup: Setup) -> None:
    """Serve health and metrics, connect, let `setup` start consuming, stop on a signal."""
    runtime = Runtime(name, settings, Broker(settings, name), Store(settings))
    app = web.Application()
    add_health_routes(app, runtime.readiness)
    http = await start_http(app, settings.http_host, settings.service_port(name))
    try:
        await runtime.broker.connect()
        await runtime.broker.declare_topology()
        await setup(runtime)
        log.info("service started", port=settings.service_port(name))
        await wait_for_stop_signal()
        log.info("stopping: finishing in-flight messages")
        await runtime.broker.stop_consuming(settings.shutdown_grace_seconds)
    finally:
        await runtime.broker.close()
        await runtime.store.close()
        await http.cleanup()
        log.info("service stopped")


def service_main(name: str, main: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Entry point of `python -m services.<name>`: settings, logging, run, exit codes."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format, service=name)
    asyncio.run(main(settings))
