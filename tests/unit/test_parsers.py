"""Gupshup callbacks in, typed events out: every fixture, app identity, bad bodies, fuzzing."""

from __future__ import annotations

import copy
import functools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from shared.gupshup.attribution import WrongApp, attribute
from shared.gupshup.parsers import (
    MAX_NESTING,
    AppIdentity,
    MalformedPayload,
    app_identity,
    parse_webhook,
)
from shared.identity import is_bsuid
from shared.models import (
    BillingEvent,
    DeliveryStatus,
    IgnoredEvent,
    InboundMessage,
    Location,
    ReplyChoice,
    RoutedEvent,
    TemplateEvent,
    UserEvent,
)
from shared.repositories.agents import Agent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gupshup"
CALLBACK_FIXTURES = sorted(
    path.name for prefix in ("v2_", "v3_") for path in FIXTURES.glob(f"{prefix}*.json")
)
V2_FIXTURES = [name for name in CALLBACK_FIXTURES if name.startswith("v2_")]
V3_FIXTURES = [name for name in CALLBACK_FIXTURES if name.startswith("v3_")]

RECEIVED_AT = datetime(2025, 11, 25, 6, 0, tzinfo=UTC)
LEAD = "6598887777"
LEAD_NAME = "Rachel Lim"
APP_ID = "0b7c2a6e-2c1d-4e8a-9f10-3d5b7a9c1e22"
V2_WAMID = "wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkQ1RTZGN0E4QjlDMEQxRTIA"
V2_GSID = "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
V3_WAMID = "wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkE5QjBDMUQyRTNGNEE1QjYA"
V3_GSID = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
ROUTED_EVENT = TypeAdapter(RoutedEvent)
ROUTED_TYPES = (
    InboundMessage,
    DeliveryStatus,
    UserEvent,
    TemplateEvent,
    BillingEvent,
    IgnoredEvent,
)
V3_VALUE = ("entry", 0, "changes", 0, "value")
V3_MESSAGE = (*V3_VALUE, "messages", 0)
# Leads known by business-scoped user ID: Rachel also by her number, Marcus by his BSUID alone.
RACHEL_BSUID = "SG.1349120865530274"
RACHEL_PARENT_BSUID = "SG.ENT.11815799212886844830"
MARCUS_BSUID = "SG.4472918830195521"
MARCUS_NUMBER = "6591234567"
MARCUS = {
    "lead_wa_id": None,
    "lead_user_id": MARCUS_BSUID,
    "lead_parent_user_id": None,
    "lead_username": "@marcus.k",
    "lead_name": "Marcus",
}
MARCUS_SHARES_HIS_NUMBER = {
    **MARCUS,
    "type": "contacts",
    "text": "Marcus Koh: +65 9123 4567",
    "shared_numbers": [MARCUS_NUMBER],
    "shared_own_number": MARCUS_NUMBER,
    "context_message_id": "wamid.HBgUU0cuNDQ3MjkxODgzMDE5NTUyMRUCABEYEjA5OEY3RTZENUM0QjNBMjEA",
}
DELETE = object()  # a mutation that removes the field instead of replacing it


@functools.cache
def _fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def load(name: str) -> Any:
    """A fresh copy of a fixture, safe to mutate."""
    return json.loads(_fixture_text(name))


def parse(body: Any) -> list[Any]:
    return parse_webhook(
        body, org_id="org-1", agent_id="agent-1", event_id="evt-1", received_at=RECEIVED_AT
    )


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def mutated(name: str, path: tuple[str | int, ...], value: Any) -> Any:
    """The fixture with the value at `path` replaced by `value` (or removed, for DELETE)."""
    body = load(name)
    _set(body, path, value)
    return body


def _set(body: Any, path: tuple[str | int, ...], value: Any) -> None:
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def inbound(**fields: Any) -> tuple[type[BaseModel], dict[str, Any]]:
    return InboundMessage, {"lead_wa_id": LEAD, "lead_name": LEAD_NAME, **fields}


def delivery(status: str, **fields: Any) -> tuple[type[BaseModel], dict[str, Any]]:
    """A delivery status event with `status` and the other fields that matter."""
    return DeliveryStatus, {"status": status, **fields}


# The same buttons tapped in v2 and v3 callbacks read the same.
BOOK_IT_BUTTON = {
    "type": "button_reply",
    "text": "Yes, book it",
    "choice": ReplyChoice(id="confirm_booking", title="Yes, book it"),
}
NOT_INTERESTED_BUTTON = {
    "type": "button_reply",
    "text": "Not interested",
    "choice": ReplyChoice(title="Not interested", postback="FOLLOWUP_STOP"),
}
V2_IDS = {"gupshup_message_id": V2_GSID, "whatsapp_message_id": V2_WAMID}
V3_IDS = {"gupshup_message_id": V3_GSID, "whatsapp_message_id": V3_WAMID}


