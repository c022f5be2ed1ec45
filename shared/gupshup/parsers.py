"""Gupshup callback bodies (v2 and Meta-shaped v3) turned into the typed events of shared.models.

Strict about shape, lenient about vocabulary: a field of the wrong type raises MalformedPayload,
while an event, status or message type we do not know becomes an IgnoredEvent or an
"unsupported" message, because Gupshup adds types without notice and must still get its 2xx.
An inbound message's `text` is what the lead wrote or tapped: the text body, a media caption,
the title of the reply they picked or the names and numbers of the contacts they shared.

Who wrote is named by number, by business-scoped user ID (BSUID) or both, and each identifier
lands in its own field by what it is: v2 puts a BSUID in `source` for a user whose number is
withheld, so a value written as a BSUID is never taken for a number; a field that should hold
a BSUID and holds anything else is malformed, so a number never passes for one. Numbers are
kept as WhatsApp reports them (dedup normalizes them).

This module reads the format; which agent a callback belongs to is decided once, by
shared.gupshup.attribution, on top of `parse_webhook` and `app_identity`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal, NamedTuple, Required, TypedDict, get_args

from pydantic import ValidationError

from shared.identity import is_bsuid
from shared.models import (
    BillingEvent,
    DeliveryState,
    DeliveryStatus,
    IgnoredEvent,
    InboundMessage,
    Location,
    Media,
    MessageType,
    ReplyChoice,
    RoutedEvent,
    TemplateEvent,
    UserEvent,
)

__all__ = ["MAX_NESTING", "AppIdentity", "MalformedPayload", "app_identity", "parse_webhook"]

# Real callbacks nest about ten levels; anything far deeper is not Gupshup and would only risk a
# RecursionError in whatever copies or serializes the body after us.
MAX_NESTING: Final = 32

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
_SECOND: Final = timedelta(seconds=1)
_DELIVERY_STATES: Final[frozenset[str]] = frozenset(get_args(DeliveryState))


class MalformedPayload(ValueError):
    """The body is not a Gupshup callback we can read; the message says what is wrong and where."""


@dataclass(frozen=True)
class AppIdentity:
    """The Gupshup app and WhatsApp number a callback names; None where the callback is silent."""

    app_name: str | None
    app_id: str | None
    phone_number_id: str | None
    display_phone_number: str | None


def app_identity(body: Mapping[str, Any]) -> AppIdentity:
    """Read the app a callback names: v2 `app`, `appId` and `phone`; v3 `gs_app_id` and metadata."""
    root = _root(body)
    with _unexpected_shapes_as_malformed():
        if _format_of(root) == "v3":
            return _v3_app_identity(root)
        return _v2_app_identity(root)


def parse_webhook(
    body: Mapping[str, Any],
    *,
    org_id: str,
    agent_id: str,
    event_id: str,
    received_at: datetime,
) -> list[RoutedEvent]:
    """Turn one callback body into its events, in payload order, with ids f"{event_id}:{index}".

    Raises MalformedPayload when the body is not a callback we can read.
    """
    if received_at.tzinfo is None:
        # The caller's bug, not the payload's: keep it out of MalformedPayload.
        raise ValueError("received_at must be timezone-aware")
    context = _Context(org_id, agent_id, event_id, received_at.astimezone(UTC))
    root = _root(body)
    _reject_deep_nesting(body)
    with _unexpected_shapes_as_malformed():
        parse = _parse_v3 if _format_of(root) == "v3" else _parse_v2
        events = parse(root, context)
        # Builders cannot know an event's position in the list, so ids are numbered here.
        return [
            event.model_copy(update={"event_id": f"{event_id}:{index}"})
            for index, event in enumerate(events)
        ]


# --- Reading JSON with paths in the error messages ------------------------------------------


@dataclass(frozen=True)
class _JsonObject:
    """A JSON object being read, with its path in the body so errors can say where."""

    data: Mapping[str, Any]
    path: str

    def error(self, key: str, problem: str) -> MalformedPayload:
        """An error about the field `key` of this object."""
        where = f"{self.path}.{key}" if self.path else key
        return MalformedPayload(f"{where}: {problem}")

    def has(self, key: str) -> bool:
        """Whether `key` is present and not null."""
        return self.data.get(key) is not None

    def string(self, key: str) -> str:
        """A required string (possibly empty, like a text body)."""
        value = self._required(key)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_json_type(value)}")
        return value

    def identifier(self, key: str) -> str:
        """A required non-empty string: an empty id would make every message look the same."""
        value = self.string(key)
        if not value:
            raise self.error(key, "expected a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        """A string, or None when absent or null."""
        return self.string(key) if self.has(key) else None

    def optional_int(self, key: str) -> int | None:
        """An integer, or None when absent or null; digit strings count, as v3 writes numbers so."""
        if not self.has(key):
            return None
        value = self.data[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
            return int(value)
        raise self.error(key, f"expected an integer, got {_json_type(value)}")

    def optional_bool(self, key: str) -> bool | None:
        """A boolean, or None when absent or null."""
        if not self.has(key):
            return None
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.error(key, f"expected a boolean, got {_json_type(value)}")
        return value

    def number(self, key: str) -> float:
        """A required finite number; numeric strings count, as v2 writes coordinates so."""
        value = self._required(key)
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise self.error(key, f"expected a finite number, got {_json_type(value)}")
        return number

    def child(self, key: str) -> _JsonObject:
        """A required nested object."""
        return self._as_object(self._required(key), self._path_of(key))

    def child_or_empty(self, key: str) -> _JsonObject:
        """A nested object, or an empty one when absent or null, so optional fields read as None."""
        if not self.has(key):
            return _JsonObject({}, self._path_of(key))
        return self.child(key)

    def children(self, key: str) -> list[_JsonObject]:
        """A required array of objects."""
        value = self._required(key)
        if not isinstance(value, list):
            raise self.error(key, f"expected an array, got {_json_type(value)}")
        path = self._path_of(key)
        return [self._as_object(item, f"{path}[{index}]") for index, item in enumerate(value)]

    def children_or_empty(self, key: str) -> list[_JsonObject]:
        """An array of objects, or an empty list when absent or null."""
        return self.children(key) if self.has(key) else []

    def _required(self, key: str) -> Any:
        if key not in self.data:
            raise self.error(key, "missing")
        return self.data[key]

    def _path_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    @staticmethod
    def _as_object(value: Any, path: str) -> _JsonObject:
        if not isinstance(value, Mapping):
            raise MalformedPayload(f"{path}: expected an object, got {_json_type(value)}")
        return _JsonObject(value, path)


def _root(body: object) -> _JsonObject:
    if not isinstance(body, Mapping):
        raise MalformedPayload(f"body: expected an object, got {_json_type(body)}")
    return _JsonObject(body, "")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _reject_deep_nesting(body: object) -> None:
    # Iterative, so that checking depth cannot itself overflow the stack.
    pending: list[tuple[object, int]] = [(body, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise MalformedPayload(f"body: nested more than {MAX_NESTING} levels deep")
        if isinstance(value, Mapping):
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list | tuple):
            pending.extend((item, depth + 1) for item in value)


@contextmanager
def _unexpected_shapes_as_malformed() -> Iterator[None]:
    # The explicit checks name the field; this net turns whatever they missed into the same
    # error, so a surprising payload is dead-lettered instead of crashing the consumer.
    try:
        yield
    except MalformedPayload:
        raise
    except (ValidationError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise MalformedPayload(f"body: unreadable callback ({type(exc).__name__}: {exc})") from exc


def _optional_timestamp(node: _JsonObject, key: str, unit: timedelta) -> datetime | None:
    count = node.optional_int(key)
    if count is None:
        return None
    try:
        return _EPOCH + count * unit
    except OverflowError as exc:
        raise node.error(key, "timestamp out of range") from exc


def _format_of(root: _JsonObject) -> Literal["v2", "v3"]:
    if "object" in root.data or "entry" in root.data:
        return "v3"
    if "type" in root.data and "payload" in root.data:
        return "v2"
    raise MalformedPayload("body: neither a v2 callback (type, payload) nor v3 (object, entry)")


# --- Pieces shared by both formats -----------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What every event of one callback shares."""

    org_id: str
    agent_id: str
    event_id: str
    received_at: datetime

    def tenant(self) -> dict[str, Any]:
        """The common event fields; event_id is provisional until parse_webhook numbers it."""
        return {"event_id": self.event_id, "org_id": self.org_id, "agent_id": self.agent_id}


