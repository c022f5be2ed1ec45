"""Ingress's public listener under hostile clients: huge heads, oversized and slow bodies,
slow headers and floods of idle connections are bounded, and webhooks keep being answered.

The webhook application is served by `start_http` exactly as the ingress service serves it,
with short limits, on a free loopback port; hostile clients are raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import REGISTRY

from services.ingress.webhooks import WEBHOOK_PATH, create_webhook_app
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.health import HttpLimits, start_http
from shared.repositories.agents import AgentDirectory
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import Tenant, Tenants, gupshup_fixture

LIMITS = HttpLimits(
    idle_timeout_seconds=1.0,
    body_timeout_seconds=1.0,
    max_header_bytes=4096,
    max_headers=32,
    backlog=1024,
)
# The most a bound may be overshot by: timers, a loaded machine.
SLACK_SECONDS = 1.5


@dataclass
class Listener:
    """The running public listener."""

    host: str
    port: int
    tenant: Tenant

    @property
    def webhook_path(self) -> str:
        """The tenant's callback path."""
        return WEBHOOK_PATH.format(agent_key=self.tenant.callback_key)

    @property
    def webhook_url(self) -> str:
        """The tenant's callback URL."""
        return f"http://{self.host}:{self.port}{self.webhook_path}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection, as a hostile client makes it."""
        return await asyncio.open_connection(self.host, self.port)


@pytest.fixture
async def listener(
    settings: Settings, store: Store, broker: Broker, tenants: Tenants
) -> AsyncIterator[Listener]:
    """The webhook application served as the ingress service serves it, with short limits."""
    own = Broker(settings, "ingress")
    await own.connect()
    app = create_webhook_app(
        settings, own, AgentDirectory.for_store(store, settings), KeyRing.from_settings(settings)
    )
    runner = await start_http(app, "127.0.0.1", 0, shutdown_timeout=1, limits=LIMITS)
    host, port = runner.addresses[0][:2]
    try:
        yield Listener(host, port, await tenants.agent())
    finally:
        await runner.cleanup()
        await own.close()


