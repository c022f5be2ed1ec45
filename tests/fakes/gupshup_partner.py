"""A local fake of Gupshup's Partner API for the calls onboarding makes, including the BSUID
configuration (`PUT /partner/app/{appId}/config/bsuid`) that the sandbox does not serve.

It answers login (`POST /partner/account/login`: token `partner-jwt`), app tokens
(`GET /partner/app/{appId}/token`, with the partner token: `app-jwt-1`, `app-jwt-2` ... one
new token per request), callback subscription (`POST /partner/app/{appId}/subscription`)
and the BSUID configuration, both with the latest app token (401 otherwise). Every call to
an app is recorded (`calls`: method, path, body, Authorization).

Usage:

    async with FakePartnerApi() as fake:
        fake.push(401, {"status": "error", "message": "Invalid token"})  # one-shot, in order
        fake.bsuid_answer = (500, {"status": "error", "message": "unavailable"})  # from then on
        client = PartnerClient(fake.base_url, "ops@example.com", "pw", 2.0)
        ...
        assert fake.bsuid_calls()[0].body == {"enableBSUID": True, "enableBSUIDV3": True}
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

PARTNER_TOKEN = "partner-jwt"
SUCCESS = (200, {"status": "success"})


@dataclass(frozen=True)
class PartnerCall:
    """One request to an app's Partner API route."""

    method: str
    path: str
    body: Any  # the JSON body, or the form as a dict
    authorization: str | None


class FakePartnerApi:
    """Gupshup's Partner API on a local port, for one test."""

    def __init__(self) -> None:
        self.calls: list[PartnerCall] = []
        self.bsuid_answer: tuple[int, dict[str, Any]] = SUCCESS
        self._pushed: deque[tuple[int, dict[str, Any]]] = deque()
        self._app_tokens: dict[str, str] = {}
        self._issued = 0
        app = web.Application()
        app.router.add_post("/partner/account/login", self._login)
        app.router.add_get("/partner/app/{app}/token", self._app_token)
        app.router.add_post("/partner/app/{app}/subscription", self._subscription)
        app.router.add_put("/partner/app/{app}/config/bsuid", self._bsuid)
        self._server = TestServer(app)

    async def __aenter__(self) -> FakePartnerApi:
        await self._server.start_server()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._server.close()

    @property
    def base_url(self) -> str:
        """The Partner API's base URL (without /partner)."""
        return str(self._server.make_url("")).rstrip("/")

    def push(self, status: int, answer: dict[str, Any]) -> None:
        """Answer the next BSUID configuration request so (then `bsuid_answer` again)."""
        self._pushed.append((status, answer))

    def bsuid_calls(self) -> list[PartnerCall]:
        """The BSUID configuration requests, oldest first."""
        return [call for call in self.calls if call.path.endswith("/config/bsuid")]

    async def _login(self, _request: web.Request) -> web.Response:
        return web.json_response({"token": PARTNER_TOKEN})

    async def _app_token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != PARTNER_TOKEN:
            return web.json_response({"status": "error", "message": "Unauthorized"}, status=401)
        self._issued += 1
        token = f"app-jwt-{self._issued}"
        self._app_tokens[request.match_info["app"]] = token
        return web.json_response({"token": {"token": token}})

    async def _recorded(self, request: web.Request) -> bool:
        """Record the call; whether it carries the app's latest token."""
        if request.content_type == "application/json":
            body: Any = await request.json()
        else:
            body = dict(await request.post())
        authorization = request.headers.get("Authorization")
        self.calls.append(PartnerCall(request.method, request.path, body, authorization))
        return authorization == self._app_tokens.get(request.match_info["app"])

    async def _subscription(self, request: web.Request) -> web.Response:
        if not await self._recorded(request):
            return web.json_response({"status": "error", "message": "Unauthorized"}, status=401)
        url = self.calls[-1].body.get("url") or "unset"
        subscription = {"id": "sub-1", "url": url, "version": 2, "modes": [], "tag": "realtybot"}
        return web.json_response({"status": "success", "subscription": subscription})

    async def _bsuid(self, request: web.Request) -> web.Response:
        if not await self._recorded(request):
            return web.json_response({"status": "error", "message": "Unauthorized"}, status=401)
        status, answer = self._pushed.popleft() if self._pushed else self.bsuid_answer
        return web.json_response(answer, status=status)