class _Content(TypedDict, total=False):
    """What a lead's message says, the same whichever format carried it: the fields of
    InboundMessage it fills (those left out stay None)."""

    type: Required[MessageType]
    text: str | None
    media: Media
    location: Location
    choice: ReplyChoice
    shared_numbers: list[str]
    # A candidate only: it counts as the lead's own number when the message answers ours.
    shared_own_number: str | None


_ContentReader = Callable[[_JsonObject], _Content]


class _Sender(NamedTuple):
    """Who a message is from, as one callback names them: the number, the BSUID, the parent
    BSUID (each None when not given), and the profile's username and name."""

    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    name: str | None = None

    def names_someone(self) -> bool:
        """Whether there is an identifier to tell who wrote (a name or username is none)."""
        return bool(self.wa_id or self.user_id or self.parent_user_id)


def _number_or_user_id(node: _JsonObject, key: str) -> tuple[str | None, str | None]:
    """(number, BSUID) from a field WhatsApp fills with the user's number, which v2 fills with
    the BSUID instead when the number is withheld; (None, None) when absent."""
    if not node.has(key):
        return None, None
    value = node.identifier(key)
    return (None, value) if is_bsuid(value) else (value, None)


def _user_id(node: _JsonObject, key: str) -> str | None:
    """A BSUID field, or None when absent; anything else there is malformed, so that a number
    can never be taken for a user ID."""
    if not node.has(key):
        return None
    value = node.identifier(key)
    if not is_bsuid(value):
        raise node.error(key, "expected a business-scoped user ID (CC.alphanumerics)")
    return value


