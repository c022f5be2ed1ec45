"""In-memory state of the Gupshup sandbox: apps, templates, sends, rules, faults and its clock,
and which number belongs to which business-scoped user ID (BSUID)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from aiohttp import web

WebhookFormat = Literal["v2", "v3"]
FaultMode = Literal["429", "429_burst", "500", "503", "timeout", "reset"]
DeliveryStatus = Literal["enqueued", "sent", "delivered", "read"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TemplateStatus = Literal["PENDING", "APPROVED", "REJECTED", "PAUSED", "DISABLED"]


class ErrorResponse(Exception):
    """Answer the current request with `{"status": "error", "message": ...}` and this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RegisteredApp:
    """A Gupshup app as the sandbox knows it: credentials, number and where its callbacks go."""

    name: str
    api_key: str
    number: str
    callback_url: str
    format: WebhookFormat = "v2"
    app_id: str | None = None
    # Subscribed to Gupshup's BILLING mode: each `sent` message is followed by a billing-event.
    billing_events: bool = False
    # Gupshup's BSUID flags, one per subscription format (`enableBSUID` for v2,
    # `enableBSUIDV3` for v3): only with the one of its format on do webhooks name users by
    # BSUID (and messages from users whose number is withheld reach the app at all).
    bsuid_v2: bool = False
    bsuid_v3: bool = False

    @property
    def bsuid(self) -> bool:
        """Whether this app's webhooks carry BSUIDs: the flag of its subscription's format."""
        return self.bsuid_v3 if self.format == "v3" else self.bsuid_v2

    @property
    def waba_id(self) -> str:
        """A fake but stable WhatsApp Business Account id for v3 payloads."""
        return stable_digits("waba:" + self.name, 15)

    @property
    def phone_number_id(self) -> str:
        """A fake but stable Meta phone number id for v3 payloads."""
        return stable_digits("phone:" + self.number, 15)

    def public_record(self) -> dict[str, Any]:
        """The app as the control API shows it (never the api key)."""
        return {
            "app": self.name,
            "app_id": self.app_id,
            "number": self.number,
            "callback_url": self.callback_url,
            "format": self.format,
            "billing_events": self.billing_events,
            "bsuid": self.bsuid,
            "bsuid_flags": {"enableBSUID": self.bsuid_v2, "enableBSUIDV3": self.bsuid_v3},
        }


@dataclass
class Template:
    """A WhatsApp template applied for through the Partner API; its status is set by tests."""

    id: str
    app_id: str
    namespace: str
    element_name: str
    language: str
    category: str
    template_type: str
    vertical: str
    content: str
    example: str
    created_ms: int
    modified_ms: int
    status: TemplateStatus = "PENDING"
    reason: str | None = None

    def record(self) -> dict[str, Any]:
        """The template as the Partner API shows it, in creation answers and in the list."""
        return {
            "id": self.id,
            "appId": self.app_id,
            "namespace": self.namespace,
            "elementName": self.element_name,
            "languageCode": self.language,
            "category": self.category,
            "templateType": self.template_type,
            "vertical": self.vertical,
            "status": self.status,
            "reason": self.reason,
            "data": self.content,
            "meta": json.dumps({"example": self.example}),
            "createdOn": self.created_ms,
            "modifiedOn": self.modified_ms,
        }


@dataclass(frozen=True)
class Failure:
    """Why an accepted send fails later; `by_gupshup` failures never reach WhatsApp."""

    code: int
    reason: str
    by_gupshup: bool


@dataclass(frozen=True)
class Pricing:
    """How WhatsApp prices a message under per-message pricing (since July 2025)."""

    category: str  # marketing, utility, authentication or service
    billable: bool

    @property
    def type(self) -> str:
        """The pricing type a `sent` status reports."""
        return "regular" if self.billable else "free_customer_service"


# A free-form message inside the lead's 24-hour window.
FREE_SERVICE = Pricing("service", billable=False)


@dataclass
class KnownUser:
    """A WhatsApp user of one app as the sandbox knows them: their BSUID, and their number
    and parent BSUID once a request named them together."""

    user_id: str
    number: str | None = None
    parent_user_id: str | None = None

    def addresses(self) -> set[str]:
        """Every address a send may name this user by."""
        return {a for a in (self.user_id, self.number, self.parent_user_id) if a is not None}


