"""The /healthz, /readyz and /metrics endpoints every service serves, and its HTTP server.

The server bounds what one client may take: request heads in size and in time (a client
that dribbles its headers, or idles, is disconnected), bodies in size (a declared length
over the limit is refused before anything is read) and in time. aiohttp has no limit on
concurrent connections, and a cap would let a flood of idle ones lock Gupshup out: the idle
timeout and the process's file limit bound them, and the event loop keeps answering
well-behaved clients among them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.logs import get_logger
from shared.metrics import HTTP_REFUSED
from shared.settings import Settings

log = get_logger(__name__)
ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_health_routes(
    app: web.Application, readiness: ReadinessCheck, stopping: asyncio.Event | None = None
) -> None:
    """Add liveness, readiness and metrics routes to an aiohttp application.

    Once `stopping` is set (SIGTERM), readiness answers 503 whatever the checks say, so load
    balancers stop sending work while the process still finishes what it has.
    """

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        if stopping is not None and stopping.is_set():
            return web.json_response({"status": "stopping"}, status=503)
        checks = await readiness()
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


@dataclass(frozen=True)
class HttpLimits:
    """What one client may take of a listener; the defaults are the settings' defaults."""

    idle_timeout_seconds: float = 75.0
    body_timeout_seconds: float = 30.0
    max_header_bytes: int = 8190
    max_headers: int = 64
    backlog: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits an operator configured (`HTTP_*`)."""
        return cls(
            idle_timeout_seconds=settings.http_idle_timeout_seconds,
            body_timeout_seconds=settings.http_body_timeout_seconds,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            backlog=settings.http_backlog,
        )


class BodyTooSlow(TimeoutError):
    """The request body did not arrive within the body timeout.

    A TimeoutError, so that aiohttp, draining what is left of the body after the answer,
    stops at once instead of logging it as an unexpected error.
    """


def _route(request: web.Request) -> str | None:
    """The matched route's template: paths may carry secrets (callback keys, tokens)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def body_limits(limits: HttpLimits) -> Middleware:
    """Middleware: refuse a declared body over the application's size limit before reading
    any of it (413), and answer 408 when a body has not arrived within the body timeout.

    Handlers read bodies as before; a body still incomplete at the deadline makes their read
    raise `BodyTooSlow`. Bodies without a declared length are bounded by aiohttp's read,
    which stops at the size limit. Both refusals are raised as HTTP errors, so that an
    application's own error middleware renders them; aiohttp then discards what is left of
    the body (for a few seconds at most) or closes the connection.
    """

    def expire(content: StreamReader) -> None:
        if not content.is_eof():
            content.set_exception(BodyTooSlow())

    @web.middleware
    async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        declared = request.content_length
        if declared is not None and declared > request.client_max_size:
            HTTP_REFUSED.labels("body_too_large").inc()
            log.warning(
                "request body over the size limit refused",
                route=_route(request),
                client=request.remote,
                size=declared,
            )
            raise web.HTTPRequestEntityTooLarge(
                max_size=request.client_max_size, actual_size=declared
            )
        if request.content.is_eof():  # no body, or all of it came with the head
            return await handler(request)
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(limits.body_timeout_seconds, expire, request.content)
        try:
            return await handler(request)
        except BodyTooSlow:
            HTTP_REFUSED.labels("body_timeout").inc()
            log.warning(
                "request body too slow: refused",
                route=_route(request),
                client=request.remote,
                seconds=limits.body_timeout_seconds,
            )
            raise web.HTTPRequestTimeout(text="request body too slow") from None
        finally:
            deadline.cancel()

    return bounded_body


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    limits: HttpLimits = HttpLimits(),
) -> web.AppRunner:
    """Serve an application until the returned runner is cleaned up, within `limits`.

    Adds the body-limits middleware to `app` (innermost, so the application's own error
    middleware still sees what handlers raise). Cleaning up stops accepting connections,
    then gives requests in progress up to `shutdown_timeout` seconds to finish before they
    are cancelled.
    """
    app.middlewares.append(body_limits(limits))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # aiohttp arms this timer when a connection opens and after each answer, and
        # closes the connection if no complete request head came meanwhile: it bounds
        # idle connections and slow headers alike.
        keepalive_timeout=limits.idle_timeout_seconds,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=limits.backlog).start()
    return runner