def _inbound_message(
    context: _Context,
    content: _Content,
    *,
    message_id: str,
    sender: _Sender,
    sent_at: datetime,
    context_message_id: str | None = None,
    context_gupshup_message_id: str | None = None,
    referral: dict[str, Any] | None = None,
) -> InboundMessage:
    if context_message_id is None and context_gupshup_message_id is None:
        # A card vouches for the lead's own number only as the answer to our request for it.
        content = content.copy()
        content.pop("shared_own_number", None)
    return InboundMessage(
        **context.tenant(),
        **content,
        provider_message_id=message_id,
        lead_wa_id=sender.wa_id,
        lead_user_id=sender.user_id,
        lead_parent_user_id=sender.parent_user_id,
        lead_username=sender.username,
        lead_name=sender.name,
        context_message_id=context_message_id,
        context_gupshup_message_id=context_gupshup_message_id,
        referral=referral,
        sent_at=sent_at,
        received_at=context.received_at,
    )


class _MessageIds(NamedTuple):
    """The ids a status gives the message it is about: Gupshup's, then WhatsApp's."""

    gupshup: str | None
    whatsapp: str | None


def _delivery_status(
    context: _Context,
    status: str,
    ids: _MessageIds,
    recipient: tuple[str | None, str | None],
    error: tuple[int | None, str | None],
    status_node: _JsonObject,
    at: datetime,
) -> DeliveryStatus:
    """A delivery status as either format reads it; `error` is (code, reason), and both
    formats put the pricing in the status object's `pricing`. `recipient` is (destination,
    BSUID): the address the send went to, a number or a BSUID, and the recipient's BSUID."""
    pricing = status_node.child_or_empty("pricing")
    destination, user_id = recipient
    error_code, error_reason = error
    return DeliveryStatus(
        **context.tenant(),
        status=status,
        gupshup_message_id=ids.gupshup,
        whatsapp_message_id=ids.whatsapp,
        destination=destination,
        user_id=user_id,
        error_code=error_code,
        error_reason=error_reason,
        pricing_category=pricing.optional_string("category"),
        pricing_type=pricing.optional_string("type"),
        at=at,
    )