@dataclass(frozen=True)
class Recipient:
    """Who a send reached, as its statuses name them: the number and BSUIDs known when it was
    accepted (a send to a number of a user with no known BSUID has only the number)."""

    number: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None


@dataclass
class SentMessage:
    """A send request the sandbox accepted, i.e. one Gupshup would go on to deliver."""

    message_id: str
    whatsapp_id: str
    source: str
    destination: str
    type: str
    message: dict[str, Any] | None
    template: dict[str, Any] | None
    at: datetime
    failure: Failure | None = None
    pricing: Pricing = FREE_SERVICE
    recipient: Recipient = field(default_factory=Recipient)

    def listing(self) -> dict[str, Any]:
        """The item `GET /sandbox/v1/messages` answers for this send."""
        item: dict[str, Any] = {
            "messageId": self.message_id,
            "source": self.source,
            "destination": self.destination,
            "type": self.type,
            "message": self.message,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.at.microsecond // 1000:03d}Z",
        }
        if self.template is not None:
            item["template"] = self.template
        elif self.message is not None and self.type == "text":
            item["text"] = self.message.get("text")
        elif self.message is not None and self.type == "request_contact_info":
            item["text"] = self.message["body"]["text"]
        if self.failure is not None:
            item["failure"] = {"code": self.failure.code, "reason": self.failure.reason}
        return item


@dataclass
class Fault:
    """An injected failure for send requests; `remaining=None` lasts until cleared."""

    mode: FaultMode
    remaining: int | None
    delay_ms: int
    accept: bool
    retry_after_seconds: int | None = None

    def describe(self, app: str | None) -> dict[str, Any]:
        """The fault as the control API shows it."""
        return {
            "app": app,
            "mode": self.mode,
            "count": self.remaining,
            "delay_ms": self.delay_ms,
            "accept": self.accept,
            "retry_after_seconds": self.retry_after_seconds,
        }


@dataclass
class AppRules:
    """WhatsApp's rules the sandbox enforces for one app; an app without rules gets none."""

    throughput_per_second: int | None = None
    pair_rate: bool = False
    enforce_window: bool = False
    # Status -> delay after acceptance; a status that is missing (or 0) is never posted.
    status_delays_ms: dict[DeliveryStatus, int] | None = None

    def describe(self) -> dict[str, Any]:
        """The rules as the control API shows them."""
        return {
            "throughput_per_second": self.throughput_per_second,
            "pair_rate": self.pair_rate,
            "enforce_window": self.enforce_window,
            "status_delays_ms": self.status_delays_ms,
        }


@dataclass
class StatusFaults:
    """How the app's status callbacks misbehave: posted twice, or later ones first."""

    duplicate: bool = False
    reorder: bool = False

    def describe(self, app: str) -> dict[str, Any]:
        """The status faults as the control API shows them."""
        return {"app": app, "duplicate": self.duplicate, "reorder": self.reorder}


