"""Versioned pydantic models: the only things that cross the broker.

Each model carries a `kind` such as `inbound.message.v1`; a breaking change gets a
new kind, so old and new consumers can run side by side during a rollout. A model that a
stage consumes names that stage in `consumed_by`: the broker binds the stage's queue to the
model's kind from it (`shared.broker.stage_bindings`), and the stage's `__main__` says which
function handles it (`shared.broker.Subscriptions`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared import clock


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, from the platform's clock (`shared.clock`)."""
    return clock.now()


class Event(BaseModel):
    """Base of every broker message: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The stage whose queue receives this kind (None: no stage consumes it from the broker).
    consumed_by: ClassVar[str | None] = None

    event_id: str


class TenantEvent(Event):
    """An event that belongs to one agent of one organization."""

    org_id: str
    agent_id: str


class RawWebhook(TenantEvent):
    """A Gupshup callback exactly as received, with the agent its URL authenticated."""

    consumed_by: ClassVar[str | None] = "router"
    kind: Literal["inbound.raw.v1"] = "inbound.raw.v1"
    received_at: datetime
    body: dict[str, Any]


MessageType = Literal[
    "text",
    "image",
    "file",
    "audio",
    "video",
    "sticker",
    "location",
    "list_reply",
    "button_reply",
    "contacts",
    "unsupported",
]


class Media(BaseModel):
    """A media attachment of an inbound message."""

    model_config = ConfigDict(frozen=True)

    url: str | None = None
    content_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    url_expires_at: datetime | None = None  # the provider's URL stops working after this


class Location(BaseModel):
    """A shared location."""

    model_config = ConfigDict(frozen=True)

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class ReplyChoice(BaseModel):
    """The option a lead picked from a list, a button or a template quick reply."""

    model_config = ConfigDict(frozen=True)

    id: str | None = None
    title: str
    postback: str | None = None
    description: str | None = None  # a list row's second line, shown under the title


class InboundMessage(TenantEvent):
    """A lead's WhatsApp message to an agent's number."""

    consumed_by: ClassVar[str | None] = "dedup"
    kind: Literal["inbound.message.v1"] = "inbound.message.v1"
    provider_message_id: str
    # Who wrote: the number (digits with country code, as WhatsApp writes them) when WhatsApp
    # shares it, the business-scoped user ID when the app receives them; at least one.
    lead_wa_id: str | None = None
    lead_user_id: str | None = None
    lead_parent_user_id: str | None = None
    lead_username: str | None = None  # display only: it can change
    lead_name: str | None = None
    type: MessageType
    text: str | None = None
    media: Media | None = None
    location: Location | None = None
    choice: ReplyChoice | None = None
    context_message_id: str | None = None  # the message of ours the lead replied to
    # Gupshup's id of that message (v2 only): the `messageId` our send got back, so a reply
    # can be matched before the status that maps it to the WhatsApp id has arrived.
    context_gupshup_message_id: str | None = None
    referral: dict[str, Any] | None = None  # click-to-WhatsApp ad data (attribution)
    # Numbers in a contact card the lead shared (digits as WhatsApp writes them), with the
    # one WhatsApp vouches for as the lead's own when they answered a request for it.
    shared_numbers: list[str] = Field(default_factory=list)
    shared_own_number: str | None = None
    sent_at: datetime  # the provider's timestamp
    received_at: datetime

    @model_validator(mode="after")
    def _names_its_sender(self) -> InboundMessage:
        if not (self.lead_wa_id or self.lead_user_id or self.lead_parent_user_id):
            raise ValueError("an inbound message names its sender by number or user ID")
        return self


DeliveryState = Literal["enqueued", "sent", "delivered", "read", "failed", "deleted"]


class DeliveryStatus(TenantEvent):
    """Gupshup's report on a message we sent."""

    consumed_by: ClassVar[str | None] = "outbound"
    kind: Literal["delivery.status.v1"] = "delivery.status.v1"
    status: DeliveryState
    gupshup_message_id: str | None = None
    whatsapp_message_id: str | None = None
    destination: str | None = None  # the number, or the BSUID a send went to
    user_id: str | None = None  # the recipient's BSUID, when the app receives them
    error_code: int | None = None
    error_reason: str | None = None
    pricing_category: str | None = None
    pricing_type: str | None = None  # regular (billable), free_customer_service, free_entry_point
    at: datetime