def _ignored(event_type: str, at: datetime, context: _Context) -> IgnoredEvent:
    return IgnoredEvent(**context.tenant(), type=event_type, at=at)


def _reply(kind: MessageType, choice: ReplyChoice) -> _Content:
    return _Content(type=kind, text=choice.title, choice=choice)


def _attachment(kind: MessageType, media: Media) -> _Content:
    return _Content(type=kind, text=media.caption, media=media)


def _location(body: _JsonObject) -> _Content:
    latitude, longitude = body.number("latitude"), body.number("longitude")
    if not -90 <= latitude <= 90:
        raise body.error("latitude", "out of range")
    if not -180 <= longitude <= 180:
        raise body.error("longitude", "out of range")
    location = Location(
        latitude=latitude,
        longitude=longitude,
        name=body.optional_string("name"),
        address=body.optional_string("address"),
    )
    return _Content(type="location", location=location)


def _unsupported(_body: _JsonObject) -> _Content:
    return _Content(type="unsupported")


def _shared_contacts(cards: list[_JsonObject]) -> _Content:
    """Contact cards the lead shared (both formats write Meta's card: `name`, `phones`): a
    line per card, every number, and the candidate for the lead's own number: the one
    WhatsApp number (`wa_id`) of a lone card, as a user sharing their own contact sends."""
    lines: list[str] = []
    numbers: list[str] = []
    whatsapp_numbers: list[str] = []
    for card in cards:
        shown: list[str] = []
        whatsapp_numbers = []
        for phone in card.children_or_empty("phones"):
            wa_id, written = phone.optional_string("wa_id"), phone.optional_string("phone")
            # A number without wa_id is not on WhatsApp; kept as its digits all the same.
            number = wa_id or "".join(char for char in written or "" if char.isdigit())
            if number and number not in numbers:
                numbers.append(number)
            if written or wa_id:
                shown.append(written or f"+{wa_id}")
            if wa_id:
                whatsapp_numbers.append(wa_id)
        # A card saved without a name is named by its number: no need to say it twice.
        name = _card_name(card)
        label = "" if name in shown else name
        line = ": ".join(part for part in (label, ", ".join(shown)) if part)
        if line:
            lines.append(line)
    lone_number = len(cards) == 1 and len(whatsapp_numbers) == 1
    return _Content(
        type="contacts",
        text="; ".join(lines) or None,
        shared_numbers=numbers,
        shared_own_number=whatsapp_numbers[0] if lone_number else None,
    )


def _card_name(card: _JsonObject) -> str:
    name = card.child_or_empty("name")
    parts = (name.optional_string("first_name"), name.optional_string("last_name"))
    return name.optional_string("formatted_name") or " ".join(part for part in parts if part)


# --- v2: Gupshup's own format ----------------------------------------------------------------


def _parse_v2(root: _JsonObject, context: _Context) -> list[RoutedEvent]:
    event_type = root.string("type")
    at = _optional_timestamp(root, "timestamp", _MILLISECOND) or context.received_at
    read_event = _V2_EVENT_READERS.get(event_type)
    if read_event is None:
        # platform-event (connectivity checks), account-event and whatever Gupshup adds later.
        return [_ignored(event_type, at, context)]
    return [read_event(root.child("payload"), at, context)]


def _v2_app_identity(root: _JsonObject) -> AppIdentity:
    return AppIdentity(
        app_name=root.optional_string("app"),
        app_id=root.optional_string("appId"),
        phone_number_id=None,
        display_phone_number=root.optional_string("phone"),
    )


