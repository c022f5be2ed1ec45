"""Shared fixtures: settings pointing at the real local RabbitMQ and MongoDB-compatible server.

`make test` starts both when they are not running. Every test gets its own database name
and broker prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

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
