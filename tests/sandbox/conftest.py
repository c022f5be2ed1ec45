"""Fixtures and helpers for the sandbox's tests: a fresh sandbox, a callback receiver, a client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox import RunningSandbox, start_sandbox

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gupshup"
APP, API_KEY, AGENT, LEAD = "TanHomesSG", "key-tan", "6591110001", "6598887777"
Http = aiohttp.ClientSession
APP_ID = "0b7c2a6e-2c1d-4e8a-9f10-3d5b7a9c1e22"


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
        return str(self.server.make_url("/cb"))

    async def _record(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.arrivals.append(asyncio.get_running_loop().time())
        return web.Response(status=self.status)

    def message_events(self) -> list[dict[str, Any]]:
        """The v2 delivery statuses received so far, as their `payload`s, in arrival order."""
        return [hook["payload"] for hook in self.received if hook.get("type") == "message-event"]


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox(port=0)
    yield running
    await running.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    await receiver.server.start_server()
    yield receiver
    await receiver.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds, polling; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def shape(value: Any) -> Any:
    """Keys and value types, recursively: what must match a fixture when the values differ."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


async def control(
    http: Http, sandbox: RunningSandbox, method: str, path: str, **body: Any
) -> tuple[int, Any]:
    async with http.request(method, sandbox.base_url + path, json=body or None) as response:
        return response.status, await response.json()


async def register(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, **extra: Any
) -> None:
    body = {"app": APP, "api_key": API_KEY, "number": AGENT, "callback_url": receiver.url, **extra}
    status, record = await control(http, sandbox, "POST", "/sandbox/v1/apps", **body)
    assert status == 200 and "api_key" not in record


async def send(
    http: Http,
    sandbox: RunningSandbox,
    *,
    apikey: str = API_KEY,
    destination: str = LEAD,
    message: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    status, _, body = await send_with_headers(
        http, sandbox, apikey=apikey, destination=destination, message=message, template=template
    )
    return status, body


async def send_with_headers(
    http: Http,
    sandbox: RunningSandbox,
    *,
    apikey: str = API_KEY,
    destination: str = LEAD,
    message: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """A session send (or a template send, given `template`) as the product makes it."""
    form = {"channel": "whatsapp", "source": AGENT, "destination": destination, "src.name": APP}
    if template is not None:
        form["template"], path = json.dumps(template), "/wa/api/v1/template/msg"
    else:
        form["message"] = json.dumps(message or {"type": "text", "text": "Hello Rachel"})
        path = "/wa/api/v1/msg"
    async with http.post(sandbox.base_url + path, data=form, headers={"apikey": apikey}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def post_status(
    http: Http, sandbox: RunningSandbox, message_id: str, status: str, **extra: Any
) -> Any:
    body = {"app": APP, "messageId": message_id, "status": status, **extra}
    code, answer = await control(http, sandbox, "POST", "/sandbox/v1/statuses", **body)
    assert code == 200
    return answer


async def listed(http: Http, sandbox: RunningSandbox, query: str) -> Any:
    async with http.get(f"{sandbox.base_url}/sandbox/v1/messages?{query}") as response:
        assert response.status == 200
        return await response.json()


async def partner_app_token(http: Http, sandbox: RunningSandbox, app_id: str = APP_ID) -> str:
    """Log in to the Partner API and fetch the app's token, as the product would."""
    partner = sandbox.base_url + "/partner"
    login = {"email": "ops@example.com", "password": "pw"}
    async with http.post(partner + "/account/login", data=login) as response:
        partner_token = (await response.json())["token"]
    async with http.get(
        f"{partner}/app/{app_id}/token", headers={"Authorization": partner_token}
    ) as response:
        token: str = (await response.json())["token"]["token"]
    return token


async def create_template(
    http: Http, sandbox: RunningSandbox, app_token: str, app_id: str = APP_ID, **fields: str
) -> tuple[int, Any]:
    """`POST /partner/app/{appId}/templates` with a valid viewing reminder, overridden by fields."""
    form = {
        "elementName": "viewing_reminder",
        "languageCode": "en",
        "category": "UTILITY",
        "templateType": "TEXT",
        "vertical": "Viewing reminder",
        "content": "Hi {{1}}, see you at {{2}} tomorrow.",
        "example": "Hi Rachel, see you at Tampines tomorrow.",
        **fields,
    }
    async with http.post(
        f"{sandbox.base_url}/partner/app/{app_id}/templates",
        data=form,
        headers={"Authorization": app_token},
    ) as response:
        return response.status, await response.json()


async def set_template_status(
    http: Http, sandbox: RunningSandbox, status: str, **body: Any
) -> tuple[int, Any]:
    """`POST /sandbox/v1/templates/status` for a template of APP."""
    return await control(
        http, sandbox, "POST", "/sandbox/v1/templates/status", app=APP, status=status, **body
    )