def _v2_inbound_message(payload: _JsonObject, at: datetime, context: _Context) -> InboundMessage:
    read_content = _V2_MESSAGE_READERS.get(payload.string("type"), _unsupported)
    replied_to = payload.child_or_empty("context")
    # A message from a click-to-WhatsApp ad carries Meta's referral object, as in v3.
    referral = payload.child_or_empty("referral").data
    return _inbound_message(
        context,
        read_content(payload.child("payload")),
        message_id=payload.identifier("id"),
        sender=_v2_sender(payload),
        sent_at=at,
        context_message_id=replied_to.optional_string("id"),
        context_gupshup_message_id=replied_to.optional_string("gsId"),
        referral=copy.deepcopy(dict(referral)) if referral else None,
    )


def _v2_sender(payload: _JsonObject) -> _Sender:
    """The lead as a v2 message names them: `source` (the number, or the BSUID of a user whose
    number is withheld; absent in some payloads) and `sender` (`phone`, `userId`, `username`)."""
    sender = payload.child_or_empty("sender")
    source_number, source_user_id = _number_or_user_id(payload, "source")
    phone_number, phone_user_id = _number_or_user_id(sender, "phone")
    lead = _Sender(
        wa_id=source_number or phone_number,
        user_id=_user_id(sender, "userId") or source_user_id or phone_user_id,
        username=sender.optional_string("username"),
        name=sender.optional_string("name"),
    )
    if not lead.names_someone():
        raise MalformedPayload(
            f"{payload.path}: names no user (no source, sender.phone or sender.userId)"
        )
    return lead


def _v2_text(body: _JsonObject) -> _Content:
    return _Content(type="text", text=body.string("text"))


def _v2_media(kind: MessageType, body: _JsonObject) -> _Content:
    media = Media(
        url=body.optional_string("url"),
        content_type=body.optional_string("contentType"),
        caption=body.optional_string("caption"),
        filename=body.optional_string("name"),
        url_expires_at=_optional_timestamp(body, "urlExpiry", _MILLISECOND),
    )
    return _attachment(kind, media)


def _v2_reply(kind: MessageType, body: _JsonObject) -> _Content:
    choice = ReplyChoice(
        id=body.optional_string("id"),
        title=body.string("title"),
        postback=body.optional_string("postbackText"),
        description=body.optional_string("description"),
    )
    return _reply(kind, choice)


def _v2_template_quick_reply(body: _JsonObject) -> _Content:
    choice = ReplyChoice(title=body.string("text"), postback=body.optional_string("postbackText"))
    return _reply("button_reply", choice)


def _v2_contacts(body: _JsonObject) -> _Content:
    return _shared_contacts(body.children("contacts"))


# Any other type (reactions, whatever Gupshup adds) is an "unsupported" message.
_V2_MESSAGE_READERS: Final[dict[str, _ContentReader]] = {
    "text": _v2_text,
    "image": partial(_v2_media, "image"),
    "file": partial(_v2_media, "file"),
    "audio": partial(_v2_media, "audio"),
    "video": partial(_v2_media, "video"),
    "sticker": partial(_v2_media, "sticker"),
    "location": _location,
    "list_reply": partial(_v2_reply, "list_reply"),
    "button_reply": partial(_v2_reply, "button_reply"),
    # A template's quick-reply button; to us it is a button reply like any other.
    "quick_reply": _v2_template_quick_reply,
    "contact": _v2_contacts,
}


def _v2_delivery_status(
    payload: _JsonObject, at: datetime, context: _Context
) -> DeliveryStatus | IgnoredEvent:
    status = payload.string("type")
    if status not in _DELIVERY_STATES:
        return _ignored(f"message-event/{status}", at, context)
    message_id = payload.identifier("id")
    details = payload.child_or_empty("payload")
    # Until WhatsApp has the message (enqueued, failed) Gupshup can only name it by its own id;
    # from sent on, `id` is WhatsApp's and `gsId` Gupshup's.
    if status in ("enqueued", "failed"):
        ids = _MessageIds(message_id, details.optional_string("whatsappMessageId"))
    else:
        ids = _MessageIds(payload.optional_string("gsId"), message_id)
    failure = details if status == "failed" else _JsonObject({}, details.path)
    error = (failure.optional_int("code"), failure.optional_string("reason"))
    # A send addressed to a BSUID names it in `destination`; `userId` is the recipient's BSUID.
    destination = payload.optional_string("destination")
    bsuid_destination = destination if destination is not None and is_bsuid(destination) else None
    recipient = (destination, _user_id(payload, "userId") or bsuid_destination)
    return _delivery_status(context, status, ids, recipient, error, payload, at)


