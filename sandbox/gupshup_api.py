"""Gupshup's own endpoints as the product calls them: session and template sends, Partner API."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from sandbox.state import (
    HTTP_KEY,
    STATE_KEY,
    ErrorResponse,
    Fault,
    RegisteredApp,
    SentMessage,
    new_whatsapp_id,
    now_ms,
    utc_now,
)
from sandbox.webhooks import emit_auto_statuses

DIGITS = re.compile(r"\d{6,15}")
FAULT_ANSWERS = {
    "429": (429, "Too Many Requests"),
    "500": (500, "Internal Server Error"),
    "503": (503, "Service Unavailable"),
    "timeout": (504, "Gateway Timeout"),
}


async def send_session_message(request: web.Request) -> web.Response:
    """`POST /wa/api/v1/msg`: a free-form message in the `message` form field."""
    return await _send(request, is_template=False)


async def send_template_message(request: web.Request) -> web.Response:
    """`POST /wa/api/v1/template/msg`: a template message in the `template` form field."""
    return await _send(request, is_template=True)


async def _send(request: web.Request, *, is_template: bool) -> web.Response:
    arrived = utc_now()
    state = request.app[STATE_KEY]
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    app = state.apps.get(form.get("src.name", ""))
    if app is None or request.headers.get("apikey") != app.api_key:
        raise ErrorResponse(401, "Authentication Failed")
    sent = _parse_send(app, form, is_template, arrived)
    # Faults only hit well-formed requests, so a test's fault budget is spent where it expects.
    fault = state.take_fault(app.name)
    if fault is not None:
        if fault.accept and fault.mode != "429":
            _accept(request, app, sent)
        return await _answer_fault(fault)
    _accept(request, app, sent)
    return web.json_response({"status": "submitted", "messageId": sent.message_id})


def _parse_send(
    app: RegisteredApp, form: dict[str, str], is_template: bool, arrived: datetime
) -> SentMessage:
    if form.get("channel") != "whatsapp":
        raise ErrorResponse(400, "Invalid Channel")
    if form.get("source") != app.number:
        raise ErrorResponse(400, "Invalid Source")
    destination = form.get("destination", "")
    if not DIGITS.fullmatch(destination):
        raise ErrorResponse(400, "Invalid Destination")
    template: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    if is_template:
        template = _json_object(form.get("template"), "Invalid Template")
        if "id" not in template:
            raise ErrorResponse(400, "Invalid Template")
        # A template with a media header also carries that media as `message`.
        if "message" in form:
            message = _json_object(form["message"], "Invalid Message")
        kind = "template"
    else:
        message = _json_object(form.get("message"), "Invalid Message")
        kind = message.get("type", "")
        if not isinstance(kind, str) or not kind:
            raise ErrorResponse(400, "Invalid Message")
    return SentMessage(
        message_id=str(uuid.uuid4()),
        whatsapp_id=new_whatsapp_id(),
        source=app.number,
        destination=destination,
        type=kind,
        message=message,
        template=template,
        at=arrived,
    )


def _json_object(text: str | None, error: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError:
        raise ErrorResponse(400, error) from None
    if not isinstance(value, dict):
        raise ErrorResponse(400, error)
    return value


def _accept(request: web.Request, app: RegisteredApp, sent: SentMessage) -> None:
    state = request.app[STATE_KEY]
    state.sent.setdefault(app.name, []).append(sent)
    if state.auto_status:
        state.spawn(emit_auto_statuses(request.app[HTTP_KEY], app, sent))


async def _answer_fault(fault: Fault) -> web.Response:
    status, message = FAULT_ANSWERS[fault.mode]
    if fault.mode == "timeout":
        await asyncio.sleep(fault.delay_ms / 1000)
    return web.json_response({"status": "error", "message": message}, status=status)


async def partner_login(request: web.Request) -> web.Response:
    """`POST /partner/account/login`: any email and password get a partner token."""
    form = await request.post()
    if not form.get("email") or not form.get("password"):
        raise ErrorResponse(401, "Authentication Failed")
    token = secrets.token_urlsafe(32)
    request.app[STATE_KEY].partner_tokens.add(token)
    return web.json_response({"token": token})


async def partner_app_token(request: web.Request) -> web.Response:
    """`GET /partner/app/{appId}/token`: the app's access token, for a valid partner token."""
    state = request.app[STATE_KEY]
    if request.headers.get("Authorization") not in state.partner_tokens:
        raise ErrorResponse(401, "Authentication Failed")
    app_id = request.match_info["appId"]
    state.app_with_id(app_id)
    token = state.app_tokens.setdefault(app_id, "sk_" + secrets.token_hex(16))
    return web.json_response({"status": "success", "token": {"token": token}})


async def partner_subscription(request: web.Request) -> web.Response:
    """`POST /partner/app/{appId}/subscription`: point the app's callbacks at `url`."""
    state = request.app[STATE_KEY]
    app_id = request.match_info["appId"]
    app = state.app_with_id(app_id)
    if request.headers.get("Authorization") != state.app_tokens.get(app_id):
        raise ErrorResponse(401, "Authentication Failed")
    form = await request.post()
    url, version = str(form.get("url", "")), str(form.get("version", "2"))
    if not url.startswith(("http://", "https://")):
        raise ErrorResponse(400, "Invalid url")
    if version not in ("2", "3"):
        raise ErrorResponse(400, "Invalid version")
    app.callback_url, app.format = url, "v3" if version == "3" else "v2"
    modes = [mode for mode in str(form.get("modes", "")).split(",") if mode]
    subscription = {
        "active": True,
        "appId": app_id,
        "createdOn": now_ms(),
        "id": str(uuid.uuid4()),
        "modes": modes,
        "showOnUI": str(form.get("showOnUI", "false")).lower() == "true",
        "tag": str(form.get("tag", "")),
        "url": url,
        "version": int(version),
    }
    return web.json_response({"status": "success", "subscription": subscription})
