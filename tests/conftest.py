"""Shared fixtures: settings pointing at the real local RabbitMQ and MongoDB-compatible server.

`make test` starts both when they are not running. Every test gets its own database name
and broker prefix, so tests never see each other's data. A test that talks to Gupshup gets
a fresh in-process sandbox (`sandbox`), an HTTP session (`http`) and a callback server
standing in for ingress (`receiver`); `control` and `register_app` call the sandbox's
control API.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox import RunningSandbox, start_sandbox
from shared.broker import Broker
from shared.clock import Clock, frozen_at
from shared.models import utcnow
from shared.quiet_hours import QuietHours
from shared.settings import Settings
from shared.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
TEST_KEY_RING = "test-1:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="  # 32 bytes


def unique_name(prefix: str) -> str:
    """A short unique name for per-test databases and broker prefixes."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def quiet_hours_away_from_now(timezone: str = "Asia/Singapore") -> QuietHours:
    """Quiet hours from two to three hours from now: business-initiated sends go at once."""
    local = utcnow().astimezone(ZoneInfo(timezone))
    start, end = local + timedelta(hours=2), local + timedelta(hours=3)
    return QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}")


def quiet_hours_around_now(timezone: str = "Asia/Singapore") -> QuietHours:
    """Quiet hours from an hour ago to an hour from now: business-initiated sends wait."""
    local = utcnow().astimezone(ZoneInfo(timezone))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    return QuietHours(start=f"{start:%H:%M}", end=f"{end:%H:%M}")


def make_settings(**overrides: object) -> Settings:
    """Settings for a test: real servers, private names, short delays."""
    values: dict[str, object] = {
        "amqp_url": os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        "mongodb_url": os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017"),
        "mongodb_db": unique_name("t_"),
        "broker_prefix": unique_name("t."),
        "credentials_keys": TEST_KEY_RING,
        "retry_delays_ms": [100, 200],
        "lease_busy_retry_ms": 50,
        "lead_pause_seconds": 0.02,
        "ambiguous_resolve_seconds": 1.5,
        "burst_quiet_seconds": 0,
        "gupshup_backoff_base_seconds": 0.1,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Private settings for one test (overrides: parametrize `settings` indirectly)."""
    return make_settings(**getattr(request, "param", {}))


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The platform's clock, frozen for the test: it sets the instant and moves it."""
    with frozen_at(datetime(2026, 1, 1, tzinfo=UTC)) as frozen:
        yield frozen


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """A migrated private database, dropped afterwards."""
    store = Store(settings)
    await store.migrate()
    yield store
    await store.client.drop_database(settings.mongodb_db)
    await store.close()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    """A connected broker with the test's own topology, deleted afterwards."""
    broker = Broker(settings, "test")
    await broker.connect()
    await broker.declare_topology()
    yield broker
    await broker.delete_topology()
    await broker.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CallbackReceiver:
    """Stands in for our ingress: records every webhook and answers `status`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        # Event-loop time of each webhook's arrival, parallel to `received`.
        self.arrivals: list[float] = []
        self.status = 200
        self.server = TestServer(web.Application())
        self.server.app.router.add_post("/cb", self._record)

    @property
    def url(self) -> str:
        """Where the sandbox should post callbacks."""
        return str(self.server.make_url("/cb"))

    async def _record(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.arrivals.append(asyncio.get_running_loop().time())
        return web.Response(status=self.status)

    def message_events(self) -> list[dict[str, Any]]:
        """The v2 delivery statuses received so far, as their `payload`s, in arrival order."""
        return [hook["payload"] for hook in self.received if hook.get("type") == "message-event"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    """A fresh Gupshup sandbox on a free port, with no apps."""
    running = await start_sandbox(port=0)
    yield running
    await running.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    """A running callback server, stopped after the test."""
    receiver = CallbackReceiver()
    await receiver.server.start_server()
    yield receiver
    await receiver.server.close()


async def control(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, method: str, path: str, **body: Any
) -> tuple[int, Any]:
    """Call the sandbox's control API; the status and the JSON answer."""
    async with http.request(method, sandbox.base_url + path, json=body or None) as response:
        return response.status, await response.json()


async def register_app(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, **registration: Any
) -> Any:
    """Register (or replace) a Gupshup app at the sandbox; the app's record as it answers."""
    status, record = await control(http, sandbox, "POST", "/sandbox/v1/apps", **registration)
    assert status == 200, record
    return record