def _v2_user_event(payload: _JsonObject, at: datetime, context: _Context) -> UserEvent:
    phone = payload.optional_string("phone")
    # sandbox-start carries a placeholder such as "callbackSetPhone" instead of a number.
    is_number = phone is not None and phone.isascii() and phone.isdigit()
    return UserEvent(
        **context.tenant(),
        type=payload.string("type"),
        lead_wa_id=phone if is_number else None,
        lead_user_id=_user_id(payload, "userId"),
        at=at,
    )


def _v2_template_event(
    payload: _JsonObject, at: datetime, context: _Context
) -> TemplateEvent | IgnoredEvent:
    update = payload.optional_string("type")
    if update not in (None, "status-update"):
        # Other updates (category, quality) carry no status, and nothing acts on them yet.
        return _ignored(f"template-event/{update}", at, context)
    return TemplateEvent(
        **context.tenant(),
        template_id=payload.optional_string("id"),
        name=payload.optional_string("elementName"),
        language=payload.optional_string("languageCode"),
        status=payload.string("status"),
        # The callback calls it rejectedReason, the Partner API's template list `reason`.
        reason=payload.optional_string("rejectedReason") or payload.optional_string("reason"),
        at=at,
    )


def _v2_billing_event(payload: _JsonObject, at: datetime, context: _Context) -> BillingEvent:
    deductions = payload.child("deductions")
    references = payload.child("references")
    return BillingEvent(
        **context.tenant(),
        gupshup_message_id=references.optional_string("gsId"),
        whatsapp_message_id=references.optional_string("id"),
        destination=references.optional_string("destination"),
        category=deductions.optional_string("category"),
        billable=deductions.optional_bool("billable"),
        model=deductions.optional_string("model"),
        at=at,
    )


_V2_EVENT_READERS: Final[dict[str, Callable[[_JsonObject, datetime, _Context], RoutedEvent]]] = {
    "message": _v2_inbound_message,
    "message-event": _v2_delivery_status,
    "user-event": _v2_user_event,
    "template-event": _v2_template_event,
    "billing-event": _v2_billing_event,
}


# --- v3: Meta's Cloud API shape, as Gupshup forwards it ---------------------------------------


def _parse_v3(root: _JsonObject, context: _Context) -> list[RoutedEvent]:
    events: list[RoutedEvent] = []
    for change in _v3_changes(root):
        field = change.string("field")
        if field == "messages":
            events.extend(_v3_change_events(change.child("value"), context))
        else:
            # Template, account and quality updates: nothing acts on them yet.
            events.append(_ignored(field, context.received_at, context))
    return events


def _v3_changes(root: _JsonObject) -> Iterator[_JsonObject]:
    for entry in root.children("entry"):
        yield from entry.children("changes")


def _v3_app_identity(root: _JsonObject) -> AppIdentity:
    numbers: list[tuple[str | None, str | None]] = []
    for change in _v3_changes(root):
        metadata = change.child_or_empty("value").child_or_empty("metadata")
        number = (
            metadata.optional_string("phone_number_id"),
            metadata.optional_string("display_phone_number"),
        )
        if number != (None, None) and number not in numbers:
            numbers.append(number)
    if len(numbers) > 1:
        # Ingress vouches for one number per callback URL; a mixed body cannot be vouched for.
        raise MalformedPayload("entry: changes name different phone numbers")
    phone_number_id, display_phone_number = numbers[0] if numbers else (None, None)
    return AppIdentity(
        app_name=None,
        app_id=root.optional_string("gs_app_id"),
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
    )


