"""The /healthz, /readyz and /metrics endpoints every service serves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


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


async def start_http(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float
) -> web.AppRunner:
    """Serve an application until the returned runner is cleaned up.

    Cleaning up stops accepting connections, then gives requests in progress up to
    `shutdown_timeout` seconds to finish before they are cancelled.
    """
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
