"""The admin API locks out a client address that keeps presenting wrong keys.

The admin application is served by `start_http` as the ingress service serves it, on a free
loopback port, with a lockout of three failures and one second. Clients come from 127.0.0.1
and, as "another address", from 127.0.0.2 (Linux routes all of 127/8 to loopback).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import LogCapture

from services.ingress.admin import create_admin_app, framework
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.health import start_http
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.settings import Settings
from shared.store import Store

MAX_FAILURES = 3
LOCKOUT_SECONDS = 1.0
pytestmark = pytest.mark.parametrize(
    "settings",
    [{"admin_auth_max_failures": MAX_FAILURES, "admin_auth_lockout_seconds": LOCKOUT_SECONDS}],
    indirect=True,
)
WRONG_KEY = "rbk_this-key-was-never-issued-0123456789"


@dataclass
class Admin:
    """The running admin listener and an organization's right key."""

    url: str
    key: str

    async def get(
        self, key: str, *, source: str = "127.0.0.1", path: str = "/v1/organization"
    ) -> tuple[int, dict[str, str], Any]:
        """GET with a bearer key from a source address: status, headers, JSON body."""
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(self.url + path, headers={"Authorization": f"Bearer {key}"}) as response,
        ):
            return response.status, dict(response.headers), await response.json()


@pytest.fixture
async def admin(settings: Settings, store: Store) -> AsyncIterator[Admin]:
    """The admin application as the ingress service serves it."""
    app = create_admin_app(
        settings, store, Broker(settings, "ingress"), KeyRing.from_settings(settings)
    )
    runner = await start_http(app, "127.0.0.1", 0, shutdown_timeout=1)
    host, port = runner.addresses[0][:2]
    _org, key = await OrganizationRepository(store).create("Lockout Realty", OrganizationSettings())
    try:
        yield Admin(f"http://{host}:{port}", key)
    finally:
        await runner.cleanup()


def failures(reason: str) -> float:
    """realtybot_admin_auth_failures_total{reason} now."""
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("realtybot_admin_auth_failures_total", labels) or 0.0


async def test_wrong_keys_lock_the_address_out_then_the_lockout_expires(admin: Admin) -> None:
    unknown_before, locked_before = failures("unknown_key"), failures("locked_out")
    assert (await admin.get(admin.key))[0] == 200
    for _ in range(MAX_FAILURES):
        status, _, body = await admin.get(WRONG_KEY)
        assert status == 401, body
    assert failures("unknown_key") == unknown_before + MAX_FAILURES

    # Locked out: a wrong key and the right one alike, with a Retry-After.
    for key in (WRONG_KEY, admin.key):
        status, headers, body = await admin.get(key)
        assert status == 429, body
        assert body["error"]["code"] == "too_many_failures"
        assert 1 <= int(headers["Retry-After"]) <= LOCKOUT_SECONDS + 1
    assert failures("locked_out") == locked_before + 2

    # Another address is not affected.
    status, _, _ = await admin.get(admin.key, source="127.0.0.2")
    assert status == 200

    # Once the lockout has passed, the right key works again.
    await asyncio.sleep(LOCKOUT_SECONDS + 0.1)
    status, _, body = await admin.get(admin.key)
    assert status == 200, body


async def test_successful_requests_are_not_slowed_or_counted(admin: Admin) -> None:
    for _ in range(5 * MAX_FAILURES):
        assert (await admin.get(admin.key))[0] == 200
    # Fewer wrong keys than the limit, between right ones, lock nothing out.
    for _ in range(MAX_FAILURES - 1):
        assert (await admin.get(WRONG_KEY))[0] == 401
    assert (await admin.get(admin.key))[0] == 200


async def test_public_routes_are_served_to_a_locked_out_address(admin: Admin) -> None:
    for _ in range(MAX_FAILURES):
        await admin.get(WRONG_KEY)
    assert (await admin.get(admin.key))[0] == 429
    status, _, spec = await admin.get("", path="/v1/openapi.json")
    assert status == 200
    assert spec["openapi"].startswith("3.")


async def test_failed_attempts_are_logged_without_the_key(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the code hands the logger, before any redaction could hide a mistake.
    captured = LogCapture()
    monkeypatch.setattr(framework, "log", structlog.wrap_logger(None, processors=[captured]))
    for _ in range(MAX_FAILURES):
        await admin.get(WRONG_KEY)
    logged = [e for e in captured.entries if e["event"] == "admin authentication failed"]
    assert len(logged) == MAX_FAILURES
    assert logged[-1]["locked_out"] is True
    assert logged[-1]["client"] == "127.0.0.1"
    text = json.dumps(captured.entries, default=str)
    assert WRONG_KEY not in text
    assert WRONG_KEY[4:20] not in text