# What each fixture must turn into: the event classes in order, and the fields that matter.
EXPECTED: dict[str, list[tuple[type[BaseModel], dict[str, Any]]]] = {
    "v2_text.json": [
        inbound(
            type="text",
            text="Hi, I saw your ad. Any 3-bedroom condo in the East under 1.5m?",
            provider_message_id="wamid.HBgKNjU5ODg4Nzc3NxUCABIYFjNFQjBDMEFGRTk4QkQ2QjA1QTk2AA==",
            sent_at=at(1764050000),
            received_at=RECEIVED_AT,
            context_message_id=None,
        )
    ],
    "v2_text_reply_context.json": [
        inbound(
            type="text",
            text="Saturday 3pm works",
            context_message_id="wamid.HBgKNjU5MTExMDAwMRUCABEYEjI5RjE2QTc4OUY0QzE3NzI4MgA=",
            context_gupshup_message_id="4c1f9a52-2d7e-4f0b-9c3e-6a1d2b7f8e90",
        )
    ],
    "v2_image.json": [
        inbound(
            type="image",
            text="This is the one I liked",
            provider_message_id="wamid.HBgKNjU5ODg4Nzc3NxUCABIYFkE5QjI3QzFERjA0RTY1NUQ3QjQyAA==",
        )
    ],
    "v2_file.json": [inbound(type="file", text="My IPA letter")],
    "v2_audio.json": [inbound(type="audio", text=None)],
    "v2_location.json": [
        inbound(type="location", location=Location(latitude=1.3521, longitude=103.9448))
    ],
    "v2_list_reply.json": [
        inbound(
            type="list_reply",
            text="Sat 29 Nov, 3:00 pm",
            choice=ReplyChoice(
                id="slot_20251129T1500",
                title="Sat 29 Nov, 3:00 pm",
                postback="SLOT_20251129T1500",
                description="Video call, 45 min",
            ),
            context_message_id="wamid.HBgKNjU5MTExMDAwMRUCABEYEjNBNEI1QzZENzhFOUYwQTFCMgA=",
        )
    ],
    "v2_button_reply.json": [
        inbound(
            **BOOK_IT_BUTTON,
        )
    ],
    "v2_template_quick_reply.json": [
        inbound(
            **NOT_INTERESTED_BUTTON,
            context_gupshup_message_id="2f3e4d5c-6b7a-4c8d-9e0f-1a2b3c4d5e6f",
        )
    ],
    "v2_event_enqueued.json": [delivery("enqueued", destination=LEAD, at=at(1764050007), **V2_IDS)],
    "v2_event_sent.json": [
        delivery("sent", pricing_category="service", pricing_type="free_customer_service", **V2_IDS)
    ],
    "v2_event_delivered.json": [delivery("delivered", **V2_IDS)],
    "v2_event_read.json": [delivery("read", **V2_IDS)],
    "v2_event_deleted.json": [delivery("deleted", **V2_IDS)],
    "v2_event_failed.json": [
        delivery(
            "failed",
            gupshup_message_id="6e2d3c4b-5f6a-4b7c-9d8e-0f1a2b3c4d5e",
            whatsapp_message_id=None,
            error_code=1005,
            error_reason="Message sent outside the 24 hour session window",
        )
    ],
    "v2_user_opted_in.json": [(UserEvent, {"type": "opted-in", "lead_wa_id": LEAD})],
    "v2_user_opted_out.json": [
        (UserEvent, {"type": "opted-out", "lead_wa_id": LEAD, "at": at(1764050091)})
    ],
    "v2_user_sandbox_start.json": [(UserEvent, {"type": "sandbox-start", "lead_wa_id": None})],
    "v2_template_event.json": [
        (
            TemplateEvent,
            {
                "template_id": "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9",
                "name": "viewing_reminder",
                "language": "en",
                "status": "rejected",
                "reason": "INVALID_FORMAT",
            },
        )
    ],
    "v2_billing_event.json": [
        (
            BillingEvent,
            {
                "category": "utility",
                "billable": True,
                "model": "PMP",
                "whatsapp_message_id": "wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkY3QThCOUMwRDFFMkYzQTQA",
                "gupshup_message_id": "8a7b6c5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d",
                "destination": LEAD,
            },
        )
    ],
    "v2_platform_connectivity_check.json": [
        (IgnoredEvent, {"type": "platform-event", "at": at(1764050112)})
    ],
    "v2_text_bsuid_with_phone.json": [
        inbound(
            type="text",
            text="Hello, is the Tampines unit still available?",
            lead_user_id=RACHEL_BSUID,
            lead_parent_user_id=None,
            lead_username=None,
            sent_at=datetime(2026, 4, 23, 11, 39, 4, 359000, tzinfo=UTC),
        )
    ],
    "v2_text_bsuid_only.json": [
        (
            InboundMessage,
            {**MARCUS, "type": "text", "text": "Hi, saw your listing for the Bedok condo"},
        )
    ],
    "v2_text_bsuid_ad_referral.json": [
        (
            InboundMessage,
            {
                **MARCUS,
                "type": "text",
                "text": "Hi! I'd like more details on the Bedok condo.",
                "referral": {
                    "source_url": "https://fb.me/3AbCdEfGh",
                    "source_id": "120211234567890123",
                    "source_type": "ad",
                    "headline": "New 3-bedroom condos in Bedok",
                    "body": "Book a free consultation on WhatsApp",
                    "media_type": "image",
                    "image_url": "https://scontent.example/ad.jpg",
                    "ctwa_clid": (
                        "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0"
                    ),
                },
            },
        )
    ],
    "v2_text_no_source.json": [
        (InboundMessage, {**MARCUS, "type": "text", "text": "Can I view it on Saturday?"})
    ],
    "v2_contact_shared.json": [
        (
            InboundMessage,
            {
                **MARCUS_SHARES_HIS_NUMBER,
                "context_gupshup_message_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            },
        )
    ],
    "v2_event_sent_bsuid.json": [
        delivery(
            "sent",
            destination=LEAD,
            user_id=RACHEL_BSUID,
            gupshup_message_id="793df8da-4b7e-4c1f-9a2d-5e6f7a8b9c0d",
            whatsapp_message_id="wamid.HBgKNjU5ODg4Nzc3NxUCABEYEjc2QTlCMEMxRDJFM0Y0QTVCNgA=",
            at=datetime(2026, 4, 23, 11, 35, 28, 172000, tzinfo=UTC),
        )
    ],
    "v3_text_bsuid_only.json": [
        (
            InboundMessage,
            {**MARCUS, "type": "text", "text": "Hi, saw your listing for the Bedok condo"},
        )
    ],
    "v3_text_bsuid_with_phone.json": [
        inbound(
            type="text",
            text="Hello, is the Tampines unit still available?",
            lead_user_id=RACHEL_BSUID,
            lead_parent_user_id=RACHEL_PARENT_BSUID,
            lead_username=None,
            sent_at=at(1776944344),
        )
    ],
    "v3_contacts_shared.json": [(InboundMessage, MARCUS_SHARES_HIS_NUMBER)],
    "v3_status_delivered_bsuid.json": [
        delivery(
            "delivered",
            destination=MARCUS_BSUID,
            user_id=MARCUS_BSUID,
            gupshup_message_id="2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            whatsapp_message_id="wamid.HBgUU0cuNDQ3MjkxODgzMDE5NTUyMRUCABEYEkI3QzhEOUUwRjFBMkIzQzQA",
        )
    ],
    "v3_system_user_changed_number.json": [
        (
            UserEvent,
            {
                "type": "changed-number",
                "lead_wa_id": "6587776666",
                "previous_wa_id": LEAD,
                "lead_user_id": RACHEL_BSUID,
                "at": at(1776944600),
            },
        )
    ],
    "v3_text.json": [
        inbound(
            type="text",
            text="Is the Tampines unit still available?",
            provider_message_id="wamid.HBgKNjU5ODg4Nzc3NxUCABIYFjdBOEI5QzBEMUUyRjNBNEI1QzZEAA==",
            sent_at=at(1764050000),
            referral=None,
        )
    ],
    "v3_text_without_gs_app_id.json": [
        inbound(type="text", text="Can I view it this weekend?", sent_at=at(1764050160))
    ],
    "v3_text_ad_referral.json": [
        inbound(
            type="text",
            text="Hi! I'd like more details on the Tampines condo.",
            referral={
                "source_url": "https://fb.me/3AbCdEfGh",
                "source_id": "120211234567890123",
                "source_type": "ad",
                "headline": "New 3-bedroom condos in Tampines",
                "body": "Book a free consultation on WhatsApp",
                "media_type": "image",
                "image_url": "https://scontent.example/ad.jpg",
                "ctwa_clid": (
                    "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0"
                    "-eM-GABDLOPaOdRMv-_zfUQ2a"
                ),
            },
        )
    ],
    "v3_interactive_button.json": [
        inbound(
            **BOOK_IT_BUTTON,
            context_message_id="wamid.HBgKNjU5MTExMDAwMRUCABEYEjZEN0U4RjlBMEIxQzJEM0U0AA==",
        )
    ],
    "v3_template_button.json": [
        inbound(
            **NOT_INTERESTED_BUTTON,
        )
    ],
    "v3_status_enqueued.json": [
        delivery(
            "enqueued",
            gupshup_message_id=V3_GSID,
            whatsapp_message_id=None,
            destination=LEAD,
            at=at(1764050011),
        )
    ],
    "v3_status_sent.json": [
        delivery("sent", pricing_category="service", pricing_type="free_customer_service", **V3_IDS)
    ],
    "v3_status_delivered.json": [delivery("delivered", **V3_IDS)],
    "v3_status_read.json": [delivery("read", whatsapp_message_id=V3_WAMID, at=at(1764050030))],
    "v3_status_failed.json": [
        delivery(
            "failed",
            gupshup_message_id="7f3e4d5c-6b7a-4c8d-9e0f-2a3b4c5d6e7f",
            whatsapp_message_id="wamid.HBgKNjU5ODg4Nzc3NxUCABEYEkU2RjdBOEI5QzBEMUUyRjMA",
            error_code=131047,
            error_reason="Re-engagement message",
        )
    ],
}


# --- Every fixture -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CALLBACK_FIXTURES)
def test_fixture_parses_into_the_events_it_describes(name: str) -> None:
    assert name in EXPECTED, f"new fixture {name}: add the events it should parse into"
    events = parse(load(name))
    expected = EXPECTED[name]
    assert [type(event) for event in events] == [cls for cls, _ in expected]
    for event, (_, fields) in zip(events, expected, strict=True):
        assert {field: getattr(event, field) for field in fields} == fields


@pytest.mark.parametrize("name", CALLBACK_FIXTURES)
def test_fixture_events_are_numbered_tenant_events_in_utc_that_survive_the_broker(
    name: str,
) -> None:
    events = parse(load(name))
    assert [event.event_id for event in events] == [f"evt-1:{i}" for i in range(len(events))]
    assert parse(load(name)) == events
    for event in events:
        assert (event.org_id, event.agent_id) == ("org-1", "agent-1")
        for field in ("sent_at", "received_at", "at"):
            if hasattr(event, field):
                assert getattr(event, field).utcoffset() == timedelta(0)
        assert ROUTED_EVENT.validate_json(event.model_dump_json()) == event


def test_v2_media_keeps_url_type_filename_and_url_expiry() -> None:
    (message,) = parse(load("v2_file.json"))
    assert message.media.url.startswith("https://filemanager.gupshup.io/")
    assert message.media.content_type == "application/pdf"
    assert message.media.filename == "ipa.pdf"
    assert message.media.caption == "My IPA letter"
    assert message.media.url_expires_at == at(1764654800)


def v3_text_turned_into(message_type: str, **content: Any) -> Any:
    """The v3 text fixture with its message turned into one of `message_type` with `content`."""
    body = load("v3_text.json")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message.update(type=message_type, **content)
    return body


def test_v3_document_is_a_file_with_mime_type_caption_and_filename() -> None:
    document = {
        "id": "1234",
        "mime_type": "application/pdf",
        "filename": "ipa.pdf",
        "caption": "IPA",
    }
    (event,) = parse(v3_text_turned_into("document", document=document))
    assert event.type == "file"
    assert event.text == "IPA"
    assert (event.media.content_type, event.media.filename) == ("application/pdf", "ipa.pdf")


def test_v3_location_with_numeric_coordinates_is_read() -> None:
    location = {"latitude": 1.35, "longitude": 103.94, "name": "X"}
    (event,) = parse(v3_text_turned_into("location", location=location))
    assert event.location == Location(latitude=1.35, longitude=103.94, name="X")


def test_v3_list_reply_keeps_id_title_and_description() -> None:
    body = load("v3_interactive_button.json")
    row = {"id": "slot_1", "title": "Sat 3 pm", "description": "Video call"}
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["interactive"] = {"type": "list_reply", "list_reply": row}
    (event,) = parse(body)
    assert event.type == "list_reply"
    assert event.choice == ReplyChoice(id="slot_1", title="Sat 3 pm", description="Video call")


# --- Several events, unknown vocabulary, fallbacks ------------------------------------------


def test_v3_callback_with_several_messages_and_statuses_returns_all_in_payload_order() -> None:
    body = load("v3_text.json")
    value = body["entry"][0]["changes"][0]["value"]
    first = value["messages"][0]
    second = {**first, "id": "wamid.second", "text": {"body": "And parking?"}}
    value["messages"] = [first, second]
    statuses = load("v3_status_read.json")["entry"][0]["changes"][0]["value"]["statuses"]
    value["statuses"] = statuses
    body["entry"].append(load("v3_status_failed.json")["entry"][0])

    first_text, second_text, read, failed = parse(body)

    assert (first_text.text, second_text.text) == (
        "Is the Tampines unit still available?",
        "And parking?",
    )
    assert (read.status, failed.status) == ("read", "failed")
    assert [e.event_id for e in (first_text, second_text, read, failed)] == [
        "evt-1:0",
        "evt-1:1",
        "evt-1:2",
        "evt-1:3",
    ]


@pytest.mark.parametrize("event_type", ["account-event", "platform-event", "brand-new-event"])
def test_v2_event_types_we_do_not_act_on_are_ignored_not_rejected(event_type: str) -> None:
    body = mutated("v2_platform_connectivity_check.json", ("type",), event_type)
    body["payload"] = {"anything": ["goes", 1]}
    assert [(type(e), e.type) for e in parse(body)] == [(IgnoredEvent, event_type)]


def test_v3_fields_other_than_messages_are_ignored_not_rejected() -> None:
    body = mutated("v3_text.json", ("entry", 0, "changes", 0, "field"), "account_update")
    (event,) = parse(body)
    assert isinstance(event, IgnoredEvent)
    assert (event.type, event.at) == ("account_update", RECEIVED_AT)


def test_unknown_delivery_statuses_are_ignored_not_rejected() -> None:
    v2 = mutated("v2_event_delivered.json", ("payload", "type"), "mismatch")
    v3_path = ("entry", 0, "changes", 0, "value", "statuses", 0, "status")
    v3 = mutated("v3_status_read.json", v3_path, "warning")
    assert [e.type for e in parse(v2) + parse(v3)] == ["message-event/mismatch", "status/warning"]


@pytest.mark.parametrize("message_type", ["contacts", "reaction", "something_new"])
def test_v2_message_types_we_cannot_read_are_unsupported_messages(message_type: str) -> None:
    body = mutated("v2_text.json", ("payload", "type"), message_type)
    (event,) = parse(body)
    assert (event.type, event.text, event.lead_wa_id) == ("unsupported", None, LEAD)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
        {"type": "unsupported", "errors": [{"code": 131051}]},
        {"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": {}}},
    ],
    ids=["reaction", "unsupported", "flow-reply"],
)
def test_v3_message_types_we_cannot_read_are_unsupported_messages(message: dict[str, Any]) -> None:
    body = load("v3_text.json")
    original = body["entry"][0]["changes"][0]["value"]["messages"][0]
    body["entry"][0]["changes"][0]["value"]["messages"] = [
        {key: original[key] for key in ("from", "id", "timestamp")} | message
    ]
    (event,) = parse(body)
    assert (event.type, event.lead_name) == ("unsupported", LEAD_NAME)


