"""GupshupClient against the local Gupshup sandbox: every answer is classified for retries.

NotReached may be retried, Ambiguous must not be (the message may be out), Refused cannot
succeed on retry; what the sandbox lists as sent is what a lead would receive.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from sandbox import RunningSandbox
from shared.gupshup.client import (
    Ambiguous,
    GupshupClient,
    NotReached,
    Refused,
    SendResult,
    Submitted,
)
from tests.conftest import free_port, register_app

AGENT_NUMBER, LEAD = "6591110001", "6598887777"
API_KEY = "key-tan-homes"
TEXT = {"type": "text", "text": "Hi Rachel! I'm Mia, Jason's assistant. 😊"}


@pytest.fixture
async def app(sandbox: RunningSandbox, http: aiohttp.ClientSession) -> str:
    """A Gupshup app registered at the sandbox, private to the test."""
    name = f"TanHomes{uuid.uuid4().hex[:8]}"
    await register_app(
        http,
        sandbox,
        app=name,
        api_key=API_KEY,
        number=AGENT_NUMBER,
        callback_url="http://127.0.0.1:9/unused",
        format="v2",
    )
    return name


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[GupshupClient]:
    gupshup = GupshupClient(sandbox.base_url, timeout_seconds=2.0)
    yield gupshup
    await gupshup.close()


async def send(
    client: GupshupClient, app: str, *, api_key: str = API_KEY, destination: str = LEAD
) -> SendResult:
    return await client.send_session_message(
        api_key=api_key, app=app, source=AGENT_NUMBER, destination=destination, message=TEXT
    )


async def sent_messages(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, app: str
) -> list[dict[str, Any]]:
    async with http.get(f"{sandbox.base_url}/sandbox/v1/messages", params={"app": app}) as resp:
        assert resp.status == 200
        messages: list[dict[str, Any]] = await resp.json()
        return messages


async def inject_fault(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, app: str, mode: str, **extra: Any
) -> None:
    async with http.post(
        f"{sandbox.base_url}/sandbox/v1/faults",
        json={"app": app, "mode": mode, "count": 1, **extra},
    ) as response:
        assert response.status == 200, await response.text()


def requests_timed() -> float:
    return REGISTRY.get_sample_value("realtybot_gupshup_request_duration_seconds_count") or 0.0


async def test_text_send_is_submitted_with_the_message_id_the_sandbox_lists(
    client: GupshupClient, app: str, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    timed_before = requests_timed()

    result = await send(client, app)

    assert isinstance(result, Submitted)
    [sent] = await sent_messages(http, sandbox, app)
    assert sent["messageId"] == result.message_id
    assert sent["source"] == AGENT_NUMBER
    assert sent["destination"] == LEAD
    assert sent["type"] == "text"
    assert sent["text"] == TEXT["text"]
    assert requests_timed() == timed_before + 1


async def test_each_send_gets_its_own_message_id(
    client: GupshupClient, app: str, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    results = [await send(client, app) for _ in range(3)]
    listed = [message["messageId"] for message in await sent_messages(http, sandbox, app)]
    assert [r.message_id for r in results if isinstance(r, Submitted)] == listed
    assert len(set(listed)) == 3


@pytest.mark.parametrize(
    ("request_options", "refusal"),
    [
        ({"api_key": "not-the-key"}, Refused(401, "Authentication Failed")),
        ({"destination": "+65 9888"}, Refused(400, "Invalid Destination")),
    ],
    ids=["wrong-api-key", "invalid-destination"],
)
async def test_refused_send_carries_gupshups_status_and_reason_and_nothing_is_sent(
    client: GupshupClient,
    app: str,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    request_options: dict[str, str],
    refusal: Refused,
) -> None:
    result = await send(client, app, **request_options)
    assert result == refusal
    assert await sent_messages(http, sandbox, app) == []


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("429", NotReached("HTTP 429 Too Many Requests", throttled=True)),
        ("503", NotReached("HTTP 503 Service Unavailable")),
    ],
)
async def test_throttled_or_unavailable_is_not_reached_and_a_retry_sends_once(
    mode: str,
    reason: NotReached,
    client: GupshupClient,
    app: str,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    await inject_fault(http, sandbox, app, mode)

    assert await send(client, app) == reason
    assert await sent_messages(http, sandbox, app) == []

    retried = await send(client, app)
    assert isinstance(retried, Submitted)
    assert [m["messageId"] for m in await sent_messages(http, sandbox, app)] == [retried.message_id]


@pytest.mark.parametrize("accepted", [False, True], ids=["dropped", "sent-anyway"])
async def test_server_error_is_ambiguous_because_the_message_may_be_out(
    accepted: bool,
    client: GupshupClient,
    app: str,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
) -> None:
    await inject_fault(http, sandbox, app, "500", accept=accepted)

    assert await send(client, app) == Ambiguous("HTTP 500 Internal Server Error")
    # Gupshup may have sent it: the same 500 can hide a delivered message.
    assert len(await sent_messages(http, sandbox, app)) == (1 if accepted else 0)


async def test_timeout_is_ambiguous_and_the_client_does_not_wait_for_gupshup(
    app: str, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    await inject_fault(http, sandbox, app, "timeout", delay_ms=1000, accept=True)
    impatient = GupshupClient(sandbox.base_url, timeout_seconds=0.2)
    try:
        started = time.perf_counter()
        result = await send(impatient, app)
        elapsed = time.perf_counter() - started
    finally:
        await impatient.close()

    assert isinstance(result, Ambiguous)
    assert "after the request was sent" in result.reason
    assert elapsed < 0.8
    assert len(await sent_messages(http, sandbox, app)) == 1  # it did go out


async def test_closed_port_is_not_reached() -> None:
    gupshup = GupshupClient(f"http://127.0.0.1:{free_port()}", timeout_seconds=2.0)
    try:
        result = await send(gupshup, "AnyApp")
    finally:
        await gupshup.close()
    assert isinstance(result, NotReached)
    assert result.reason.startswith("cannot connect")


@pytest.fixture
def never_accepting_port() -> Iterator[int]:
    """A port whose accept queue is full: connections hang before any byte is sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, listener):
        sock.close()


