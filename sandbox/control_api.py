"""The sandbox's control API: register apps, play the lead, read what was sent, inject faults.

It also plays Meta reviewing templates, sets Partner login credentials or expires tokens, sets
per-app WhatsApp rules, opt-outs and status-callback faults, shifts the clock and reports rates.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

import phonenumbers
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from sandbox.rules import send_metrics
from sandbox.state import (
    HTTP_KEY,
    STATE_KEY,
    AppRules,
    DeliveryStatus,
    ErrorResponse,
    Fault,
    RegisteredApp,
    SandboxState,
    StatusFaults,
    TemplateStatus,
    new_whatsapp_id,
)
from sandbox.webhooks import (
    LeadProfile,
    inbound_webhook,
    post_callback,
    post_status_callback,
    status_webhook,
    template_event_webhook,
)
from shared.identity import is_bsuid, is_parent_bsuid, validate_bsuid

Digits = Annotated[str, StringConstraints(pattern=r"^\d{6,15}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Body = TypeVar("Body", bound=BaseModel)


def _parent_bsuid(value: str) -> str:
    if not is_parent_bsuid(value):
        raise ValueError(
            f"{value!r} is not a parent business-scoped user ID (CC.ENT.alphanumerics)"
        )
    return value


def _address(value: str) -> str:
    if not (value.isascii() and value.isdigit() and 6 <= len(value) <= 15) and not is_bsuid(value):
        raise ValueError(f"{value!r} is neither a number (6 to 15 digits) nor a BSUID")
    return value


UserId = Annotated[str, AfterValidator(validate_bsuid)]
ParentUserId = Annotated[str, AfterValidator(_parent_bsuid)]
# Where a send may go: a number's digits, or a (parent) business-scoped user ID.
Address = Annotated[str, AfterValidator(_address)]


class AppRegistration(BaseModel):
    """Body of `POST /sandbox/v1/apps`."""

    app: NonEmpty
    api_key: NonEmpty
    number: Digits
    callback_url: Annotated[str, StringConstraints(pattern=r"^https?://")]
    format: Literal["v2", "v3"] = "v2"
    app_id: str | None = None
    billing_events: bool = False
    # Both of Gupshup's BSUID flags (v2 and v3 subscriptions) at once.
    bsuid: bool = False


class InboundRequest(BaseModel):
    """Body of `POST /sandbox/v1/inbound`: a lead's message, as `text`, a typed `message`, or
    the lead's own number shared as a contact card (`share_number`); the lead is named by
    number (`from`), BSUID (`user_id`) or both."""

    model_config = ConfigDict(populate_by_name=True)

    app: str
    sender: Digits | None = Field(None, alias="from")
    user_id: UserId | None = None
    parent_user_id: ParentUserId | None = None
    username: NonEmpty | None = None
    name: str = ""
    text: str | None = None
    message: dict[str, Any] | None = None
    share_number: Digits | None = None
    id: NonEmpty | None = None
    timestamp: NonNegativeInt | None = None
    context: dict[str, Any] | None = None
    # Meta's referral object (source_url, source_id, source_type "ad", headline, body,
    # ctwa_clid ...): the lead tapped a click-to-WhatsApp ad.
    referral: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_lead_one_message(self) -> InboundRequest:
        if self.sender is None and self.user_id is None:
            raise ValueError('give "from", "user_id" or both')
        if self.parent_user_id is not None and self.user_id is None:
            raise ValueError('"parent_user_id" goes with "user_id"')
        if [self.text, self.message, self.share_number].count(None) != 2:
            raise ValueError('give exactly one of "text", "message" and "share_number"')
        if self.message is not None and not isinstance(self.message.get("type"), str):
            raise ValueError('"message" needs a string "type"')
        return self

    def lead(self) -> LeadProfile:
        """The lead as the webhook is to name them."""
        return LeadProfile(
            name=self.name,
            number=self.sender,
            user_id=self.user_id,
            parent_user_id=self.parent_user_id,
            username=self.username,
        )


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
    mode: Literal["429", "429_burst", "500", "503", "timeout", "reset", "none"]
    count: PositiveInt | None = None
    delay_ms: NonNegativeInt = 15_000
    accept: bool = False
    retry_after_seconds: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FaultRequest:
        if self.mode == "429_burst" and self.count is None:
            raise ValueError('mode "429_burst" needs "count"')
        if self.retry_after_seconds is not None and self.mode not in ("429", "429_burst"):
            raise ValueError('"retry_after_seconds" goes with modes "429" and "429_burst"')
        return self


class StatusDelays(BaseModel):
    """Milliseconds from an accepted send to each automatic status; 0 means never."""

    model_config = ConfigDict(extra="forbid")

    enqueued: NonNegativeInt = 0
    sent: NonNegativeInt = 0
    delivered: NonNegativeInt = 0
    read: NonNegativeInt = 0


class RulesRequest(BaseModel):
    """Body of `POST /sandbox/v1/apps/{app}/rules`; unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    throughput_per_second: PositiveInt | None = None
    pair_rate: bool = False
    enforce_window: bool = False
    status_delays_ms: StatusDelays | None = None