def test_missing_timestamps_fall_back_to_received_at() -> None:
    v2 = mutated("v2_text.json", ("timestamp",), DELETE)
    v3 = mutated("v3_text.json", (*V3_MESSAGE, "timestamp"), DELETE)
    assert [event.sent_at for event in parse(v2) + parse(v3)] == [RECEIVED_AT, RECEIVED_AT]


def test_v2_lead_number_falls_back_to_sender_phone_when_source_is_absent() -> None:
    (event,) = parse(mutated("v2_text.json", ("payload", "source"), DELETE))
    assert event.lead_wa_id == LEAD


# --- Leads known by business-scoped user ID, number, or both --------------------------------


def _identifiers(event: Any) -> list[tuple[str, str | None]]:
    """(field, value) of each number and BSUID field the event has."""
    fields = ("lead_wa_id", "previous_wa_id", "lead_user_id", "lead_parent_user_id", "user_id")
    return [(field, getattr(event, field)) for field in fields if hasattr(event, field)]


def assert_identifiers_in_their_fields(events: list[Any]) -> None:
    """A BSUID is never in a number field, and a BSUID field never holds anything else."""
    for event in events:
        for field, value in _identifiers(event):
            if value is None:
                continue
            if field.endswith("wa_id"):
                assert not is_bsuid(value), f"{field} holds a BSUID: {value!r}"
            else:
                assert is_bsuid(value), f"{field} holds something else: {value!r}"


