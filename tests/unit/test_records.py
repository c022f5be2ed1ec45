"""Typed records read from stored documents: what each shows, and to whom."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.models import InboundMessage, Location, Media, ReplyChoice, SendCommand
from shared.repositories.leads import LeadRecord
from shared.repositories.messages import ThreadMessage
from shared.repositories.replies import StoredReply
from shared.repositories.threads import Thread

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

STORED_LEAD = {
    "_id": "lead_1",
    "phone": "+6598887777",
    "names": [
        {"name": "Rachel", "org_id": "org_a", "at": NOW},
        {"name": "Rach", "org_id": "org_b", "at": NOW},
        {"name": "Rachel Tan", "org_id": "org_a", "at": NOW},
    ],
    "first_touch": {"org_id": "org_a", "agent_id": "agt_1", "at": NOW, "source": "organic"},
    "created_at": NOW,
}


def test_an_organization_sees_only_its_own_names_and_first_touch() -> None:
    lead = LeadRecord.model_validate(STORED_LEAD)

    no_user_ids = {"username": None, "usernames": [], "user_ids": [], "parent_user_id": None}
    assert lead.view_for("org_a").as_json() == {
        "lead_id": "lead_1",
        "phone": "+6598887777",
        **no_user_ids,
        "names": ["Rachel", "Rachel Tan"],
        "first_touch": STORED_LEAD["first_touch"],
    }
    assert lead.view_for("org_b").as_json() == {
        "lead_id": "lead_1",
        "phone": "+6598887777",
        **no_user_ids,
        "names": ["Rach"],
        "first_touch": None,
    }


def test_the_view_keeps_the_admin_api_key_order() -> None:
    view = LeadRecord.model_validate(STORED_LEAD).view_for("org_a").as_json()

    assert list(view) == [
        "lead_id",
        "phone",
        "username",
        "usernames",
        "user_ids",
        "parent_user_id",
        "names",
        "first_touch",
    ]


def test_a_lead_without_names_or_first_touch_reads() -> None:
    lead = LeadRecord.model_validate({"_id": "lead_2", "phone": "+6591230001"})

    assert lead.names_in("org_a") == []
    assert lead.view_for("org_a").first_touch is None


def test_a_lead_message_payload_reads_as_its_parts() -> None:
    inbound = InboundMessage(
        event_id="e1",
        org_id="org_a",
        agent_id="agt_1",
        provider_message_id="wamid.1",
        lead_wa_id="6598887777",
        type="list_reply",
        choice=ReplyChoice(id="slot-1", title="Sat 10:00", postback="slot-1"),
        location=Location(latitude=1.35, longitude=103.8, name="Tampines"),
        media=Media(url="https://example.test/a.jpg", caption="the unit"),
        sent_at=NOW,
        received_at=NOW,
    )
    stored = {
        "_id": "msg_1",
        "direction": "in",
        "type": inbound.type,
        "payload": inbound.model_dump(
            mode="json", include={"media", "location", "choice", "referral"}
        ),
        "sent_at": NOW,
        "received_at": NOW,
    }

    message = ThreadMessage.model_validate(stored)

    assert message.choice == inbound.choice
    assert message.location == inbound.location
    assert message.media == inbound.media


def test_our_message_has_no_payload_parts() -> None:
    message = ThreadMessage.model_validate(
        {
            "_id": "msg_2",
            "direction": "out",
            "send_id": "rpl_1.0",
            "author": "offline",
            "text": "Hi!",
            "sent_at": NOW,
            "received_at": NOW,
            "answered": True,
        }
    )

    assert (message.choice, message.location, message.media, message.payload) == (
        None,
        None,
        None,
        None,
    )


def test_a_stored_reply_reads_its_command_back() -> None:
    command = SendCommand(
        event_id="rpl_1",
        command_id="rpl_1",
        org_id="org_a",
        agent_id="agt_1",
        thread_id="thr_1",
        lead_id="lead_1",
        destination="+6598887777",
        bubbles=[],
        created_at=NOW,
    )
    stored = {
        "_id": "rpl_1",
        "command": command.model_dump(mode="json"),
        "answers": ["msg_1"],
        "engine": "offline",
        "thread_state": {"stage": "qualifying"},
        "published": False,
    }

    reply = StoredReply.model_validate(stored)

    assert reply.command == command
    assert (reply.answers, reply.engine, reply.thread_state) == (
        ["msg_1"],
        "offline",
        {"stage": "qualifying"},
    )


def test_a_thread_an_older_writer_stored_with_nulls_reads_as_unset() -> None:
    # A thread stored with null profile or questions must still be answered, not fail.
    thread = Thread.model_validate(
        {
            "_id": "thr_1",
            "org_id": "org_1",
            "agent_id": "agt_1",
            "lead_id": "lead_1",
            "profile": None,
            "asked": None,
            "offered": None,
            "opt_out_confirmed": None,
        }
    )
    assert (thread.profile, thread.asked, thread.offered, thread.opt_out_confirmed) == (
        {},
        [],
        [],
        False,
    )
