"""The sandbox's control API: register apps, play the lead, read what was sent, inject faults.

It also plays Meta reviewing templates, and sets Partner login credentials or expires tokens.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from sandbox.state import (
    HTTP_KEY,
    STATE_KEY,
    ErrorResponse,
    Fault,
    RegisteredApp,
    TemplateStatus,
    new_whatsapp_id,
    now_ms,
)
from sandbox.webhooks import (
    inbound_webhook,
    post_callback,
    status_webhook,
    template_event_webhook,
)

Digits = Annotated[str, StringConstraints(pattern=r"^\d{6,15}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Body = TypeVar("Body", bound=BaseModel)


class AppRegistration(BaseModel):
    """Body of `POST /sandbox/v1/apps`."""

    app: NonEmpty
    api_key: NonEmpty
    number: Digits
    callback_url: Annotated[str, StringConstraints(pattern=r"^https?://")]
    format: Literal["v2", "v3"] = "v2"
    app_id: str | None = None


class InboundRequest(BaseModel):
    """Body of `POST /sandbox/v1/inbound`: a lead's message, as `text` or a typed `message`."""

    model_config = ConfigDict(populate_by_name=True)

    app: str
    sender: Digits = Field(alias="from")
    name: str = ""
    text: str | None = None
    message: dict[str, Any] | None = None
    id: NonEmpty | None = None
    timestamp: NonNegativeInt | None = None
    context: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_message(self) -> InboundRequest:
        if (self.text is None) == (self.message is None):
            raise ValueError('give exactly one of "text" and "message"')
        if self.message is not None and not isinstance(self.message.get("type"), str):
            raise ValueError('"message" needs a string "type"')
        return self


class StatusRequest(BaseModel):
    """Body of `POST /sandbox/v1/statuses`: a delivery status for an earlier send."""

    app: str
    message_id: str = Field(alias="messageId")
    status: Literal["enqueued", "sent", "delivered", "read", "failed", "deleted"]
    code: int | None = None
    reason: str | None = None
    timestamp: NonNegativeInt | None = None


class RawEvent(BaseModel):
    """Body of `POST /sandbox/v1/events`: any payload, posted to the app's callback as is."""

    app: str
    body: dict[str, Any]


class TemplateStatusRequest(BaseModel):
    """Body of `POST /sandbox/v1/templates/status`: Meta's verdict on a template."""

    app: str
    template_id: NonEmpty | None = None
    element_name: NonEmpty | None = None
    language: NonEmpty | None = None
    status: Literal["APPROVED", "REJECTED", "PAUSED", "DISABLED"]
    reason: NonEmpty | None = None
    timestamp: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _one_template(self) -> TemplateStatusRequest:
        by_name = self.element_name is not None and self.language is not None
        if (self.template_id is not None) == by_name:
            raise ValueError('give "template_id", or "element_name" and "language"')
        return self


class PartnerCredentials(BaseModel):
    """Body of `POST /sandbox/v1/partner/credentials`: what Partner login requires from now on."""

    email: NonEmpty
    password: NonEmpty


class ExpireTokens(BaseModel):
    """Body of `POST /sandbox/v1/partner/expire-tokens`."""

    keep_app_tokens: bool = False


class FaultRequest(BaseModel):
    """Body of `POST /sandbox/v1/faults`; without `app` the fault applies to every app."""

    app: str | None = None
    mode: Literal["429", "500", "503", "timeout", "none"]
    count: PositiveInt | None = None
    delay_ms: NonNegativeInt = 15_000
    accept: bool = False