@pytest.mark.parametrize("name", CALLBACK_FIXTURES)
def test_fixture_never_puts_a_bsuid_in_a_number_field_or_a_number_in_a_bsuid_field(
    name: str,
) -> None:
    assert_identifiers_in_their_fields(parse(load(name)))


def test_v2_source_that_is_a_bsuid_names_the_user_not_a_number() -> None:
    body = load("v2_text_bsuid_only.json")
    del body["payload"]["sender"]["userId"]
    (event,) = parse(body)
    assert (event.lead_wa_id, event.lead_user_id) == (None, MARCUS_BSUID)


def test_v2_sender_with_phone_and_user_id_but_no_source_names_both() -> None:
    (event,) = parse(mutated("v2_text_bsuid_with_phone.json", ("payload", "source"), DELETE))
    assert (event.lead_wa_id, event.lead_user_id) == (LEAD, RACHEL_BSUID)


def test_v2_delivery_status_of_a_send_to_a_bsuid_keeps_the_bsuid_as_destination() -> None:
    body = mutated("v2_event_sent_bsuid.json", ("payload", "destination"), MARCUS_BSUID)
    del body["payload"]["userId"]
    (status,) = parse(body)
    assert (status.destination, status.user_id) == (MARCUS_BSUID, MARCUS_BSUID)