@dataclass
class SandboxState:
    """Everything the sandbox remembers; lost on restart or `POST /sandbox/v1/reset`."""

    auto_status: bool = False
    apps: dict[str, RegisteredApp] = field(default_factory=dict)
    sent: dict[str, list[SentMessage]] = field(default_factory=dict)
    # App name -> template id -> template, in creation order.
    templates: dict[str, dict[str, Template]] = field(default_factory=dict)
    # The None key holds the fault that applies to every app without one of its own.
    faults: dict[str | None, Fault] = field(default_factory=dict)
    # (email, password) that login requires; None accepts any non-empty pair.
    partner_credentials: tuple[str, str] | None = None
    partner_tokens: set[str] = field(default_factory=set)
    app_tokens: dict[str, str] = field(default_factory=dict)
    rules: dict[str, AppRules] = field(default_factory=dict)
    # App name -> destinations that opted out.
    opted_out: dict[str, set[str]] = field(default_factory=dict)
    status_faults: dict[str, StatusFaults] = field(default_factory=dict)
    # (app name, lead's number or BSUID) -> when (sandbox clock) the lead last wrote through the
    # control API; a lead known by both has an entry under each.
    last_inbound: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # App name -> BSUID -> what the sandbox was told of that user.
    users: dict[str, dict[str, KnownUser]] = field(default_factory=dict)
    # Added to the real time wherever the sandbox reads the time, so tests can skip hours.
    clock_offset: timedelta = timedelta()
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def now(self) -> datetime:
        """The sandbox's notion of now: real UTC time shifted by the clock offset."""
        return datetime.now(UTC) + self.clock_offset

    def now_ms(self) -> int:
        """The sandbox's now in milliseconds since the epoch, as Gupshup's timestamps are."""
        return epoch_ms(self.now())

    def app_named(self, name: str) -> RegisteredApp:
        """The registered app called `name`, or a 404 for the control API."""
        app = self.apps.get(name)
        if app is None:
            raise ErrorResponse(404, f"Unknown app {name!r}")
        return app

    def app_with_id(self, app_id: str) -> RegisteredApp:
        """The registered app whose Gupshup app id is `app_id`, or a 404."""
        for app in self.apps.values():
            if app.app_id == app_id:
                return app
        raise ErrorResponse(404, "App not found")

    def template_of(
        self,
        app: str,
        *,
        template_id: str | None = None,
        element_name: str | None = None,
        language: str | None = None,
    ) -> Template:
        """The app's template with this id, or with this name and language; else a 404."""
        for template in self.templates.get(app, {}).values():
            if template_id is not None and template.id == template_id:
                return template
            if template_id is None and (template.element_name, template.language) == (
                element_name,
                language,
            ):
                return template
        raise ErrorResponse(404, f"Unknown template for app {app!r}")

    def remember_user(
        self, app: str, user_id: str, number: str | None, parent_user_id: str | None
    ) -> KnownUser:
        """Record that `user_id` (of `app`) has this number and parent BSUID, where given."""
        user = self.users.setdefault(app, {}).setdefault(user_id, KnownUser(user_id))
        if number is not None:
            user.number = number
        if parent_user_id is not None:
            user.parent_user_id = parent_user_id
        return user

    def user_at(self, app: str, address: str) -> KnownUser | None:
        """The known user a send address (a number, a BSUID or a parent BSUID) names, if any."""
        for user in self.users.get(app, {}).values():
            if address in user.addresses():
                return user
        return None

    def addresses_of(self, app: str, address: str) -> set[str]:
        """`address` and every other address the sandbox knows for the same user."""
        user = self.user_at(app, address)
        return {address} | (user.addresses() if user is not None else set())

    def take_fault(self, app: str) -> Fault | None:
        """The fault that applies to this send, counting it against the fault's budget."""
        scope: str | None = app if app in self.faults else None
        fault = self.faults.get(scope)
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.faults[scope]
        return fault

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, keeping a reference so it is not collected early."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def reset(self) -> None:
        """Forget everything, including callbacks still in flight from before the reset."""
        for task in self.tasks:
            task.cancel()
        self.apps.clear()
        self.sent.clear()
        self.templates.clear()
        self.faults.clear()
        self.partner_credentials = None
        self.partner_tokens.clear()
        self.app_tokens.clear()
        self.rules.clear()
        self.opted_out.clear()
        self.status_faults.clear()
        self.last_inbound.clear()
        self.users.clear()
        self.clock_offset = timedelta()


def new_whatsapp_id() -> str:
    """A fresh id shaped like WhatsApp's (`wamid.` and base64)."""
    return "wamid." + base64.b64encode(b"\x18\x0c" + secrets.token_bytes(22)).decode()


def stable_digits(seed: str, length: int) -> str:
    """Digits derived from `seed`, so fake ids stay the same across calls and restarts."""
    return str(int(hashlib.sha256(seed.encode()).hexdigest(), 16))[:length]


def namespace_of(app_id: str) -> str:
    """A fake but stable WhatsApp template namespace for an app."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "gupshup-app:" + app_id)).replace("-", "_")


def epoch_ms(moment: datetime) -> int:
    """`moment` in milliseconds since the epoch."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


STATE_KEY = web.AppKey("sandbox_state", SandboxState)
HTTP_KEY = web.AppKey("sandbox_http", aiohttp.ClientSession)