class OptOutRequest(BaseModel):
    """Body of `POST` and `DELETE /sandbox/v1/optouts`: a number or a BSUID."""

    app: str
    destination: Address


class ClockRequest(BaseModel):
    """Body of `POST /sandbox/v1/clock`: how far the sandbox's now is from the real time."""

    offset_seconds: float


class StatusFaultRequest(BaseModel):
    """Body of `POST /sandbox/v1/status-faults`; both false clears the app's status faults."""

    app: str
    duplicate: bool = False
    reorder: bool = False


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
        billing_events=body.billing_events,
        bsuid_v2=body.bsuid,
        bsuid_v3=body.bsuid,
    )
    request.app[STATE_KEY].apps[app.name] = app
    return web.json_response(app.public_record())


async def list_apps(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/apps`: every registered app, without api keys."""
    apps = request.app[STATE_KEY].apps.values()
    return web.json_response([app.public_record() for app in apps])


async def simulate_inbound(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/inbound`: post the webhook for a lead's message to the app's callback.

    A lead named by BSUID alone writes to an app without the BSUID flag in vain: Gupshup
    parks such messages (they reach the app only once the flag is on, which the sandbox does
    not replay), so nothing is posted and the answer says `"parked": true`.
    """
    body = await _parse(request, InboundRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(body.app)
    message_id = body.id or new_whatsapp_id()
    if body.sender is None and not app.bsuid:
        return web.json_response(
            {"message_id": message_id, "callback_status": None, "parked": True}
        )
    lead = body.lead()
    addresses = _lead_addresses(state, app.name, lead)
    context = body.context
    if body.share_number is not None:
        message = _own_contact_card(body.name, body.share_number)
        if context is None:
            context = _last_send_to(state, app.name, addresses)
    else:
        message = body.message or {"type": "text", "payload": {"text": body.text}}
    if lead.user_id is not None:
        number = lead.number or body.share_number
        state.remember_user(app.name, lead.user_id, number, lead.parent_user_id)
    # Before the callback: the product may well reply while it handles the webhook.
    for address in addresses:
        state.last_inbound[(app.name, address)] = state.now()
    webhook = inbound_webhook(
        app,
        lead=lead,
        message_id=message_id,
        timestamp_ms=body.timestamp if body.timestamp is not None else state.now_ms(),
        message=message,
        context=context,
        referral=body.referral,
    )
    result = await post_callback(request.app[HTTP_KEY], app.callback_url, webhook)
    return web.json_response({"message_id": message_id, **result.as_json()})


def _lead_addresses(state: SandboxState, app: str, lead: LeadProfile) -> set[str]:
    """Every address the writing lead is known by: those the request names, and the ones the
    sandbox was told belong with them."""
    named = [a for a in (lead.number, lead.user_id, lead.parent_user_id) if a is not None]
    return set().union(*(state.addresses_of(app, address) for address in named))


def _own_contact_card(name: str, number: str) -> dict[str, Any]:
    """The v2 contact message of a lead sharing their own number (as WhatsApp's answer to a
    request for contact info sends it): one card, one phone, on WhatsApp (`wa_id`)."""
    try:
        shown = phonenumbers.format_number(
            phonenumbers.parse("+" + number), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        shown = "+" + number
    card_name = {"formatted_name": name or shown}
    if name:
        card_name["first_name"] = name
    phone = {"phone": shown, "type": "CELL", "wa_id": number}
    return {"type": "contact", "payload": {"contacts": [{"name": card_name, "phones": [phone]}]}}


def _last_send_to(state: SandboxState, app: str, addresses: set[str]) -> dict[str, Any] | None:
    """The v2 `context` of a reply to the app's latest send to any of `addresses`, if any."""
    for sent in reversed(state.sent.get(app, [])):
        if sent.destination in addresses:
            return {"id": sent.whatsapp_id, "gsId": sent.message_id}
    return None


async def list_messages(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/messages?app=&destination=`: accepted sends, oldest first; a
    destination (a number or a BSUID) finds the sends to that user by any of their addresses
    the sandbox knows."""
    state = request.app[STATE_KEY]
    app = request.query.get("app", "")
    sent = state.sent.get(app, [])
    destination = request.query.get("destination")
    if destination is None:
        return web.json_response([item.listing() for item in sent])
    wanted = state.addresses_of(app, destination)
    return web.json_response([item.listing() for item in sent if item.destination in wanted])


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
        timestamp_ms=body.timestamp if body.timestamp is not None else state.now_ms(),
        code=body.code,
        reason=body.reason,
    )
    faults = state.status_faults.get(app.name, StatusFaults())
    result = await post_status_callback(request.app[HTTP_KEY], app.callback_url, webhook, faults)
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
    timestamp = body.timestamp if body.timestamp is not None else state.now_ms()
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
        faults[body.app] = Fault(
            body.mode, body.count, body.delay_ms, body.accept, body.retry_after_seconds
        )
    return await list_faults(request)


async def list_faults(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/faults`: the faults in force."""
    faults = request.app[STATE_KEY].faults
    return web.json_response({"faults": [fault.describe(app) for app, fault in faults.items()]})


async def clear_faults(request: web.Request) -> web.Response:
    """`DELETE /sandbox/v1/faults`: clear every fault."""
    request.app[STATE_KEY].faults.clear()
    return web.json_response({"faults": []})


async def set_rules(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/apps/{app}/rules`: replace the app's rules (fields left out are off)."""
    body = await _parse(request, RulesRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(request.match_info["app"])
    delays: dict[DeliveryStatus, int] | None = None
    if body.status_delays_ms is not None:
        given = body.status_delays_ms
        delays = {
            "enqueued": given.enqueued,
            "sent": given.sent,
            "delivered": given.delivered,
            "read": given.read,
        }
    state.rules[app.name] = AppRules(
        throughput_per_second=body.throughput_per_second,
        pair_rate=body.pair_rate,
        enforce_window=body.enforce_window,
        status_delays_ms=delays,
    )
    return await get_rules(request)


async def get_rules(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/apps/{app}/rules`: the app's rules, or null when none are enforced."""
    state = request.app[STATE_KEY]
    app = state.app_named(request.match_info["app"])
    rules = state.rules.get(app.name)
    return web.json_response(
        {"app": app.name, "rules": rules.describe() if rules is not None else None}
    )


async def clear_rules(request: web.Request) -> web.Response:
    """`DELETE /sandbox/v1/apps/{app}/rules`: enforce nothing for the app again."""
    state = request.app[STATE_KEY]
    app = state.app_named(request.match_info["app"])
    state.rules.pop(app.name, None)
    return await get_rules(request)


async def add_opt_out(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/optouts`: the destination opted out of the app's messages."""
    app, destination, opted_out = await _opt_out_request(request)
    opted_out.add(destination)
    return _opt_outs(request, app)


async def remove_opt_out(request: web.Request) -> web.Response:
    """`DELETE /sandbox/v1/optouts`: the destination opted back in."""
    app, destination, opted_out = await _opt_out_request(request)
    opted_out.discard(destination)
    return _opt_outs(request, app)


async def _opt_out_request(request: web.Request) -> tuple[str, str, set[str]]:
    """The app named in an opt-out request body (404 if unknown), the destination, and the
    app's set of opted-out destinations (kept in the state)."""
    body = await _parse(request, OptOutRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(body.app)
    return app.name, body.destination, state.opted_out.setdefault(app.name, set())


async def list_opt_outs(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/optouts?app=`: the app's opted-out destinations."""
    return _opt_outs(request, request.query.get("app", ""))


def _opt_outs(request: web.Request, app: str) -> web.Response:
    destinations = sorted(request.app[STATE_KEY].opted_out.get(app, set()))
    return web.json_response({"app": app, "destinations": destinations})


async def set_clock(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/clock`: set (not add to) the offset of the sandbox's now."""
    body = await _parse(request, ClockRequest)
    request.app[STATE_KEY].clock_offset = timedelta(seconds=body.offset_seconds)
    return await get_clock(request)


async def get_clock(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/clock`: the offset and the sandbox's now."""
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "offset_seconds": state.clock_offset.total_seconds(),
            "now": state.now().isoformat(),
        }
    )


async def set_status_faults(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/status-faults`: duplicate and/or reorder the app's status callbacks."""
    body = await _parse(request, StatusFaultRequest)
    state = request.app[STATE_KEY]
    app = state.app_named(body.app)
    if body.duplicate or body.reorder:
        state.status_faults[app.name] = StatusFaults(body.duplicate, body.reorder)
    else:
        state.status_faults.pop(app.name, None)
    return await list_status_faults(request)


async def list_status_faults(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/status-faults`: the status-callback faults in force."""
    faults = request.app[STATE_KEY].status_faults
    return web.json_response(
        {"status_faults": [fault.describe(app) for app, fault in faults.items()]}
    )


async def metrics(request: web.Request) -> web.Response:
    """`GET /sandbox/v1/metrics?app=`: the app's accepted sends per second, and the peak."""
    sent = request.app[STATE_KEY].sent.get(request.query.get("app", ""), [])
    return web.json_response(send_metrics(sent))


async def reset(request: web.Request) -> web.Response:
    """`POST /sandbox/v1/reset`: forget everything, and set the clock back to the real time."""
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