def test_v2_user_event_carries_the_users_bsuid() -> None:
    body = mutated("v2_user_opted_out.json", ("payload", "userId"), RACHEL_BSUID)
    (event,) = parse(body)
    assert (event.type, event.lead_wa_id, event.lead_user_id) == ("opted-out", LEAD, RACHEL_BSUID)


def test_v3_status_with_number_and_bsuid_names_the_number_as_destination() -> None:
    body = load("v3_status_delivered_bsuid.json")
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["recipient_id"] = MARCUS_NUMBER
    (status,) = parse(body)
    assert (status.destination, status.user_id) == (MARCUS_NUMBER, MARCUS_BSUID)


def test_v3_sender_is_completed_by_the_contact_with_the_same_user_id() -> None:
    body = load("v3_text_bsuid_with_phone.json")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["from"], message["from_parent_user_id"]
    (event,) = parse(body)
    assert (event.lead_wa_id, event.lead_user_id, event.lead_parent_user_id) == (
        LEAD,
        RACHEL_BSUID,
        RACHEL_PARENT_BSUID,
    )
    assert event.lead_name == LEAD_NAME


def test_v3_user_changed_user_id_is_a_changed_user_id_event() -> None:
    body = load("v3_system_user_changed_number.json")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["from"]
    message["system"] = {
        "body": "User Rachel Lim changed from SG.1349120865530274 to SG.7700112233445566",
        "user_id": "SG.7700112233445566",
        "previous_user_id": RACHEL_BSUID,
        "type": "user_changed_user_id",
    }
    (event,) = parse(body)
    assert isinstance(event, UserEvent)
    assert (event.type, event.lead_user_id, event.lead_wa_id) == (
        "changed-user-id",
        "SG.7700112233445566",
        None,
    )


def test_v3_system_messages_of_other_kinds_are_ignored() -> None:
    path = (*V3_MESSAGE, "system", "type")
    (event,) = parse(
        mutated("v3_system_user_changed_number.json", path, "customer_identity_changed")
    )
    assert isinstance(event, IgnoredEvent)
    assert event.type == "system/customer_identity_changed"


# --- Shared contacts ------------------------------------------------------------------------


V2_CONTACTS = ("payload", "payload", "contacts")
V3_CONTACTS = (*V3_MESSAGE, "contacts")
MARIA = {"name": {"formatted_name": "Maria Tan"}, "phones": [{"phone": "+65 8111 2222"}]}


@pytest.mark.parametrize(
    ("name", "contacts", "context"),
    [
        ("v2_contact_shared.json", V2_CONTACTS, ("payload", "context")),
        ("v3_contacts_shared.json", V3_CONTACTS, (*V3_MESSAGE, "context")),
    ],
    ids=["v2", "v3"],
)
def test_a_shared_card_is_the_leads_own_number_only_alone_in_reply_to_us_with_one_wa_id(
    name: str, contacts: tuple[str | int, ...], context: tuple[str | int, ...]
) -> None:
    (unprompted,) = parse(mutated(name, context, DELETE))
    assert (unprompted.shared_numbers, unprompted.shared_own_number) == ([MARCUS_NUMBER], None)

    second_whatsapp_number = load(name)
    _get(second_whatsapp_number, contacts)[0]["phones"].append(
        {"phone": "6598880000", "wa_id": "6598880000"}
    )
    (event,) = parse(second_whatsapp_number)
    assert (event.shared_numbers, event.shared_own_number) == (
        [MARCUS_NUMBER, "6598880000"],
        None,
    )

    two_cards = load(name)
    _get(two_cards, contacts).append(MARIA)
    (event,) = parse(two_cards)
    assert (event.shared_numbers, event.shared_own_number) == ([MARCUS_NUMBER, "6581112222"], None)
    assert event.text == "Marcus Koh: +65 9123 4567; Maria Tan: +65 8111 2222"


