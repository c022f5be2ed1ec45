"""Webhook payloads as Gupshup builds them (v2 and Meta-shaped v3), and their delivery.

An app whose BSUID flag is on (for its subscription's format) gets users' business-scoped user
IDs: v2 `sender.userId` and `sender.username`, `source` the BSUID of a user whose number is
withheld, statuses' `userId`; v3 as Meta writes them (`contacts[].user_id`, `from_user_id`,
`recipient_user_id` ..., `wa_id`/`from`/`recipient_id` left out when the number is withheld).
Without the flag webhooks name users by number only, as before Gupshup had BSUIDs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import phonenumbers
import structlog

from sandbox.state import (
    Recipient,
    RegisteredApp,
    SentMessage,
    StatusFaults,
    Template,
    epoch_ms,
    stable_digits,
)

log = structlog.get_logger(__name__)

# Gupshup gives a callback 10 s before it counts the delivery as failed, and then "attempts
# again after a brief interval": the sandbox retries status and billing callbacks after
# these many seconds (the control API's own deliveries report their one answer instead).
CALLBACK_TIMEOUT = aiohttp.ClientTimeout(total=10)
CALLBACK_RETRY_SECONDS = (1, 2, 4, 8, 16, 32)
DEFAULT_FAILURE = (131026, "Message undeliverable")
V3_MEDIA_TYPES = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "sticker": "sticker",
    "file": "document",
}


@dataclass(frozen=True)
class LeadProfile:
    """Who writes, as an inbound webhook names them: a number, a BSUID or both (the BSUIDs and
    the username reach only apps with the BSUID flag on)."""

    name: str
    number: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class CallbackResult:
    """What the callback URL answered: its HTTP status, or 0 and an error if unreachable."""

    status: int
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields the control API reports about this delivery."""
        if self.error is None:
            return {"callback_status": self.status}
        return {"callback_status": self.status, "error": self.error}


