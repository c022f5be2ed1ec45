"""Gupshup's own endpoints as the product calls them: session and template sends, Partner API.

Partner templates are validated as Gupshup documents them (lower-case element names, the three
categories, {{1}}..{{n}} placeholders, an example that fills them); the sandbox knows only
TEXT templates. A template send must name an APPROVED template of the sending app.

A send's `destination` is a number's digits or a business-scoped user ID (BSUID), which
reaches a user whose number is withheld; its statuses name the recipient by what the sandbox
knows of them (`sandbox.webhooks`).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from sandbox.rules import failure_of, over_throughput, pricing_of, status_schedule
from sandbox.state import (
    HTTP_KEY,
    STATE_KEY,
    ErrorResponse,
    Fault,
    Recipient,
    RegisteredApp,
    SandboxState,
    SentMessage,
    StatusFaults,
    Template,
    namespace_of,
    new_whatsapp_id,
)
from sandbox.webhooks import emit_statuses
from shared.identity import is_bsuid, is_parent_bsuid

DIGITS = re.compile(r"\d{6,15}")
ELEMENT_NAME = re.compile(r"[a-z0-9_]{1,200}")
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")
PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
TEMPLATE_CATEGORIES = ("AUTHENTICATION", "MARKETING", "UTILITY")
MAX_CONTENT_CHARS = 1024
MAX_VERTICAL_CHARS = 180
FAULT_ANSWERS = {
    "429": (429, "Too Many Requests"),
    "429_burst": (429, "Too Many Requests"),
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
    state = request.app[STATE_KEY]
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    # Stamped after the last await before recording, so sends are recorded in the order of
    # their `at`, which the sliding throughput window relies on.
    arrived = state.now()
    app = state.apps.get(form.get("src.name", ""))
    if app is None or request.headers.get("apikey") != app.api_key:
        raise ErrorResponse(401, "Authentication Failed")
    sent = _parse_send(app, form, is_template, arrived)
    if sent.template is not None:
        _check_template_approved(state, app, sent.template)
    # Faults only hit well-formed requests, so a test's fault budget is spent where it expects.
    fault = state.take_fault(app.name)
    if fault is not None:
        if fault.accept and fault.mode not in ("429", "429_burst"):
            _accept(request, app, sent)
        return await _answer_fault(request, fault)
    if over_throughput(state, app.name, arrived):
        raise ErrorResponse(429, "Too Many Requests")
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
    if not DIGITS.fullmatch(destination) and not is_bsuid(destination):
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
        if kind == "request_contact_info" and not _has_body_text(message):
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


def _has_body_text(message: dict[str, Any]) -> bool:
    """Whether an interactive message has the `body.text` WhatsApp shows above its button."""
    body = message.get("body")
    return isinstance(body, dict) and isinstance(body.get("text"), str) and bool(body["text"])


def _recipient(state: SandboxState, app: str, destination: str) -> Recipient:
    """Who a send to `destination` reaches, as far as the sandbox knows the user."""
    user = state.user_at(app, destination)
    if user is not None:
        return Recipient(user.number, user.user_id, user.parent_user_id)
    if is_parent_bsuid(destination):
        return Recipient(parent_user_id=destination)
    if is_bsuid(destination):
        return Recipient(user_id=destination)
    return Recipient(number=destination)


def _check_template_approved(
    state: SandboxState, app: RegisteredApp, template: dict[str, Any]
) -> None:
    template_id = template["id"]
    known = state.templates.get(app.name, {})
    if not isinstance(template_id, str) or template_id not in known:
        raise ErrorResponse(400, "Template does not exist")
    status = known[template_id].status
    if status != "APPROVED":
        raise ErrorResponse(400, f"Template is not approved (status {status})")


def _json_object(text: str | None, error: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError:
        raise ErrorResponse(400, error) from None
    if not isinstance(value, dict):
        raise ErrorResponse(400, error)
    return value


def _accept(request: web.Request, app: RegisteredApp, sent: SentMessage) -> None:
    """Record the send with its price and schedule its statuses (a failure under the rules)."""
    state = request.app[STATE_KEY]
    sent.recipient = _recipient(state, app.name, sent.destination)
    sent.failure = failure_of(state, app.name, sent)
    sent.pricing = pricing_of(state, app.name, sent)
    state.sent.setdefault(app.name, []).append(sent)
    schedule = status_schedule(state, app.name, sent.failure)
    if schedule:
        faults = state.status_faults.get(app.name, StatusFaults())
        state.spawn(emit_statuses(request.app[HTTP_KEY], app, sent, schedule, faults))


async def _answer_fault(request: web.Request, fault: Fault) -> web.Response:
    if fault.mode == "reset":
        # The request was read; the client sees the connection close without an answer.
        if request.transport is not None:
            request.transport.close()
        return web.Response()  # never written: aiohttp notices the closed connection
    status, message = FAULT_ANSWERS[fault.mode]
    if fault.mode == "timeout":
        await asyncio.sleep(fault.delay_ms / 1000)
    headers = {}
    if fault.retry_after_seconds is not None:
        headers["Retry-After"] = str(fault.retry_after_seconds)
    return web.json_response(
        {"status": "error", "message": message}, status=status, headers=headers
    )


async def partner_login(request: web.Request) -> web.Response:
    """`POST /partner/account/login`: a partner token for the configured (or any) credentials."""
    form = await request.post()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    required = request.app[STATE_KEY].partner_credentials
    if not email or not password or required not in (None, (email, password)):
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
    app = _app_for_token(request)
    app_id = request.match_info["appId"]
    form = await request.post()
    url, version = str(form.get("url", "")), str(form.get("version", "2"))
    if not url.startswith(("http://", "https://")):
        raise ErrorResponse(400, "Invalid url")
    if version not in ("2", "3"):
        raise ErrorResponse(400, "Invalid version")
    app.callback_url, app.format = url, "v3" if version == "3" else "v2"
    modes = [mode for mode in str(form.get("modes", "")).split(",") if mode]
    app.billing_events = "BILLING" in modes
    subscription = {
        "active": True,
        "appId": app_id,
        "createdOn": request.app[STATE_KEY].now_ms(),
        "id": str(uuid.uuid4()),
        "modes": modes,
        "showOnUI": str(form.get("showOnUI", "false")).lower() == "true",
        "tag": str(form.get("tag", "")),
        "url": url,
        "version": int(version),
    }
    return web.json_response({"status": "success", "subscription": subscription})


async def partner_create_template(request: web.Request) -> web.Response:
    """`POST /partner/app/{appId}/templates`: apply for a TEXT template; it starts PENDING."""
    app = _app_for_token(request)
    state = request.app[STATE_KEY]
    form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
    template = _parse_template(request.match_info["appId"], form, state.now_ms())
    templates = state.templates.setdefault(app.name, {})
    if any(
        (known.element_name, known.language) == (template.element_name, template.language)
        for known in templates.values()
    ):
        raise ErrorResponse(
            400, "Template Already exists with same namespace and elementName and languageCode"
        )
    templates[template.id] = template
    return web.json_response({"status": "success", "template": template.record()})


async def partner_list_templates(request: web.Request) -> web.Response:
    """`GET /partner/app/{appId}/templates`: the app's templates, oldest first."""
    app = _app_for_token(request)
    templates = request.app[STATE_KEY].templates.get(app.name, {}).values()
    return web.json_response(
        {"status": "success", "templates": [template.record() for template in templates]}
    )