def _get(body: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def test_a_card_without_a_name_or_numbers_reads_as_what_it_has() -> None:
    body = mutated(
        "v2_contact_shared.json",
        V2_CONTACTS,
        [{"name": {"first_name": "Ah", "last_name": "Beng"}}, {}],
    )
    (event,) = parse(body)
    assert (event.type, event.text, event.shared_numbers) == ("contacts", "Ah Beng", [])


def test_a_card_named_by_its_number_says_the_number_once() -> None:
    card = {"name": {"formatted_name": "+65 9123 4567"}, "phones": [{"phone": "+65 9123 4567"}]}
    (event,) = parse(mutated("v2_contact_shared.json", V2_CONTACTS, [card]))
    assert (event.text, event.shared_numbers) == ("+65 9123 4567", [MARCUS_NUMBER])


def test_v3_lead_name_comes_only_from_the_matching_contact() -> None:
    path = ("entry", 0, "changes", 0, "value", "contacts", 0, "wa_id")
    (event,) = parse(mutated("v3_text.json", path, "6500000000"))
    assert event.lead_name is None


def test_received_at_without_timezone_is_a_caller_error_not_a_malformed_payload() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as raised:
        parse_webhook(
            load("v2_text.json"), org_id="o", agent_id="a", event_id="e", received_at=datetime.now()
        )
    assert not isinstance(raised.value, MalformedPayload)


# --- App identity ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", V2_FIXTURES)
def test_v2_app_identity_is_the_app_name(name: str) -> None:
    identity = app_identity(load(name))
    assert identity.app_name == "TanHomesSG"
    assert identity.phone_number_id is None


def test_v2_app_identity_includes_app_id_and_phone_when_present() -> None:
    assert app_identity(load("v2_platform_connectivity_check.json")).app_id == APP_ID
    assert app_identity(load("v2_template_quick_reply.json")).display_phone_number == "6591110001"


@pytest.mark.parametrize("name", [n for n in V3_FIXTURES if n != "v3_status_enqueued.json"])
def test_v3_app_identity_is_the_gupshup_app_and_the_whatsapp_number(name: str) -> None:
    expected_app_id = None if name == "v3_text_without_gs_app_id.json" else APP_ID
    assert app_identity(load(name)) == AppIdentity(
        app_name=None,
        app_id=expected_app_id,
        phone_number_id="301928374650123",
        display_phone_number="6591110001",
    )


def test_v3_enqueued_status_names_only_the_app_since_gupshup_adds_no_metadata() -> None:
    assert app_identity(load("v3_status_enqueued.json")) == AppIdentity(None, APP_ID, None, None)


def v3_body_naming_two_numbers() -> Any:
    """A v3 text callback with a second entry for another WhatsApp number."""
    body = load("v3_text.json")
    other = copy.deepcopy(body["entry"][0])
    other["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    body["entry"].append(other)
    return body


def test_v3_callback_naming_two_different_numbers_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="different phone numbers"):
        app_identity(v3_body_naming_two_numbers())


# --- Attribution: the one check ingress and the router share --------------------------------


def agent_of(app: str = "TanHomesSG", app_id: str | None = APP_ID) -> Agent:
    return Agent(
        _id="agent-1",
        org_id="org-1",
        name="Daniel Tan",
        number="+6591110001",
        gupshup_app=app,
        gupshup_app_id=app_id,
        callback_key_hash="unused",
        created_at=RECEIVED_AT,
    )


def attribute_to(agent: Agent, body: Any) -> list[RoutedEvent]:
    return attribute(body, agent, event_id="evt-1", received_at=RECEIVED_AT)


@pytest.mark.parametrize("name", CALLBACK_FIXTURES)
def test_a_callback_of_the_agents_app_is_attributed_to_it_as_parsed(name: str) -> None:
    assert attribute_to(agent_of(), load(name)) == parse(load(name))


@pytest.mark.parametrize("name", V2_FIXTURES)
def test_v2_callback_naming_another_app_is_wrong_app(name: str) -> None:
    with pytest.raises(WrongApp, match=r"^app does not match the agent$"):
        attribute_to(agent_of(app="SomeoneElsesApp"), load(name))


def test_v3_callback_of_another_app_id_is_wrong_app_only_where_the_agent_has_one() -> None:
    with pytest.raises(WrongApp, match=r"^gs_app_id does not match the agent$"):
        attribute_to(agent_of(app_id="another-app-id"), load("v3_text.json"))
    assert attribute_to(agent_of(app_id=None), load("v3_text.json"))
    assert attribute_to(agent_of(app_id="another-app-id"), load("v3_text_without_gs_app_id.json"))


def test_a_malformed_callback_is_malformed_before_it_is_wrong_app() -> None:
    body = load("v2_text.json")
    body["payload"]["payload"] = 7
    with pytest.raises(MalformedPayload):
        attribute_to(agent_of(app="SomeoneElsesApp"), body)


def test_v3_callback_naming_two_different_numbers_is_malformed_to_attribution_too() -> None:
    with pytest.raises(MalformedPayload, match="different phone numbers"):
        attribute_to(agent_of(), v3_body_naming_two_numbers())


# --- Malformed bodies -----------------------------------------------------------------------


def v2_text_naming_no_user() -> Any:
    """The v2 text fixture with neither `source` nor a sender's phone or user ID."""
    body = mutated("v2_text.json", ("payload", "source"), DELETE)
    del body["payload"]["sender"]["phone"]
    return body


def _nested(depth: int) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(depth):
        body = {"a": body}
    return body


MALFORMED: list[tuple[str, Any, str]] = [
    ("a list", [], "body: expected an object"),
    ("a string", "hello", "body: expected an object"),
    ("null", None, "body: expected an object"),
    ("neither v2 nor v3", {"hello": "world"}, "body: neither a v2"),
    ("v2 type not a string", mutated("v2_text.json", ("type",), 7), "type: expected a string"),
    ("v2 payload not an object", mutated("v2_text.json", ("payload",), "x"), "payload: expected"),
    (
        "v2 message without payload.id",
        mutated("v2_text.json", ("payload", "id"), DELETE),
        "payload.id: missing",
    ),
    (
        "v2 message with empty payload.id",
        mutated("v2_text.json", ("payload", "id"), ""),
        "payload.id: expected a non-empty string",
    ),
    (
        "v2 text not a string",
        mutated("v2_text.json", ("payload", "payload", "text"), 42),
        "payload.payload.text: expected a string",
    ),
    (
        "v2 sender name not a string",
        mutated("v2_text.json", ("payload", "sender", "name"), ["Rachel"]),
        "payload.sender.name: expected a string",
    ),
    (
        "v2 message naming no user",
        v2_text_naming_no_user(),
        "payload: names no user (no source, sender.phone or sender.userId)",
    ),
    (
        "v2 message with empty source",
        mutated("v2_text.json", ("payload", "source"), ""),
        "payload.source: expected a non-empty string",
    ),
    (
        "v2 message with a number as sender.userId",
        mutated("v2_text_bsuid_only.json", ("payload", "sender", "userId"), LEAD),
        "payload.sender.userId: expected a business-scoped user ID",
    ),
    (
        "v2 status with a number as userId",
        mutated("v2_event_sent_bsuid.json", ("payload", "userId"), LEAD),
        "payload.userId: expected a business-scoped user ID",
    ),
    (
        "v2 shared contact without contacts",
        mutated("v2_contact_shared.json", ("payload", "payload", "contacts"), DELETE),
        "payload.payload.contacts: missing",
    ),
    (
        "v2 shared phone's wa_id not a string",
        mutated(
            "v2_contact_shared.json",
            ("payload", "payload", "contacts", 0, "phones", 0, "wa_id"),
            6591234567,
        ),
        "payload.payload.contacts[0].phones[0].wa_id: expected a string",
    ),
    (
        "v2 timestamp not a number",
        mutated("v2_text.json", ("timestamp",), "yesterday"),
        "timestamp: expected an integer",
    ),
    (
        "v2 timestamp out of range",
        mutated("v2_text.json", ("timestamp",), 10**19),
        "timestamp: timestamp out of range",
    ),
    (
        "v2 latitude not a number",
        mutated("v2_location.json", ("payload", "payload", "latitude"), "north"),
        "payload.payload.latitude: expected a finite number",
    ),
    (
        "v2 latitude out of range",
        mutated("v2_location.json", ("payload", "payload", "latitude"), "91"),
        "payload.payload.latitude: out of range",
    ),
    (
        "v2 status id missing",
        mutated("v2_event_sent.json", ("payload", "id"), DELETE),
        "payload.id: missing",
    ),
    (
        "v2 failure code not a number",
        mutated("v2_event_failed.json", ("payload", "payload", "code"), {"x": 1}),
        "payload.payload.code: expected an integer",
    ),
    (
        "v2 billing without deductions",
        mutated("v2_billing_event.json", ("payload", "deductions"), DELETE),
        "payload.deductions: missing",
    ),
    (
        "v3 entry not a list",
        mutated("v3_text.json", ("entry",), {"id": "1"}),
        "entry: expected an array",
    ),
    ("v3 entry missing", mutated("v3_text.json", ("entry",), DELETE), "entry: missing"),
    (
        "v3 change not an object",
        mutated("v3_text.json", ("entry", 0, "changes", 0), "messages"),
        "entry[0].changes[0]: expected an object",
    ),
    (
        "v3 message naming no user",
        mutated("v3_text.json", (*V3_MESSAGE, "from"), DELETE),
        "entry[0].changes[0].value.messages[0]: names no user (no from, from_user_id or",
    ),
    (
        "v3 message with a number as from_user_id",
        mutated("v3_text_bsuid_only.json", (*V3_MESSAGE, "from_user_id"), LEAD),
        "entry[0].changes[0].value.messages[0].from_user_id: expected a business-scoped user ID",
    ),
    (
        "v3 contact with a number as user_id",
        mutated("v3_text_bsuid_only.json", (*V3_VALUE, "contacts", 0, "user_id"), LEAD),
        "entry[0].changes[0].value.contacts[0].user_id: expected a business-scoped user ID",
    ),
    (
        "v3 status with a number as recipient_user_id",
        mutated(
            "v3_status_delivered_bsuid.json", (*V3_VALUE, "statuses", 0, "recipient_user_id"), LEAD
        ),
        "statuses[0].recipient_user_id: expected a business-scoped user ID",
    ),
    (
        "v3 system message without system",
        mutated("v3_system_user_changed_number.json", (*V3_MESSAGE, "system"), DELETE),
        "entry[0].changes[0].value.messages[0].system: missing",
    ),
    (
        "v3 shared contacts not a list",
        mutated("v3_contacts_shared.json", (*V3_MESSAGE, "contacts"), {"name": "Bob"}),
        "entry[0].changes[0].value.messages[0].contacts: expected an array",
    ),
    (
        "v3 text body not a string",
        mutated("v3_text.json", (*V3_MESSAGE, "text", "body"), None),
        "entry[0].changes[0].value.messages[0].text.body: expected a string",
    ),
    (
        "v3 timestamp not digits",
        mutated("v3_text.json", (*V3_MESSAGE, "timestamp"), "1.5e9"),
        "entry[0].changes[0].value.messages[0].timestamp: expected an integer",
    ),
    (
        "v3 referral not an object",
        mutated("v3_text_ad_referral.json", (*V3_MESSAGE, "referral"), "ad"),
        "entry[0].changes[0].value.messages[0].referral: expected an object",
    ),
    ("huge nesting", {"type": "message", "payload": _nested(10_000)}, "nested more than"),
    ("nesting just past the limit", {"type": "x", "payload": _nested(MAX_NESTING)}, "nested"),
]


@pytest.mark.parametrize(
    ("body", "error"),
    [(body, error) for _, body, error in MALFORMED],
    ids=[case for case, _, _ in MALFORMED],
)
def test_malformed_body_raises_malformed_payload_naming_the_field(body: Any, error: str) -> None:
    with pytest.raises(MalformedPayload, match=re.escape(error)):
        parse(body)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    (event,) = parse({"type": "x", "payload": _nested(MAX_NESTING - 1)})
    assert isinstance(event, IgnoredEvent)


# --- Property: any JSON either parses or is reported malformed --------------------------------

# Keys the parser looks for, so that arbitrary objects often reach deep into its code paths.
KNOWN_KEYS = [
    "type", "payload", "object", "entry", "changes", "field", "value", "messages", "statuses",
    "contacts", "id", "gsId", "gs_id", "from", "timestamp", "text", "body", "source", "sender",
    "status", "errors", "code", "latitude", "longitude", "interactive", "button_reply",
    "phone", "userId", "username", "wa_id", "user_id", "parent_user_id", "from_user_id",
    "from_parent_user_id", "recipient_id", "recipient_user_id", "system", "phones", "context",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def _subtree_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    items: Any = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    paths: list[tuple[str | int, ...]] = []
    for key, child in items:
        paths.append((*prefix, key))
        paths.extend(_subtree_paths(child, (*prefix, key)))
    return paths


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> Any:
    body = load(draw(st.sampled_from(CALLBACK_FIXTURES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _subtree_paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        replacement = draw(st.just(DELETE) | json_values)
        if replacement is DELETE and isinstance(path[-1], int):
            replacement = None  # removing from a list would shift the paths drawn next
        _set(body, path, replacement)
    return body


def assert_parses_or_is_malformed(body: Any) -> None:
    try:
        events = parse(body)
    except MalformedPayload:
        pass
    else:
        assert isinstance(events, list)
        assert all(isinstance(event, ROUTED_TYPES) for event in events)
    try:
        identity = app_identity(body)
    except MalformedPayload:
        pass
    else:
        assert isinstance(identity, AppIdentity)


@settings(max_examples=300, database=None)
@given(body=json_values)
def test_arbitrary_json_either_parses_or_raises_malformed_payload(body: Any) -> None:
    assert_parses_or_is_malformed(body)


@settings(max_examples=500, database=None)
@given(body=mutated_fixtures())
def test_fixture_with_random_parts_replaced_either_parses_or_raises_malformed_payload(
    body: Any,
) -> None:
    assert_parses_or_is_malformed(body)


# --- Property: whatever identifies the sender, the result is events or MalformedPayload ------

identifier_values = (
    st.sampled_from(
        [LEAD, "+6598887777", RACHEL_BSUID, MARCUS_BSUID, RACHEL_PARENT_BSUID, "", "SG.", "sg.1"]
    )
    | st.from_regex(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,20}", fullmatch=True)
    | json_values
)

# Where each fixture names the user: the fields a random sender shape replaces or removes.
SENDER_FIELDS: dict[str, list[tuple[str | int, ...]]] = {
    "v2_text_bsuid_with_phone.json": [
        ("payload", "source"),
        ("payload", "sender"),
        ("payload", "sender", "phone"),
        ("payload", "sender", "userId"),
        ("payload", "sender", "username"),
        ("payload", "sender", "name"),
    ],
    "v2_event_sent_bsuid.json": [("payload", "destination"), ("payload", "userId")],
    "v2_user_opted_out.json": [("payload", "phone"), ("payload", "userId")],
    "v3_text_bsuid_with_phone.json": [
        (*V3_MESSAGE, "from"),
        (*V3_MESSAGE, "from_user_id"),
        (*V3_MESSAGE, "from_parent_user_id"),
        (*V3_VALUE, "contacts"),
        (*V3_VALUE, "contacts", 0, "wa_id"),
        (*V3_VALUE, "contacts", 0, "user_id"),
        (*V3_VALUE, "contacts", 0, "parent_user_id"),
        (*V3_VALUE, "contacts", 0, "profile"),
    ],
    "v3_status_delivered_bsuid.json": [
        (*V3_VALUE, "statuses", 0, "recipient_id"),
        (*V3_VALUE, "statuses", 0, "recipient_user_id"),
        (*V3_VALUE, "statuses", 0, "recipient_parent_user_id"),
    ],
    "v3_system_user_changed_number.json": [
        (*V3_MESSAGE, "from"),
        (*V3_MESSAGE, "from_user_id"),
        (*V3_MESSAGE, "system", "wa_id"),
        (*V3_MESSAGE, "system", "user_id"),
        (*V3_MESSAGE, "system", "type"),
    ],
}


@st.composite
def random_senders(draw: st.DrawFn) -> Any:
    """A fixture whose sender fields are each kept, removed or given a random value."""
    name = draw(st.sampled_from(sorted(SENDER_FIELDS)))
    body = load(name)
    for path in SENDER_FIELDS[name]:
        change = draw(st.sampled_from(["keep", "delete", "replace"]))
        try:
            if change == "delete":
                _set(body, path, DELETE)
            elif change == "replace":
                _set(body, path, draw(identifier_values))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced the object this field was in
    return body


@settings(max_examples=500, database=None)
@given(body=random_senders())
def test_random_sender_shapes_parse_with_identifiers_in_their_fields_or_are_malformed(
    body: Any,
) -> None:
    try:
        events = parse(body)
    except MalformedPayload:
        return
    assert all(isinstance(event, ROUTED_TYPES) for event in events)
    assert_identifiers_in_their_fields(events)
    for event in events:
        if isinstance(event, InboundMessage):
            assert event.lead_wa_id or event.lead_user_id or event.lead_parent_user_id