async def post_callback(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> CallbackResult:
    """POST `body` as JSON to a callback URL, as Gupshup would, once and without retrying."""
    try:
        async with http.post(url, json=body, timeout=CALLBACK_TIMEOUT) as response:
            await response.read()
            return CallbackResult(response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("callback_failed", url=url, error=repr(exc))
        return CallbackResult(0, f"{type(exc).__name__}: {exc}")


def inbound_webhook(
    app: RegisteredApp,
    *,
    lead: LeadProfile,
    message_id: str,
    timestamp_ms: int,
    message: dict[str, Any],
    context: dict[str, Any] | None = None,
    referral: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The webhook for a lead's message; `message` is v2's inner `{"type", "payload"}`;
    `referral` is Meta's object for a message that came from a click-to-WhatsApp ad.

    The lead needs a number unless the app has its BSUID flag on (Gupshup parks the messages
    of users without one otherwise, see `control_api.simulate_inbound`).
    """
    kind: str = message["type"]
    inner: dict[str, Any] = message.get("payload") or {}
    if not app.bsuid:
        lead = LeadProfile(name=lead.name, number=lead.number)
    if app.format == "v2":
        payload: dict[str, Any] = {
            "id": message_id,
            "source": lead.number or lead.user_id,
            "type": kind,
            "payload": inner,
            "sender": _v2_sender(lead),
        }
        if context is not None:
            payload["context"] = context
        if referral is not None:
            payload["referral"] = referral
        return {
            "app": app.name,
            "timestamp": timestamp_ms,
            "version": 2,
            "type": "message",
            "payload": payload,
        }
    v3_message = _without_none(
        {
            "from": lead.number,
            "from_user_id": lead.user_id,
            "from_parent_user_id": lead.parent_user_id,
            "id": message_id,
            "timestamp": str(timestamp_ms // 1000),
        }
    )
    v3_message.update(_v3_body(kind, inner))
    if context is not None:
        v3_message["context"] = {"from": app.number, "id": context.get("id")}
    if referral is not None:
        v3_message["referral"] = referral
    profile = _without_none({"name": lead.name, "username": lead.username})
    contact = _without_none(
        {
            "profile": profile,
            "wa_id": lead.number,
            "user_id": lead.user_id,
            "parent_user_id": lead.parent_user_id,
        }
    )
    value = {
        "messaging_product": "whatsapp",
        "metadata": _v3_metadata(app),
        "contacts": [contact],
        "messages": [v3_message],
    }
    return _v3_envelope(app, value)


def status_webhook(
    app: RegisteredApp,
    sent: SentMessage,
    status: str,
    *,
    timestamp_ms: int,
    code: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The message-event (v2) or status (v3) webhook reporting `status` for an earlier send."""
    seconds = timestamp_ms // 1000
    # Before WhatsApp has the message (enqueued, failed) Gupshup can only name it by its own id.
    before_whatsapp = status in ("enqueued", "failed")
    code = code if code is not None else DEFAULT_FAILURE[0]
    reason = reason if reason is not None else DEFAULT_FAILURE[1]
    category, price_type = sent.pricing.category, sent.pricing.type
    conversation_id = stable_digits(f"conversation:{app.name}:{sent.destination}", 32)
    recipient = sent.recipient if app.bsuid else Recipient()
    if app.format == "v2":
        event: dict[str, Any] = {
            "id": sent.message_id if before_whatsapp else sent.whatsapp_id,
            "type": status,
            "destination": _recipient_address(sent),
            "payload": {"ts": seconds},
        }
        if not before_whatsapp:
            event["gsId"] = sent.message_id
        if status == "enqueued":
            event["payload"] = {
                "whatsappMessageId": sent.whatsapp_id,
                "type": "template" if sent.template else "session",
            }
        elif status == "failed":
            event["payload"] = {"code": code, "reason": reason}
        elif status == "sent":
            event["conversation"] = {
                "id": conversation_id,
                "expiresAt": seconds + 86400,
                "type": category,
            }
            event["pricing"] = {"policy": "PMP", "category": category, "type": price_type}
        if recipient.user_id is not None:
            event["userId"] = recipient.user_id
        return {
            "app": app.name,
            "timestamp": timestamp_ms,
            "version": 2,
            "type": "message-event",
            "payload": event,
        }
    v3_status: dict[str, Any] = _without_none(
        {
            "id": sent.message_id if status == "enqueued" else sent.whatsapp_id,
            "gs_id": sent.message_id,
            # Meta leaves the number out of a status for a send to a BSUID of a user whose
            # number is withheld; without the flag the status repeats the send's address.
            "recipient_id": sent.recipient.number if app.bsuid else _recipient_address(sent),
            "recipient_user_id": recipient.user_id,
            "recipient_parent_user_id": recipient.parent_user_id,
            "status": status,
            "timestamp": str(seconds),
        }
    )
    if status == "failed":
        v3_status["errors"] = [{"code": code, "title": reason}]
    elif status == "sent":
        v3_status["conversation"] = {
            "id": conversation_id,
            "expiration_timestamp": str(seconds + 86400),
            "origin": {"type": category},
        }
        v3_status["pricing"] = {
            "billable": price_type == "regular",
            "pricing_model": "PMP",
            "category": category,
            "type": price_type,
        }
    value: dict[str, Any] = {"messaging_product": "whatsapp"}
    if status != "enqueued":  # Gupshup's own enqueued status carries no Meta metadata.
        value["metadata"] = _v3_metadata(app)
    value["statuses"] = [v3_status]
    return _v3_envelope(app, value)


def template_event_webhook(
    app: RegisteredApp, template: Template, *, timestamp_ms: int
) -> dict[str, Any]:
    """The v2 template-event reporting a template's current status, lower-case as Gupshup does."""
    # v2 whatever the app's format: how Gupshup shapes this event for v3 apps is unconfirmed.
    payload: dict[str, Any] = {
        "type": "status-update",
        "id": template.id,
        "status": template.status.lower(),
        "elementName": template.element_name,
        "languageCode": template.language,
    }
    if template.reason is not None:
        payload["rejectedReason"] = template.reason
    return {
        "app": app.name,
        "timestamp": timestamp_ms,
        "version": 2,
        "type": "template-event",
        "payload": payload,
    }


def billing_event_webhook(
    app: RegisteredApp, sent: SentMessage, *, timestamp_ms: int
) -> dict[str, Any]:
    """The v2 billing-event for a message WhatsApp has: its pricing category and whether it is
    billed (per-message pricing)."""
    return {
        "app": app.name,
        "timestamp": timestamp_ms,
        "version": 2,
        "type": "billing-event",
        "payload": {
            "deductions": {
                "type": "message",
                "model": "PMP",
                "source": "whatsapp",
                "billable": sent.pricing.billable,
                "category": sent.pricing.category,
            },
            "references": {
                "id": sent.whatsapp_id,
                "gsId": sent.message_id,
                "destination": _recipient_address(sent),
            },
        },
    }


async def post_callback_until_accepted(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> CallbackResult:
    """POST a callback, and again after each of CALLBACK_RETRY_SECONDS while it is not 2xx."""
    result = await post_callback(http, url, body)
    for delay in CALLBACK_RETRY_SECONDS:
        if 200 <= result.status < 300:
            break
        await asyncio.sleep(delay)
        result = await post_callback(http, url, body)
    return result


async def post_status_callback(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], faults: StatusFaults
) -> CallbackResult:
    """POST a status webhook (retried until accepted), twice when the app's status
    callbacks are set to duplicate."""
    result = await post_callback_until_accepted(http, url, body)
    if faults.duplicate:
        await post_callback(http, url, body)
    return result


async def emit_statuses(
    http: aiohttp.ClientSession,
    app: RegisteredApp,
    sent: SentMessage,
    schedule: list[tuple[str, int]],
    faults: StatusFaults,
) -> None:
    """Post each (status, delay in ms) of `schedule` that long after the send was accepted.

    Each webhook's timestamp is when its status happened; with `faults.reorder` they all arrive
    at the last delay, latest status first, as when later statuses overtake earlier ones. A v2
    app subscribed to billing gets a billing-event right after `sent`, stamped the same.
    """
    loop = asyncio.get_running_loop()
    started, accepted_ms = loop.time(), epoch_ms(sent.at)
    failure = sent.failure
    code, reason = (failure.code, failure.reason) if failure is not None else (None, None)
    order = list(reversed(schedule)) if faults.reorder else schedule
    last_delay_ms = max(delay for _, delay in schedule)
    for status, delay_ms in order:
        due = last_delay_ms if faults.reorder else delay_ms
        await asyncio.sleep(max(0.0, started + due / 1000 - loop.time()))
        body = status_webhook(
            app, sent, status, timestamp_ms=accepted_ms + delay_ms, code=code, reason=reason
        )
        await post_status_callback(http, app.callback_url, body, faults)
        # Meta-shaped (v3) statuses carry the pricing themselves; whether Gupshup also posts
        # its v2 billing-event to v3 subscriptions is unconfirmed.
        if status == "sent" and app.billing_events and app.format == "v2":
            billing = billing_event_webhook(app, sent, timestamp_ms=accepted_ms + delay_ms)
            await post_callback_until_accepted(http, app.callback_url, billing)


def _v2_sender(lead: LeadProfile) -> dict[str, str]:
    """v2's `sender`: the phone fields only when the number is known, then the BSUID fields."""
    sender: dict[str, str] = {}
    if lead.number is not None:
        try:
            number = phonenumbers.parse("+" + lead.number)
            country_code, dial_code = str(number.country_code), str(number.national_number)
        except phonenumbers.NumberParseException:
            country_code, dial_code = "", lead.number
        sender = {"phone": lead.number, "name": lead.name}
        sender.update(country_code=country_code, dial_code=dial_code)
    else:
        sender = {"name": lead.name}
    if lead.user_id is not None:
        sender["userId"] = lead.user_id
    if lead.username is not None:
        sender["username"] = lead.username
    return sender


def _recipient_address(sent: SentMessage) -> str:
    """The recipient a status names by one address (v2 `destination`): their number when
    known, else the address the send used (a BSUID)."""
    return sent.recipient.number or sent.destination


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` without the keys whose value is None (Meta omits what it does not share)."""
    return {key: value for key, value in fields.items() if value is not None}


def _v3_body(kind: str, inner: dict[str, Any]) -> dict[str, Any]:
    """Meta's per-type message body for a v2 inner payload (`{"type": ..., <type>: {...}}`)."""
    if kind == "text":
        return {"type": "text", "text": {"body": inner.get("text", "")}}
    if kind in V3_MEDIA_TYPES:
        media_type = V3_MEDIA_TYPES[kind]
        media = {
            "id": stable_digits("media:" + str(inner.get("url")), 16),
            "mime_type": inner.get("contentType"),
            "url": inner.get("url"),
            "caption": inner.get("caption"),
            "filename": inner.get("name"),
        }
        return {"type": media_type, media_type: {k: v for k, v in media.items() if v is not None}}
    if kind == "location":
        location = {
            k: _as_number(v) if k in ("latitude", "longitude") else v for k, v in inner.items()
        }
        return {"type": "location", "location": location}
    if kind in ("button_reply", "list_reply"):
        reply = {k: inner[k] for k in ("id", "title", "description") if k in inner}
        return {"type": "interactive", "interactive": {"type": kind, kind: reply}}
    if kind == "contact":
        # Meta's shared contact cards are the same objects v2 carries in `payload.contacts`.
        return {"type": "contacts", "contacts": inner.get("contacts", [])}
    if kind == "quick_reply":
        text = inner.get("text", "")
        return {
            "type": "button",
            "button": {"payload": inner.get("postbackText", text), "text": text},
        }
    return {"type": kind, kind: inner}


def _as_number(value: Any) -> Any:
    # Meta sends coordinates as numbers where v2 sends strings.
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _v3_metadata(app: RegisteredApp) -> dict[str, str]:
    return {"display_phone_number": app.number, "phone_number_id": app.phone_number_id}


def _v3_envelope(app: RegisteredApp, value: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"object": "whatsapp_business_account"}
    if app.app_id is not None:
        body["gs_app_id"] = app.app_id
    body["entry"] = [{"id": app.waba_id, "changes": [{"field": "messages", "value": value}]}]
    return body