async def register_app(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/apps`: create or replace an app (the latest registration wins)."""
    body = await _parse(request, AppRegistration)
    app = RegisteredApp(
        name=body.app,
        api_key=body.api_key,
        number=body.number,
        callback_url=body.callback_url,
        format=body.format,
        app_id=body.app_id,
    )
    request.app[STATE_KEY].apps[app.name] = app
    return web.json_response(app.public_record())


async def list_apps(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/apps`: every registered app, without api keys."""
    apps = request.app[STATE_KEY].apps.values()
    return web.json_response([app.public_record() for app in apps])


async def simulate_inbound(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/inbound`: post the webhook for a lead's message to the app's callback."""
    body = await _parse(request, InboundRequest)
    app = request.app[STATE_KEY].app_named(body.app)
    message_id = body.id or new_whatsapp_id()
    message = body.message or {"type": "text", "payload": {"text": body.text}}
    webhook = inbound_webhook(
        app,
        sender=body.sender,
        name=body.name,
        message_id=message_id,
        timestamp_ms=body.timestamp if body.timestamp is not None else now_ms(),
        message=message,
        context=body.context,
    )
    result = await post_callback(request.app[HTTP_KEY], app.callback_url, webhook)
    return web.json_response({"message_id": message_id, **result.as_json()})


async def list_messages(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/messages?app=&destination=`: accepted sends, oldest first."""
    sent = request.app[STATE_KEY].sent.get(request.query.get("app", ""), [])
    destination = request.query.get("destination")
    return web.json_response(
        [item.listing() for item in sent if destination in (None, item.destination)]
    )


async def emit_status(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/statuses`: post a delivery status for an earlier send to the callback."""
    body = await _parse(request, StatusRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(body.app)
    sent = next((m for m in state.sent.get(app.name, []) if m.message_id == body.message_id), None)
    if sent is None:
        raise ErrorResponse(404, f"Unknown messageId {body.message_id!r} for app {app.name!r}")
    webhook = status_webhook(
        app,
        sent,
        body.status,
        timestamp_ms=body.timestamp if body.timestamp is not None else now_ms(),
        code=body.code,
        reason=body.reason,
    )
    result = await post_callback(request.app[HTTP_KEY], app.callback_url, webhook)
    return web.json_response(result.as_json())


async def emit_raw_event(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/events`: post an arbitrary payload (user-event, ...) to the callback."""
    body = await _parse(request, RawEvent)
    app = request.app[STATE_KEY].app_named(body.app)
    result = await post_callback(request.app[HTTP_KEY], app.callback_url, body.body)
    return web.json_response(result.as_json())


async def set_template_status(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/templates/status`: approve, reject, pause or disable a template."""
    body = await _parse(request, TemplateStatusRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(body.app)
    template = state.template_of(
        app.name,
        template_id=body.template_id,
        element_name=body.element_name,
        language=body.language,
    )
    timestamp = body.timestamp if body.timestamp is not None else now_ms()
    status: TemplateStatus = body.status
    template.status, template.modified_ms = status, timestamp
    # Meta gives a reason with a rejection; the fixture's is the commonest one.
    template.reason = body.reason or ("INVALID_FORMAT" if status == "REJECTED" else None)
    webhook = template_event_webhook(app, template, timestamp_ms=timestamp)
    result = await post_callback(request.app[HTTP_KEY], app.callback_url, webhook)
    return web.json_response({**result.as_json(), "template": template.record()})


async def set_partner_credentials(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/partner/credentials`: login accepts only this email and password."""
    body = await _parse(request, PartnerCredentials)
    request.app[STATE_KEY].partner_credentials = (body.email, body.password)
    return web.json_response({"status": "ok"})


async def expire_partner_tokens(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/partner/expire-tokens`: issued partner (and app) tokens stop working."""
    body = await _parse(request, ExpireTokens)
    state = request.app[STATE_KEY]
    state.partner_tokens.clear()
    if not body.keep_app_tokens:
        state.app_tokens.clear()
    return web.json_response({"status": "ok"})


async def set_fault(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/faults`: make send requests fail; mode "none" clears the fault."""
    body = await _parse(request, FaultRequest)
    faults = request.app[STATE_KEY].faults
    if body.mode == "none" and body.app is None:
        faults.clear()
    elif body.mode == "none":
        faults.pop(body.app, None)
    else:
        faults[body.app] = Fault(body.mode, body.count, body.delay_ms, body.accept)
    return await list_faults(request)


async def list_faults(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/faults`: the faults in force."""
    faults = request.app[STATE_KEY].faults
    return web.json_response({"faults": [fault.describe(app) for app, fault in faults.items()]})


async def clear_faults(request: web.Request) -> web.Response:
    """`DELETE /sandbox/v1/faults`: clear every fault."""
    request.app[STATE_KEY].faults.clear()
    return web.json_response({"faults": []})


async def reset(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/reset`: forget apps, templates, sends, faults, credentials and tokens."""
    request.app[STATE_KEY].reset()
    return web.json_response({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz` and `GET /sandbox/v1/healthz`: the process is up."""
    return web.json_response({"status": "ok"})


async def _parse(request: web.Request, model: type[Body]) -> Body:
    try:
        # An empty body reads as {}, so a body whose fields all have defaults may be left out.
        return model.model_validate_json(await request.read() or b"{}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ErrorResponse(400, problems) from None