def _v3_change_events(value: _JsonObject, context: _Context) -> list[RoutedEvent]:
    profiles = _v3_profiles(value)
    events: list[RoutedEvent] = []
    # Meta keeps messages and statuses in separate arrays; walking the keys in the order the
    # body lists them keeps "payload order" should one change ever carry both.
    for key in value.data:
        if key == "messages":
            messages = value.children_or_empty("messages")
            events.extend(_v3_message(message, profiles, context) for message in messages)
        elif key == "statuses":
            statuses = value.children_or_empty("statuses")
            events.extend(_v3_status(status, context) for status in statuses)
    return events


def _v3_profiles(value: _JsonObject) -> list[_Sender]:
    """The senders `contacts` describes: `wa_id` (omitted when the number is withheld),
    `user_id`, `parent_user_id` and the profile's `name` and `username`."""
    profiles: list[_Sender] = []
    for contact in value.children_or_empty("contacts"):
        number, bsuid_as_wa_id = _number_or_user_id(contact, "wa_id")
        profile = contact.child_or_empty("profile")
        profiles.append(
            _Sender(
                wa_id=number,
                user_id=_user_id(contact, "user_id") or bsuid_as_wa_id,
                parent_user_id=_user_id(contact, "parent_user_id"),
                username=profile.optional_string("username"),
                name=profile.optional_string("name"),
            )
        )
    return profiles


def _v3_sender(message: _JsonObject, profiles: list[_Sender]) -> _Sender:
    """The lead as a v3 message names them (`from`, omitted when the number is withheld;
    `from_user_id`; `from_parent_user_id`), completed by the contact that matches one of them."""
    number, bsuid_as_from = _number_or_user_id(message, "from")
    user_id = _user_id(message, "from_user_id") or bsuid_as_from
    parent_user_id = _user_id(message, "from_parent_user_id")
    profile = next(
        (
            profile
            for profile in profiles
            if (number is not None and profile.wa_id == number)
            or (user_id is not None and profile.user_id == user_id)
            or (parent_user_id is not None and profile.parent_user_id == parent_user_id)
        ),
        _Sender(),
    )
    lead = _Sender(
        wa_id=number or profile.wa_id,
        user_id=user_id or profile.user_id,
        parent_user_id=parent_user_id or profile.parent_user_id,
        username=profile.username,
        name=profile.name,
    )
    if not lead.names_someone():
        raise MalformedPayload(
            f"{message.path}: names no user (no from, from_user_id or from_parent_user_id)"
        )
    return lead


def _v3_message(
    message: _JsonObject, profiles: list[_Sender], context: _Context
) -> InboundMessage | UserEvent | IgnoredEvent:
    kind = message.string("type")
    if kind == "system":
        return _v3_system(message, context)
    read_content = _V3_MESSAGE_READERS.get(kind, _unsupported)
    referral = message.child_or_empty("referral").data
    return _inbound_message(
        context,
        read_content(message),
        message_id=message.identifier("id"),
        sender=_v3_sender(message, profiles),
        sent_at=_optional_timestamp(message, "timestamp", _SECOND) or context.received_at,
        context_message_id=message.child_or_empty("context").optional_string("id"),
        # A copy, so the event does not share mutable state with the raw body it came from.
        referral=copy.deepcopy(dict(referral)) if referral else None,
    )


def _v3_system(message: _JsonObject, context: _Context) -> UserEvent | IgnoredEvent:
    """WhatsApp's notice that a user's identifiers changed (it comes without contacts): a new
    number (`system.wa_id`; `from` is the old one) or a new BSUID (`system.user_id`)."""
    at = _optional_timestamp(message, "timestamp", _SECOND) or context.received_at
    system = message.child("system")
    change = system.string("type")
    old_number, bsuid_as_from = _number_or_user_id(message, "from")
    from_user_id = _user_id(message, "from_user_id") or bsuid_as_from
    if change == "user_changed_number":
        new_number, _ = _number_or_user_id(system, "wa_id")
        return UserEvent(
            **context.tenant(),
            type="changed-number",
            lead_wa_id=new_number,
            previous_wa_id=old_number,
            # The BSUID the lead is known by joins the new number to them.
            lead_user_id=from_user_id or _user_id(system, "previous_user_id"),
            at=at,
        )
    if change == "user_changed_user_id":
        number, _ = _number_or_user_id(system, "wa_id")
        return UserEvent(
            **context.tenant(),
            type="changed-user-id",
            lead_wa_id=number or old_number,
            lead_user_id=_user_id(system, "user_id") or from_user_id,
            at=at,
        )
    return _ignored(f"system/{change}", at, context)