async def post_webhook(listener: Listener) -> tuple[int, float]:
    """A well-behaved webhook on its own connection: its status and how long it took."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(listener.webhook_url, json=gupshup_fixture("v2_text.json")) as response,
    ):
        return response.status, time.monotonic() - started


async def status_and_close(reader: asyncio.StreamReader, timeout: float) -> tuple[int, float]:
    """The status of the answer on a raw connection, and when the server closed it."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n")
        while await reader.read(65536):  # the rest of the answer, until the server closes
            pass
    return int(head.split()[1]), time.monotonic() - started


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> float:
    """Seconds until the server closed the connection (it answers nothing first)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while data := await reader.read(65536):
            raise AssertionError(f"the server answered instead of closing: {data[:80]!r}")
    return time.monotonic() - started


def refused(reason: str) -> float:
    """realtybot_http_refused_total{reason} now."""
    return REGISTRY.get_sample_value("realtybot_http_refused_total", {"reason": reason}) or 0.0


async def test_request_head_over_the_limits_is_400_and_the_connection_closed(
    listener: Listener,
) -> None:
    heads = {
        "a huge header": f"X-Padding: {'a' * 20_000}\r\n",
        "too many headers": "".join(f"X-Header-{n}: {n}\r\n" for n in range(100)),
        "a huge request line": "",
    }
    for what, extra in heads.items():
        path = "/healthz" + ("?" + "q" * 20_000 if what == "a huge request line" else "")
        reader, writer = await listener.connect()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: ingress\r\n{extra}\r\n".encode())
        status, _ = await status_and_close(reader, timeout=5)
        writer.close()
        assert status in (400, 431), f"{what}: {status}"
    assert (await post_webhook(listener))[0] == 200


async def test_declared_body_over_the_limit_is_413_before_it_is_sent(
    listener: Listener, settings: Settings
) -> None:
    before = refused("body_too_large")
    reader, writer = await listener.connect()
    # Only the head: a server that read the body first would wait for it and time out.
    writer.write(
        f"POST {listener.webhook_path} HTTP/1.1\r\nHost: ingress\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {100 * settings.webhook_max_body_bytes}\r\n\r\n".encode()
    )
    started = time.monotonic()
    async with asyncio.timeout(2 * LIMITS.body_timeout_seconds):
        head = await reader.readuntil(b"\r\n")
    assert int(head.split()[1]) == 413
    assert time.monotonic() - started < LIMITS.body_timeout_seconds
    assert refused("body_too_large") == before + 1
    writer.close()
    # The server still serves the next request.
    assert (await post_webhook(listener))[0] == 200


async def test_chunked_body_over_the_limit_is_413(listener: Listener, settings: Settings) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4 * settings.webhook_max_body_bytes // 65536):
            yield b"x" * 65536

    async with (
        aiohttp.ClientSession() as http,
        http.post(listener.webhook_url, data=chunks()) as response,
    ):
        assert response.status == 413
    assert (await post_webhook(listener))[0] == 200


async def test_slow_headers_are_cut_off_while_a_webhook_is_answered(listener: Listener) -> None:
    reader, writer = await listener.connect()
    writer.write(f"POST {listener.webhook_path} HTTP/1.1\r\n".encode())

    async def dribble() -> None:
        # One byte of a header every 100 ms: never a complete head, nor an oversized one.
        writer.write(b"X-Slow: ")
        for _ in range(200):
            await asyncio.sleep(0.1)
            if writer.is_closing():
                return
            writer.write(b"x")
            try:
                await writer.drain()
            except ConnectionError:
                return

    dribbling = asyncio.create_task(dribble())
    closed_after, (status, took) = await asyncio.gather(
        closed_within(reader, timeout=LIMITS.idle_timeout_seconds + SLACK_SECONDS + 5),
        post_webhook(listener),
    )
    dribbling.cancel()
    writer.close()
    assert closed_after <= LIMITS.idle_timeout_seconds + SLACK_SECONDS
    assert status == 200
    assert took < 2


async def test_slow_body_is_408_and_closed_while_a_webhook_is_answered(
    listener: Listener,
) -> None:
    before = refused("body_timeout")
    body = json.dumps(gupshup_fixture("v2_text.json")).encode()
    reader, writer = await listener.connect()
    writer.write(
        f"POST {listener.webhook_path} HTTP/1.1\r\nHost: ingress\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )

    async def dribble() -> None:
        for byte in body[10:-1]:  # never the last byte
            await asyncio.sleep(0.05)
            if writer.is_closing():
                return
            writer.write(bytes([byte]))

    dribbling = asyncio.create_task(dribble())
    (status, closed_after), (webhook_status, took) = await asyncio.gather(
        status_and_close(reader, timeout=LIMITS.body_timeout_seconds + SLACK_SECONDS + 5),
        post_webhook(listener),
    )
    dribbling.cancel()
    writer.close()
    assert status == 408
    assert closed_after <= LIMITS.body_timeout_seconds + SLACK_SECONDS
    assert refused("body_timeout") == before + 1
    assert webhook_status == 200
    assert took < 2


async def test_hundreds_of_idle_connections_do_not_delay_a_webhook(listener: Listener) -> None:
    opened = time.monotonic()
    connections = [await listener.connect() for _ in range(300)]
    # Half of them start a request and stop, the others say nothing at all.
    for _reader, writer in connections[::2]:
        writer.write(f"POST {listener.webhook_path} HTTP/1.1\r\nHost: ingress\r\n".encode())
    status, took = await post_webhook(listener)
    assert status == 200
    assert took < 2
    # The idle ones are closed once the idle timeout has passed.
    await asyncio.gather(
        *(
            closed_within(reader, timeout=LIMITS.idle_timeout_seconds + SLACK_SECONDS + 5)
            for reader, _ in connections
        )
    )
    assert time.monotonic() - opened <= LIMITS.idle_timeout_seconds + SLACK_SECONDS
    for _, writer in connections:
        writer.close()


def test_default_limits_are_the_settings_defaults() -> None:
    # Consumer services serve health and metrics with the defaults, ingress with settings.
    assert HttpLimits() == HttpLimits.from_settings(Settings.model_construct())


async def test_a_webhook_within_the_limits_is_answered_on_a_kept_alive_connection(
    listener: Listener,
) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(
                listener.webhook_url, json=gupshup_fixture("v2_text.json")
            ) as response:
                assert response.status == 200