async def partner_bsuid_config(request: web.Request) -> web.Response:
    """`PUT /partner/app/{appId}/config/bsuid`: turn the app's BSUID flags on or off, for v2
    (`enableBSUID`) and v3 (`enableBSUIDV3`) subscriptions; a flag left out is unchanged."""
    app = _app_for_token(request)
    try:
        body = await request.json()
    except ValueError:
        raise ErrorResponse(400, "Invalid request body") from None
    if not isinstance(body, dict):
        raise ErrorResponse(400, "Invalid request body")
    flags = {key: body[key] for key in ("enableBSUID", "enableBSUIDV3") if key in body}
    if not flags:
        raise ErrorResponse(400, "At least one of enableBSUID or enableBSUIDV3 must be provided")
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ErrorResponse(400, f"{key} must be a boolean")
    app.bsuid_v2 = flags.get("enableBSUID", app.bsuid_v2)
    app.bsuid_v3 = flags.get("enableBSUIDV3", app.bsuid_v3)
    return web.json_response({"status": "success"})


def _app_for_token(request: web.Request) -> RegisteredApp:
    """The app named by the path, if the request carries its app token (Partner API calls),
    bare or after `Bearer ` as Gupshup's newer Partner routes document it."""
    state = request.app[STATE_KEY]
    app_id = request.match_info["appId"]
    app = state.app_with_id(app_id)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not token or token != state.app_tokens.get(app_id):
        raise ErrorResponse(401, "Authentication Failed")
    return app


def _parse_template(app_id: str, form: dict[str, str], created: int) -> Template:
    element_name = form.get("elementName", "")
    if not ELEMENT_NAME.fullmatch(element_name):
        raise ErrorResponse(
            400, "Invalid elementName: use up to 200 lowercase letters, digits and underscores"
        )
    # Gupshup documents en_US as the default language.
    language = form.get("languageCode") or "en_US"
    if not LANGUAGE_CODE.fullmatch(language):
        raise ErrorResponse(400, "Invalid languageCode")
    category = form.get("category", "")
    if category not in TEMPLATE_CATEGORIES:
        raise ErrorResponse(
            400,
            "Invalid category provided, kindly use category from these options "
            + ",".join(TEMPLATE_CATEGORIES),
        )
    if form.get("templateType") != "TEXT":
        raise ErrorResponse(400, "Invalid templateType: the sandbox supports TEXT only")
    vertical = form.get("vertical", "")
    if not vertical or len(vertical) > MAX_VERTICAL_CHARS:
        raise ErrorResponse(400, f"vertical is required (at most {MAX_VERTICAL_CHARS} chars)")
    content = form.get("content", "")
    if not content.strip() or len(content) > MAX_CONTENT_CHARS:
        raise ErrorResponse(400, f"content is required (at most {MAX_CONTENT_CHARS} chars)")
    numbers = {int(number) for number in PLACEHOLDER.findall(content)}
    if numbers != set(range(1, len(numbers) + 1)):
        raise ErrorResponse(
            400, "Invalid content: number the placeholders {{1}}, {{2}}, ... without gaps"
        )
    example = form.get("example", "")
    if not _example_fills(content, example):
        raise ErrorResponse(400, "Invalid example: it must be the content with sample values")
    return Template(
        id=str(uuid.uuid4()),
        app_id=app_id,
        namespace=namespace_of(app_id),
        element_name=element_name,
        language=language,
        category=category,
        template_type="TEXT",
        vertical=vertical,
        content=content,
        example=example,
        created_ms=created,
        modified_ms=created,
    )


def _example_fills(content: str, example: str) -> bool:
    """Whether `example` is `content` with each placeholder replaced by a non-empty value."""
    literal_parts = PLACEHOLDER.split(content)[::2]
    pattern = "(.+?)".join(re.escape(part) for part in literal_parts)
    return re.fullmatch(pattern, example, flags=re.DOTALL) is not None