def _v3_contacts(message: _JsonObject) -> _Content:
    return _shared_contacts(message.children("contacts"))


def _v3_text(message: _JsonObject) -> _Content:
    return _Content(type="text", text=message.child("text").string("body"))


_V3_REPLY_TYPES: Final[dict[str, MessageType]] = {
    "button_reply": "button_reply",
    "list_reply": "list_reply",
}


def _v3_interactive(message: _JsonObject) -> _Content:
    interactive = message.child("interactive")
    kind = _V3_REPLY_TYPES.get(interactive.string("type"))
    if kind is None:
        # Flow answers (nfm_reply) and newer kinds: nothing reads them yet.
        return _Content(type="unsupported")
    reply = interactive.child(kind)
    choice = ReplyChoice(
        id=reply.optional_string("id"),
        title=reply.string("title"),
        description=reply.optional_string("description"),
    )
    return _reply(kind, choice)


def _v3_template_button(message: _JsonObject) -> _Content:
    button = message.child("button")
    choice = ReplyChoice(title=button.string("text"), postback=button.optional_string("payload"))
    return _reply("button_reply", choice)


def _v3_location(message: _JsonObject) -> _Content:
    return _location(message.child("location"))


def _v3_media(field: str, kind: MessageType, message: _JsonObject) -> _Content:
    body = message.child(field)
    media = Media(
        url=body.optional_string("url"),
        content_type=body.optional_string("mime_type"),
        caption=body.optional_string("caption"),
        filename=body.optional_string("filename"),
    )
    return _attachment(kind, media)


# Any other type (reaction, unsupported, whatever Meta adds) is "unsupported".
_V3_MESSAGE_READERS: Final[dict[str, _ContentReader]] = {
    "text": _v3_text,
    "contacts": _v3_contacts,
    "interactive": _v3_interactive,
    # A template's quick-reply button.
    "button": _v3_template_button,
    "location": _v3_location,
    "image": partial(_v3_media, "image", "image"),
    "document": partial(_v3_media, "document", "file"),
    "audio": partial(_v3_media, "audio", "audio"),
    "video": partial(_v3_media, "video", "video"),
    "sticker": partial(_v3_media, "sticker", "sticker"),
}


def _v3_status(status_node: _JsonObject, context: _Context) -> DeliveryStatus | IgnoredEvent:
    at = _optional_timestamp(status_node, "timestamp", _SECOND) or context.received_at
    status = status_node.string("status")
    if status not in _DELIVERY_STATES:
        return _ignored(f"status/{status}", at, context)
    message_id = status_node.identifier("id")
    ids = _MessageIds(status_node.optional_string("gs_id"), message_id)
    # Gupshup's own enqueued status (and a failure before WhatsApp saw the message) has no
    # WhatsApp id yet and repeats Gupshup's id in `id`.
    if status == "enqueued" or message_id == ids.gupshup:
        ids = _MessageIds(ids.gupshup or message_id, None)
    errors = status_node.children_or_empty("errors")
    first = errors[0] if errors else _JsonObject({}, f"{status_node.path}.errors[0]")
    reason = first.optional_string("title") or first.optional_string("message")
    # `recipient_id` (the number) is omitted when a send went to a BSUID and the number is
    # withheld; the status then names the recipient by their BSUIDs alone.
    number, bsuid_as_recipient = _number_or_user_id(status_node, "recipient_id")
    user_id = _user_id(status_node, "recipient_user_id") or bsuid_as_recipient
    parent_user_id = _user_id(status_node, "recipient_parent_user_id")
    recipient = (number or user_id or parent_user_id, user_id)
    error = (first.optional_int("code"), reason)
    return _delivery_status(context, status, ids, recipient, error, status_node, at)