class UserEvent(TenantEvent):
    """A lead opted in or out at the provider."""

    consumed_by: ClassVar[str | None] = "dedup"
    kind: Literal["user.event.v1"] = "user.event.v1"
    type: str  # opted-in, opted-out, changed-number, sandbox-start ...
    lead_wa_id: str | None = None
    lead_user_id: str | None = None
    # A user who changed number: the number they had (their new one is `lead_wa_id`).
    previous_wa_id: str | None = None
    at: datetime


class TemplateEvent(TenantEvent):
    """A template's approval status changed."""

    consumed_by: ClassVar[str | None] = "outbound"
    kind: Literal["template.event.v1"] = "template.event.v1"
    template_id: str | None = None
    name: str | None = None
    language: str | None = None
    status: str
    reason: str | None = None
    at: datetime


class BillingEvent(TenantEvent):
    """Per-message pricing reported by Gupshup."""

    consumed_by: ClassVar[str | None] = "outbound"
    kind: Literal["billing.event.v1"] = "billing.event.v1"
    gupshup_message_id: str | None = None
    whatsapp_message_id: str | None = None
    destination: str | None = None
    category: str | None = None
    billable: bool | None = None
    model: str | None = None
    at: datetime


class IgnoredEvent(TenantEvent):
    """A callback we accept and count but do not act on (platform or account events)."""

    kind: Literal["ignored.event.v1"] = "ignored.event.v1"
    type: str
    at: datetime


RoutedEvent = Annotated[
    InboundMessage | DeliveryStatus | UserEvent | TemplateEvent | BillingEvent | IgnoredEvent,
    Field(discriminator="kind"),
]


class ThreadWork(TenantEvent):
    """A thread has unanswered inbound messages."""

    consumed_by: ClassVar[str | None] = "brain"
    kind: Literal["thread.work.v1"] = "thread.work.v1"
    thread_id: str
    lead_id: str


class AgentChanged(TenantEvent):
    """An agent's configuration changed: every replica drops what it cached about the agent."""

    kind: Literal["config.agent_changed.v1"] = "config.agent_changed.v1"


class Choice(BaseModel):
    """One row of a list message; `id` comes back as the reply's postback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=24)  # WhatsApp's limit for a row title
    description: str | None = Field(default=None, max_length=72)


class Bubble(BaseModel):
    """One WhatsApp message of a reply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # contact_request: WhatsApp's request-contact-info message, asking a lead whose number
    # WhatsApp withholds to share it (their choice; nothing waits on it).
    type: Literal["text", "template", "list", "contact_request"] = "text"
    text: str  # for a template: its rendered body; for a list: the text above the button
    template_id: str | None = None
    params: list[str] = Field(default_factory=list)
    # A list message: the button that opens it, and its rows (at most 10).
    button: str | None = Field(default=None, max_length=20)
    choices: list[Choice] = Field(default_factory=list, max_length=10)


# Why a send command exists: the one message an opted-out lead may still get is its
# confirmation; follow-ups and reminders are business-initiated.
Purpose = Literal["reply", "opt_out_confirmation", "follow_up", "reminder", "agent_notification"]


class SendCommand(TenantEvent):
    """A reply to deliver: its bubbles go out in order, each at most once."""

    consumed_by: ClassVar[str | None] = "outbound"
    kind: Literal["send.command.v1"] = "send.command.v1"
    command_id: str
    thread_id: str
    lead_id: str
    # The lead's address: the E.164 number when known, else their BSUID (an agent
    # notification: the agent's own number).
    destination: str
    bubbles: list[Bubble]
    created_at: datetime
    # The one message an opted-out lead may still receive is the confirmation of it;
    # follow-ups and reminders are business-initiated: they wait for the agent's send hours;
    # an agent notification goes to the agent's own number (`notify_number`), not the lead.
    purpose: Purpose = "reply"
    # Template bubbles to send instead when the 24-hour window has closed before delivery.
    fallback: list[Bubble] = Field(default_factory=list)

    @property
    def business_initiated(self) -> bool:
        """Whether the business writes first (not an answer to the lead)."""
        return self.purpose in ("follow_up", "reminder")

    def send_id(self, index: int) -> str:
        """The id of one bubble's send: also its message's provider id until Gupshup's is known."""
        return f"{self.command_id}.{index}"

    def fallback_send_id(self, index: int) -> str:
        """The id of one fallback bubble's send."""
        return f"{self.command_id}.f{index}"
