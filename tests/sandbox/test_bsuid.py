"""The sandbox names leads by business-scoped user ID (BSUID) as Gupshup does once an app's
BSUID flag is on: webhooks without the number of a user who withholds it, sends and statuses
addressed to a BSUID, leads sharing their own number, and the flag off as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox import RunningSandbox
from shared.gupshup.parsers import parse_webhook
from shared.models import InboundMessage
from tests.conftest import CallbackReceiver, control
from tests.sandbox.conftest import (
    AGENT,
    APP,
    APP_ID,
    LEAD,
    Http,
    approved_template,
    fixture,
    listed,
    partner_app_token,
    post_status,
    register,
    send,
    shape,
)

BSUID = "SG.4472918830195521"
PARENT_BSUID = "SG.ENT.11815799212886844830"
OWN_NUMBER = "6591234567"
REQUEST_CONTACT = {"type": "request_contact_info", "body": {"text": "May I have your number?"}}


async def inbound(http: Http, sandbox: RunningSandbox, **fields: Any) -> tuple[int, Any]:
    """`POST /sandbox/v1/inbound` for APP with `fields` (a text message unless told)."""
    body = {"app": APP, "name": "Marcus", **fields}
    if not {"text", "message", "share_number"} & set(fields):
        body["text"] = "Hi, saw your Bedok listing"
    return await control(http, sandbox, "POST", "/sandbox/v1/inbound", **body)


def parsed(webhook: dict[str, Any]) -> Any:
    """The one event the product reads from `webhook`."""
    (event,) = parse_webhook(
        webhook, org_id="o", agent_id="a", event_id="e", received_at=datetime.now(UTC)
    )
    return event


def v3_value(webhook: dict[str, Any]) -> Any:
    return webhook["entry"][0]["changes"][0]["value"]


def keys_in(value: Any) -> set[str]:
    """Every object key anywhere in `value`."""
    if isinstance(value, dict):
        return set(value) | set().union(*(keys_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(item) for item in value))
    return set()


async def set_bsuid_flags(
    http: Http, sandbox: RunningSandbox, token: str, body: Any
) -> tuple[int, Any]:
    async with http.put(
        f"{sandbox.base_url}/partner/app/{APP_ID}/config/bsuid",
        json=body,
        headers={"Authorization": token},
    ) as response:
        return response.status, await response.json()


async def app_record(http: Http, sandbox: RunningSandbox) -> Any:
    _, apps = await control(http, sandbox, "GET", "/sandbox/v1/apps")
    (record,) = (app for app in apps if app["app"] == APP)
    return record


# --- Registration and the Partner API flag -----------------------------------------------------


async def test_the_bsuid_flag_is_off_unless_registered_on(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    assert (await app_record(http, sandbox))["bsuid"] is False
    await register(http, sandbox, receiver, bsuid=True)
    record = await app_record(http, sandbox)
    assert record["bsuid"] is True
    assert record["bsuid_flags"] == {"enableBSUID": True, "enableBSUIDV3": True}


async def test_partner_api_turns_the_flag_of_the_apps_format_on_and_off(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)
    token = await partner_app_token(http, sandbox)
    assert (await inbound(http, sandbox, user_id=BSUID))[1]["parked"] is True

    assert await set_bsuid_flags(http, sandbox, token, {"enableBSUID": True}) == (
        200,
        {"status": "success"},
    )
    assert (await app_record(http, sandbox))["bsuid"] is True
    status, answer = await inbound(http, sandbox, user_id=BSUID)
    assert (status, answer["callback_status"]) == (200, 200)
    assert "parked" not in answer

    # The v3 flag is another one: a v2 app keeps its own.
    bearer = f"Bearer {token}"
    assert (await set_bsuid_flags(http, sandbox, bearer, {"enableBSUIDV3": False}))[0] == 200
    assert (await app_record(http, sandbox))["bsuid"] is True
    await set_bsuid_flags(http, sandbox, token, {"enableBSUID": False})
    assert (await app_record(http, sandbox))["bsuid"] is False
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    ("body", "token", "status", "message"),
    [
        ({}, "app", 400, "At least one of enableBSUID or enableBSUIDV3 must be provided"),
        ({"enableBSUID": "yes"}, "app", 400, "enableBSUID must be a boolean"),
        (["enableBSUID"], "app", 400, "Invalid request body"),
        ({"enableBSUID": True}, "wrong", 401, "Authentication Failed"),
    ],
    ids=["no-flag", "not-a-boolean", "not-an-object", "wrong-token"],
)
async def test_partner_bsuid_config_refuses_like_gupshup(
    http: Http,
    sandbox: RunningSandbox,
    receiver: CallbackReceiver,
    body: Any,
    token: str,
    status: int,
    message: str,
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)
    app_token = await partner_app_token(http, sandbox)
    answer = await set_bsuid_flags(http, sandbox, app_token if token == "app" else token, body)
    assert answer == (status, {"status": "error", "message": message})
    assert (await app_record(http, sandbox))["bsuid"] is False


# --- Inbound webhooks -----------------------------------------------------------------------


async def test_v2_message_from_a_user_without_a_number_names_them_by_bsuid_only(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    status, answer = await inbound(http, sandbox, user_id=BSUID, username="@marcus.k")
    assert (status, answer["callback_status"]) == (200, 200)
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v2_text_bsuid_only.json"))
    payload = webhook["payload"]
    assert payload["source"] == BSUID
    assert payload["sender"] == {"name": "Marcus", "userId": BSUID, "username": "@marcus.k"}
    assert not {"phone", "country_code", "dial_code"} & keys_in(webhook)
    event = parsed(webhook)
    assert (event.lead_wa_id, event.lead_user_id, event.lead_username) == (
        None,
        BSUID,
        "@marcus.k",
    )


async def test_v2_message_from_a_user_with_number_and_bsuid_names_both(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID, "name": "Rachel Lim"})
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v2_text_bsuid_with_phone.json"))
    assert webhook["payload"]["source"] == LEAD
    assert webhook["payload"]["sender"] == {
        **fixture("v2_text.json")["payload"]["sender"],
        "userId": BSUID,
    }


async def test_v3_message_from_a_user_without_a_number_follows_metas_shape(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID, bsuid=True)
    _, answer = await inbound(http, sandbox, user_id=BSUID, username="@marcus.k", timestamp=1_000)
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v3_text_bsuid_only.json"))
    value = v3_value(webhook)
    assert value["contacts"] == [
        {"profile": {"name": "Marcus", "username": "@marcus.k"}, "user_id": BSUID}
    ]
    assert value["messages"][0] == {
        "from_user_id": BSUID,
        "id": answer["message_id"],
        "timestamp": "1",
        "type": "text",
        "text": {"body": "Hi, saw your Bedok listing"},
    }
    assert (parsed(webhook).lead_wa_id, parsed(webhook).lead_user_id) == (None, BSUID)


async def test_v3_message_from_a_user_with_number_and_bsuids_names_them_all(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID, bsuid=True)
    lead = {"from": LEAD, "user_id": BSUID, "parent_user_id": PARENT_BSUID, "name": "Rachel Lim"}
    await inbound(http, sandbox, **lead)
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v3_text_bsuid_with_phone.json"))
    value = v3_value(webhook)
    assert value["contacts"][0] == {
        "profile": {"name": "Rachel Lim"},
        "wa_id": LEAD,
        "user_id": BSUID,
        "parent_user_id": PARENT_BSUID,
    }
    message = value["messages"][0]
    assert (message["from"], message["from_user_id"], message["from_parent_user_id"]) == (
        LEAD,
        BSUID,
        PARENT_BSUID,
    )


@pytest.mark.parametrize("webhook_format", ["v2", "v3"])
async def test_without_the_flag_webhooks_name_users_by_number_only(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, webhook_format: str
) -> None:
    await register(http, sandbox, receiver, format=webhook_format, app_id=APP_ID)
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID, "username": "@marcus.k"})
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture(f"{webhook_format}_text.json"))
    assert BSUID not in json.dumps(webhook)
    assert "@marcus.k" not in json.dumps(webhook)


@pytest.mark.parametrize("webhook_format", ["v2", "v3"])
async def test_without_the_flag_a_message_from_a_user_without_a_number_is_parked(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, webhook_format: str
) -> None:
    await register(http, sandbox, receiver, format=webhook_format, app_id=APP_ID)
    status, answer = await inbound(http, sandbox, user_id=BSUID, id="wamid.PARKED")
    assert (status, answer) == (
        200,
        {"message_id": "wamid.PARKED", "callback_status": None, "parked": True},
    )
    assert receiver.received == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"user_id": LEAD}, "is not a business-scoped user ID"),
        ({"user_id": "SG 1234"}, "is not a business-scoped user ID"),
        ({}, 'give "from", "user_id" or both'),
        ({"from": LEAD, "parent_user_id": PARENT_BSUID}, '"parent_user_id" goes with "user_id"'),
        ({"user_id": BSUID, "parent_user_id": BSUID}, "is not a parent business-scoped user ID"),
        ({"user_id": BSUID, "share_number": OWN_NUMBER, "text": "Hi"}, "exactly one of"),
    ],
    ids=["number", "space", "nobody", "parent-alone", "parent-not-parent", "two-messages"],
)
async def test_inbound_naming_the_lead_wrongly_is_400(
    http: Http,
    sandbox: RunningSandbox,
    receiver: CallbackReceiver,
    fields: dict[str, Any],
    problem: str,
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    status, answer = await inbound(http, sandbox, **fields)
    assert status == 400 and problem in answer["message"]
    assert receiver.received == []


# --- Sends to a BSUID, their statuses and WhatsApp's rules ----------------------------------


async def test_a_send_to_a_bsuid_is_accepted_and_listed_by_that_bsuid(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    status, sent = await send(http, sandbox, destination=BSUID)
    assert status == 200 and sent["status"] == "submitted"
    [item] = await listed(http, sandbox, f"app={APP}&destination={BSUID}")
    assert (item["messageId"], item["destination"]) == (sent["messageId"], BSUID)
    assert await listed(http, sandbox, f"app={APP}&destination={LEAD}") == []
    assert await listed(http, sandbox, f"app={APP}&destination=SG.1111") == []


async def test_a_template_send_to_a_bsuid_is_accepted_and_listed_by_that_bsuid(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID, bsuid=True)
    template_id = await approved_template(http, sandbox, await partner_app_token(http, sandbox))
    template = {"id": template_id, "params": ["Marcus", "Bedok"]}
    status, sent = await send(http, sandbox, destination=BSUID, template=template)
    assert status == 200
    [item] = await listed(http, sandbox, f"app={APP}&destination={BSUID}")
    assert (item["messageId"], item["type"], item["template"]) == (
        sent["messageId"],
        "template",
        template,
    )


@pytest.mark.parametrize("destination", ["SG 123", "sg.123", "SG.", "+SG.123"])
async def test_a_send_to_something_neither_number_nor_bsuid_is_invalid_destination(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, destination: str
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    assert await send(http, sandbox, destination=destination) == (
        400,
        fixture("send_error_response.json"),
    )


async def test_a_lead_known_by_number_and_bsuid_is_listed_by_either(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID})
    _, to_bsuid = await send(http, sandbox, destination=BSUID)
    _, to_number = await send(http, sandbox, destination=LEAD)
    both = [to_bsuid["messageId"], to_number["messageId"]]
    for address in (BSUID, LEAD):
        items = await listed(http, sandbox, f"app={APP}&destination={address}")
        assert [item["messageId"] for item in items] == both


async def test_v2_statuses_carry_the_bsuid_and_the_number_when_known(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    _, unknown_number = await send(http, sandbox, destination=BSUID)
    await post_status(http, sandbox, unknown_number["messageId"], "sent")
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID})
    _, known_number = await send(http, sandbox, destination=BSUID)
    _, to_number = await send(http, sandbox, destination=LEAD)
    for sent in (known_number, to_number):
        await post_status(http, sandbox, sent["messageId"], "delivered")
    statuses = receiver.message_events()
    assert shape(receiver.received[0]) == shape(fixture("v2_event_sent_bsuid.json"))
    assert [(s["destination"], s["userId"]) for s in statuses] == [
        (BSUID, BSUID),
        (LEAD, BSUID),
        (LEAD, BSUID),
    ]


async def test_v3_statuses_carry_recipient_user_id_and_the_number_only_when_known(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID, bsuid=True)
    await inbound(http, sandbox, user_id=BSUID, parent_user_id=PARENT_BSUID)
    _, sent = await send(http, sandbox, destination=BSUID)
    await post_status(http, sandbox, sent["messageId"], "delivered")
    status_webhook = receiver.received[-1]
    expected = fixture("v3_status_delivered_bsuid.json")
    v3_value(expected)["statuses"][0]["recipient_parent_user_id"] = PARENT_BSUID
    assert shape(status_webhook) == shape(expected)
    status = v3_value(status_webhook)["statuses"][0]
    assert "recipient_id" not in status
    assert (status["recipient_user_id"], status["recipient_parent_user_id"]) == (
        BSUID,
        PARENT_BSUID,
    )
    event = parsed(status_webhook)
    assert (event.destination, event.user_id) == (BSUID, BSUID)

    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID})
    await post_status(http, sandbox, sent["messageId"], "read")  # accepted before it knew
    _, later = await send(http, sandbox, destination=BSUID)
    await post_status(http, sandbox, later["messageId"], "read")
    before, after = (v3_value(hook)["statuses"][0] for hook in receiver.received[-2:])
    assert "recipient_id" not in before
    assert (after["recipient_id"], after["recipient_user_id"]) == (LEAD, BSUID)


@pytest.mark.parametrize("webhook_format", ["v2", "v3"])
async def test_without_the_flag_statuses_carry_no_user_id(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, webhook_format: str
) -> None:
    await register(http, sandbox, receiver, format=webhook_format, app_id=APP_ID)
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID})
    _, sent = await send(http, sandbox, destination=LEAD)
    await post_status(http, sandbox, sent["messageId"], "delivered")
    delivered = {"v2": "v2_event_delivered.json", "v3": "v3_status_delivered.json"}
    assert shape(receiver.received[-1]) == shape(fixture(delivered[webhook_format]))
    assert BSUID not in json.dumps(receiver.received[-1])


async def set_rules(http: Http, sandbox: RunningSandbox, **rules: Any) -> None:
    status, _ = await control(http, sandbox, "POST", f"/sandbox/v1/apps/{APP}/rules", **rules)
    assert status == 200


async def test_a_send_to_a_bsuid_sees_the_window_of_the_leads_inbound(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await set_rules(http, sandbox, enforce_window=True)
    await inbound(http, sandbox, user_id=BSUID)
    await inbound(http, sandbox, **{"from": "6598880000", "user_id": "SG.5550001"})
    for destination in (BSUID, "SG.5550001", "6598880000", "SG.9990001", LEAD):
        assert (await send(http, sandbox, destination=destination))[0] == 200
    failures = {
        item["destination"]: item.get("failure", {}).get("code")
        for item in await listed(http, sandbox, f"app={APP}")
    }
    assert failures == {
        BSUID: None,
        "SG.5550001": None,
        "6598880000": None,
        "SG.9990001": 1005,
        LEAD: 1005,
    }


async def test_an_opt_out_by_bsuid_or_number_holds_for_the_lead_by_either(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await set_rules(http, sandbox)
    await inbound(http, sandbox, **{"from": LEAD, "user_id": BSUID})
    optout = {"app": APP, "destination": BSUID}
    assert (await control(http, sandbox, "POST", "/sandbox/v1/optouts", **optout))[0] == 200
    await send(http, sandbox, destination=LEAD)
    [item] = await listed(http, sandbox, f"app={APP}")
    assert item["failure"]["code"] == 1012


# --- Asking for and sharing a number --------------------------------------------------------


async def test_a_request_for_contact_info_is_accepted_and_listed_with_its_text(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    status, sent = await send(http, sandbox, destination=BSUID, message=REQUEST_CONTACT)
    assert status == 200
    [item] = await listed(http, sandbox, f"app={APP}&destination={BSUID}")
    assert (item["messageId"], item["type"], item["text"]) == (
        sent["messageId"],
        "request_contact_info",
        "May I have your number?",
    )
    assert item["message"] == REQUEST_CONTACT
    no_body = {"type": "request_contact_info"}
    assert await send(http, sandbox, destination=BSUID, message=no_body) == (
        400,
        {"status": "error", "message": "Invalid Message"},
    )


async def test_v2_share_number_posts_the_leads_own_card_in_reply_to_the_last_send(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await inbound(http, sandbox, user_id=BSUID)
    await send(http, sandbox, destination=BSUID)
    _, request = await send(http, sandbox, destination=BSUID, message=REQUEST_CONTACT)
    await send(http, sandbox, destination="SG.9990001")  # another lead's, later
    status, answer = await inbound(http, sandbox, user_id=BSUID, share_number=OWN_NUMBER)
    assert (status, answer["callback_status"]) == (200, 200)
    webhook = receiver.received[-1]
    payload = webhook["payload"]
    assert set(payload) == set(fixture("v2_contact_shared.json")["payload"])
    assert (payload["type"], payload["source"]) == ("contact", BSUID)
    assert payload["payload"]["contacts"] == [
        {
            "name": {"formatted_name": "Marcus", "first_name": "Marcus"},
            "phones": [{"phone": "+65 9123 4567", "type": "CELL", "wa_id": OWN_NUMBER}],
        }
    ]
    assert payload["context"]["gsId"] == request["messageId"]
    event = parsed(webhook)
    assert isinstance(event, InboundMessage)
    assert (event.type, event.lead_user_id, event.shared_own_number) == (
        "contacts",
        BSUID,
        OWN_NUMBER,
    )
    assert event.context_gupshup_message_id == request["messageId"]


async def test_v3_share_number_posts_metas_contacts_message_in_reply_to_the_last_send(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID, bsuid=True)
    await inbound(http, sandbox, user_id=BSUID)
    _, request = await send(http, sandbox, destination=BSUID, message=REQUEST_CONTACT)
    await post_status(http, sandbox, request["messageId"], "delivered")
    whatsapp_id = v3_value(receiver.received[-1])["statuses"][0]["id"]
    await inbound(http, sandbox, user_id=BSUID, share_number=OWN_NUMBER, name="")
    webhook = receiver.received[-1]
    message = v3_value(webhook)["messages"][0]
    assert set(message) == set(v3_value(fixture("v3_contacts_shared.json"))["messages"][0])
    assert message["context"] == {"from": AGENT, "id": whatsapp_id}
    assert message["contacts"][0]["phones"][0]["wa_id"] == OWN_NUMBER
    event = parsed(webhook)
    assert (event.type, event.text, event.shared_own_number) == (
        "contacts",
        "+65 9123 4567",
        OWN_NUMBER,
    )


async def test_share_number_before_any_send_is_a_card_that_answers_nothing(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await inbound(http, sandbox, user_id=BSUID, share_number=OWN_NUMBER)
    [webhook] = receiver.received
    assert "context" not in webhook["payload"]
    event = parsed(webhook)
    assert (event.shared_numbers, event.shared_own_number) == ([OWN_NUMBER], None)


async def test_a_shared_number_is_remembered_for_the_statuses_of_later_sends(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, bsuid=True)
    await inbound(http, sandbox, user_id=BSUID, share_number=OWN_NUMBER)
    _, sent = await send(http, sandbox, destination=BSUID)
    await post_status(http, sandbox, sent["messageId"], "delivered")
    status = receiver.message_events()[-1]
    assert (status["destination"], status["userId"]) == (OWN_NUMBER, BSUID)


async def test_a_contact_message_given_as_is_reaches_v2_and_v3_apps(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    shared = fixture("v2_contact_shared.json")["payload"]
    message = {"type": "contact", "payload": shared["payload"]}
    for webhook_format in ("v2", "v3"):
        await register(http, sandbox, receiver, format=webhook_format, app_id=APP_ID, bsuid=True)
        await inbound(http, sandbox, user_id=BSUID, message=message, context=shared["context"])
    v2, v3 = (parsed(webhook) for webhook in receiver.received)
    for event in (v2, v3):
        assert (event.type, event.text, event.shared_own_number) == (
            "contacts",
            "Marcus Koh: +65 9123 4567",
            OWN_NUMBER,
        )
    assert receiver.received[0]["payload"]["payload"] == shared["payload"]
    assert (
        v3_value(receiver.received[1])["messages"][0]["contacts"] == shared["payload"]["contacts"]
    )