async def test_connection_that_never_opens_is_not_reached(never_accepting_port: int) -> None:
    # A timeout before the request went out is safe to retry; calling it Ambiguous would
    # drop a reply that Gupshup never saw.
    gupshup = GupshupClient(f"http://127.0.0.1:{never_accepting_port}", timeout_seconds=0.3)
    try:
        result = await send(gupshup, "AnyApp")
    finally:
        await gupshup.close()
    assert isinstance(result, NotReached), result


class FakeGupshup:
    """Answers every send with a fixed raw response, for answers the sandbox never gives."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b""
        self.content_type = "application/json; charset=utf-8"
        app = web.Application()
        app.router.add_post("/wa/api/v1/msg", self._answer)
        self.server = TestServer(app)

    async def _answer(self, request: web.Request) -> web.Response:
        await request.post()
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": self.content_type}
        )


@pytest.fixture
async def fake_gupshup() -> AsyncIterator[FakeGupshup]:
    fake = FakeGupshup()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            202,
            json.dumps({"status": "submitted", "messageId": "m-202"}).encode(),
            Submitted("m-202"),
        ),
        # A stray undecodable byte must not hide an accepted message behind a crash.
        (200, b'{"status": "submitted", "messageId": "m-1", "note": "\xff"}', Submitted("m-1")),
        (200, b"<html>OK</html>", Ambiguous("HTTP 200 without a messageId")),
        (200, b'{"status": "submitted"}', Ambiguous("HTTP 200 without a messageId")),
        (502, b"Bad Gateway", NotReached("HTTP 502")),
        (
            504,
            b'{"status": "error", "message": "Gateway Timeout"}',
            Ambiguous("HTTP 504 Gateway Timeout"),
        ),
        (403, b"", Refused(403, "HTTP 403")),
    ],
    ids=["202", "undecodable-byte", "html", "no-message-id", "502", "504", "403-empty"],
)
async def test_unusual_answers_are_classified(
    status: int, body: bytes, expected: SendResult, fake_gupshup: FakeGupshup
) -> None:
    fake_gupshup.status, fake_gupshup.body = status, body
    gupshup = GupshupClient(str(fake_gupshup.server.make_url("/")), timeout_seconds=2.0)
    try:
        assert await send(gupshup, "AnyApp") == expected
    finally:
        await gupshup.close()


async def test_client_keeps_working_after_a_failed_request(
    client: GupshupClient, app: str, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    await inject_fault(http, sandbox, app, "503")
    results = await asyncio.gather(*(send(client, app) for _ in range(3)))
    assert sorted(type(r).__name__ for r in results) == ["NotReached", "Submitted", "Submitted"]
    assert len(await sent_messages(http, sandbox, app)) == 2
