"""Helpers for the sandbox's tests: the app they register, sends as the product makes them,
templates and statuses (the sandbox, the callback receiver and the HTTP session are the
shared fixtures of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from sandbox import RunningSandbox
from tests.conftest import CallbackReceiver, control, register_app

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gupshup"
APP, API_KEY, AGENT, LEAD = "TanHomesSG", "key-tan", "6591110001", "6598887777"
Http = aiohttp.ClientSession
APP_ID = "0b7c2a6e-2c1d-4e8a-9f10-3d5b7a9c1e22"


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


async def register(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, **extra: Any
) -> None:
    body = {"app": APP, "api_key": API_KEY, "number": AGENT, "callback_url": receiver.url, **extra}
    record = await register_app(http, sandbox, **body)
    assert "api_key" not in record


async def send(http: Http, sandbox: RunningSandbox, **options: Any) -> tuple[int, Any]:
    """`send_with_headers` (same options) without the headers: the status and the answer."""
    status, _, body = await send_with_headers(http, sandbox, **options)
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


async def approved_template(
    http: Http, sandbox: RunningSandbox, app_token: str, **fields: str
) -> str:
    """An APPROVED template of APP (the viewing reminder of `create_template`, overridden by
    `fields`); its id."""
    _, created = await create_template(http, sandbox, app_token, **fields)
    template_id: str = created["template"]["id"]
    status, _ = await set_template_status(http, sandbox, "APPROVED", template_id=template_id)
    assert status == 200
    return template_id


async def set_template_status(
    http: Http, sandbox: RunningSandbox, status: str, **body: Any
) -> tuple[int, Any]:
    """`POST /sandbox/v1/templates/status` for a template of APP."""
    return await control(
        http, sandbox, "POST", "/sandbox/v1/templates/status", app=APP, status=status, **body
    )
