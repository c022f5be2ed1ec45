"""Start-up and graceful shutdown shared by the consumer services."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvloop
from aiohttp import web

from shared.broker import Broker, Subscriptions
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
    # What the service started besides its consumers, stopped first on shutdown (newest first).
    stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_stop(self, stopper: Callable[[], Awaitable[None]]) -> None:
        """Run `stopper` on shutdown, before consuming stops and the connections close."""
        self.stoppers.append(stopper)

    async def stop_background(self) -> None:
        """Stop what `on_stop` registered (each once)."""
        while self.stoppers:
            stopper = self.stoppers.pop()
            try:
                await stopper()
            except Exception as exc:
                log.error("stopping a background task failed", error=str(exc), exc_info=exc)

    async def readiness(self) -> dict[str, bool]:
        """The broker and the store are both usable."""
        try:
            store_ok = await asyncio.wait_for(self.store.ping(), timeout=2)
        except TimeoutError:
            store_ok = False
        return {"broker": self.broker.is_ready(), "store": store_ok}


# Builds a stage's handlers from the runtime and answers its table of subscriptions.
Setup = Callable[[Runtime], Awaitable[Subscriptions]]


def stop_requested() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(stop: asyncio.Event, starting: Awaitable[None]) -> bool:
    """Run the start-up unless a stop comes first; True when it finished."""
    start = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start
        return False
    stopped.cancel()
    start.result()  # start-up errors end the process
    return True


async def run_consumer_service(name: str, settings: Settings, setup: Setup) -> None:
    """Serve health and metrics, connect (waiting for the broker), consume, stop on a signal."""
    stop = stop_requested()
    runtime = Runtime(name, settings, Broker(settings, name), Store(settings))
    app = web.Application()
    add_health_routes(app, runtime.readiness, stopping=stop)
    http = await start_http(
        app,
        settings.http_host,
        settings.service_port(name),
        shutdown_timeout=settings.shutdown_grace_seconds,
    )

    async def start() -> None:
        await runtime.broker.connect(wait=True)
        await runtime.broker.declare_topology()
        await runtime.broker.consume(await setup(runtime))

    try:
        if await until_stopped(stop, start()):
            log.info("service started", port=settings.service_port(name))
            await stop.wait()
            log.info("stopping: finishing in-flight messages")
            await runtime.stop_background()
            await runtime.broker.stop_consuming(settings.shutdown_grace_seconds)
    finally:
        await runtime.stop_background()
        await runtime.broker.close()
        await runtime.store.close()
        await http.cleanup()
        log.info("service stopped")


def service_main(name: str, main: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Entry point of `python -m services.<name>`: settings, logging, run, exit codes."""
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format, service=name)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(settings))
    except ConfigError as exc:  # also what a service checks itself (its key ring, say)
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
