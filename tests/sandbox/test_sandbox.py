"""The Gupshup sandbox speaks Gupshup's wire format and its control API does what it says."""

from __future__ import annotations

import asyncio
import re
import uuid

from sandbox import RunningSandbox, start_sandbox
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


async def test_accepted_text_send_is_submitted_and_listed(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    status, body = await send(http, sandbox)
    assert status == 200 and body["status"] == "submitted"
    assert uuid.UUID(body["messageId"]).version == 4
    [item] = await listed(http, sandbox, f"app={APP}&destination={LEAD}")
    assert item["messageId"] == body["messageId"]
    assert (item["source"], item["destination"], item["type"]) == (AGENT, LEAD, "text")
    assert item["text"] == "Hello Rachel"
    assert item["message"] == {"type": "text", "text": "Hello Rachel"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["at"])
    assert await listed(http, sandbox, f"app={APP}&destination=6500000000") == []


async def test_template_send_is_listed_with_its_template(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)
    template_id = await approved_template(http, sandbox, await partner_app_token(http, sandbox))
    template = {"id": template_id, "params": ["Rachel", "Tampines"]}
    status, _ = await send(http, sandbox, template=template)
    assert status == 200
    [item] = await listed(http, sandbox, f"app={APP}")
    assert (item["type"], item["template"]) == ("template", template)


async def test_wrong_apikey_is_refused_with_401_and_not_listed(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    status, body = await send(http, sandbox, apikey="wrong")
    assert (status, body) == (401, {"status": "error", "message": "Authentication Failed"})
    assert await listed(http, sandbox, f"app={APP}") == []


async def test_non_digit_destination_is_refused_like_gupshup(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    status, body = await send(http, sandbox, destination="+6598887777")
    assert (status, body) == (400, fixture("send_error_response.json"))
    assert await listed(http, sandbox, f"app={APP}") == []


async def test_429_fault_for_one_send_refuses_only_the_first(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await control(http, sandbox, "POST", "/sandbox/v1/faults", app=APP, mode="429", count=1)
    first = await send(http, sandbox)
    second = await send(http, sandbox)
    assert first == (429, fixture("send_throttled_response.json"))
    assert second[0] == 200
    listed_ids = [item["messageId"] for item in await listed(http, sandbox, f"app={APP}")]
    assert listed_ids == [second[1]["messageId"]]


async def test_accepting_500_fault_records_the_send_anyway(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await control(http, sandbox, "POST", "/sandbox/v1/faults", mode="500", accept=True)
    assert (await send(http, sandbox))[0] == 500
    await control(http, sandbox, "DELETE", "/sandbox/v1/faults")
    assert (await send(http, sandbox))[0] == 200
    assert len(await listed(http, sandbox, f"app={APP}")) == 2


async def test_inbound_text_posts_v2_webhook_shaped_like_fixture(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v2")
    inbound = {"app": APP, "from": LEAD, "name": "Rachel Lim", "text": "Hi"}
    status, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    assert status == 200 and body["callback_status"] == 200
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v2_text.json"))
    assert webhook["app"] == APP and webhook["payload"]["id"] == body["message_id"]
    assert webhook["payload"]["payload"] == {"text": "Hi"}
    assert webhook["payload"]["sender"] == fixture("v2_text.json")["payload"]["sender"]


async def test_inbound_repeats_given_id_and_typed_message(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    location = {"type": "location", "payload": {"latitude": "1.3521", "longitude": "103.9448"}}
    inbound = {
        "app": APP,
        "from": LEAD,
        "name": "Rachel Lim",
        "message": location,
        "id": "wamid.SAME",
        "timestamp": 1764050056000,
    }
    for _ in range(2):
        status, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
        assert (status, body) == (200, {"message_id": "wamid.SAME", "callback_status": 200})
    assert receiver.received[0] == receiver.received[1]
    expected = fixture("v2_location.json")
    expected["payload"]["id"] = "wamid.SAME"
    assert receiver.received[0] == expected


async def test_inbound_reports_failing_and_unreachable_callbacks(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    receiver.status = 503
    inbound = {"app": APP, "from": LEAD, "name": "Rachel Lim", "text": "Hi"}
    _, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    assert body["callback_status"] == 503
    await register(http, sandbox, receiver, callback_url="http://127.0.0.1:1/nowhere")
    _, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    assert body["callback_status"] == 0 and body["error"]


async def test_inbound_for_unknown_app_is_404(http: Http, sandbox: RunningSandbox) -> None:
    inbound = {"app": "Nobody", "from": LEAD, "name": "Rachel Lim", "text": "Hi"}
    status, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    assert status == 404 and body["status"] == "error"


async def test_v3_app_gets_v3_shaped_inbound_webhook(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID)
    inbound = {
        "app": APP,
        "from": LEAD,
        "name": "Rachel Lim",
        "text": "Is it available?",
        "timestamp": 1764050000000,
    }
    _, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    [webhook] = receiver.received
    assert shape(webhook) == shape(fixture("v3_text.json"))
    assert webhook["gs_app_id"] == APP_ID
    value = webhook["entry"][0]["changes"][0]["value"]
    assert value["metadata"]["display_phone_number"] == AGENT
    assert value["contacts"] == [{"profile": {"name": "Rachel Lim"}, "wa_id": LEAD}]
    assert value["messages"][0] == {
        "from": LEAD,
        "id": body["message_id"],
        "timestamp": "1764050000",
        "type": "text",
        "text": {"body": "Is it available?"},
    }


async def test_v2_statuses_follow_fixture_shapes(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    _, sent = await send(http, sandbox)
    gupshup_id = sent["messageId"]
    for status in ("enqueued", "sent", "delivered", "read", "failed"):
        assert await post_status(http, sandbox, gupshup_id, status) == {"callback_status": 200}
    enqueued, sent_event, delivered, read, failed = [hook["payload"] for hook in receiver.received]
    assert shape(receiver.received[0]) == shape(fixture("v2_event_enqueued.json"))
    assert shape(receiver.received[1]) == shape(fixture("v2_event_sent.json"))
    assert shape(receiver.received[2]) == shape(fixture("v2_event_delivered.json"))
    assert shape(receiver.received[4]) == shape(fixture("v2_event_failed.json"))
    assert enqueued["id"] == failed["id"] == gupshup_id
    whatsapp_id = enqueued["payload"]["whatsappMessageId"]
    assert whatsapp_id.startswith("wamid.")
    for event in (sent_event, delivered, read):
        assert (event["id"], event["gsId"]) == (whatsapp_id, gupshup_id)


async def test_v3_statuses_follow_fixture_shapes(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, format="v3", app_id=APP_ID)
    _, sent = await send(http, sandbox)
    for status in ("enqueued", "delivered"):
        await post_status(http, sandbox, sent["messageId"], status)
    reason = "Re-engagement message"
    await post_status(http, sandbox, sent["messageId"], "failed", code=131047, reason=reason)
    enqueued, delivered, failed = receiver.received
    assert shape(enqueued) == shape(fixture("v3_status_enqueued.json"))
    assert shape(delivered) == shape(fixture("v3_status_delivered.json"))
    assert shape(failed) == shape(fixture("v3_status_failed.json"))
    status = failed["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert status["gs_id"] == sent["messageId"]
    assert status["errors"] == [{"code": 131047, "title": "Re-engagement message"}]


async def test_raw_event_is_posted_as_given(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    opted_out = fixture("v2_user_opted_out.json")
    status, body = await control(
        http, sandbox, "POST", "/sandbox/v1/events", app=APP, body=opted_out
    )
    assert (status, body, receiver.received) == (200, {"callback_status": 200}, [opted_out])


async def test_messages_of_unknown_app_is_empty_list(http: Http, sandbox: RunningSandbox) -> None:
    assert await listed(http, sandbox, "app=Nobody") == []


async def test_reset_forgets_apps_and_messages(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await send(http, sandbox)
    assert (await control(http, sandbox, "POST", "/sandbox/v1/reset"))[0] == 200
    assert await listed(http, sandbox, f"app={APP}") == []
    assert (await send(http, sandbox))[0] == 401


async def test_partner_subscription_moves_callbacks_to_new_url(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID, callback_url="http://127.0.0.1:1/old")
    partner = sandbox.base_url + "/partner"
    async with http.post(partner + "/account/login", data={"email": "a@b.c", "password": "x"}) as r:
        partner_token = (await r.json())["token"]
    async with http.get(
        f"{partner}/app/{APP_ID}/token", headers={"Authorization": partner_token}
    ) as r:
        app_token = (await r.json())["token"]["token"]
    form = {
        "modes": "MESSAGE,EVENT",
        "tag": "realtybot",
        "showOnUI": "false",
        "url": receiver.url,
        "version": "3",
    }
    async with http.post(
        f"{partner}/app/{APP_ID}/subscription", data=form, headers={"Authorization": app_token}
    ) as r:
        assert r.status == 200
        assert (await r.json())["subscription"]["url"] == receiver.url
    inbound = {"app": APP, "from": LEAD, "name": "Rachel Lim", "text": "Hi"}
    _, body = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **inbound)
    assert body["callback_status"] == 200
    assert receiver.received[0]["object"] == "whatsapp_business_account"


async def test_auto_status_reports_enqueued_sent_delivered(
    http: Http, receiver: CallbackReceiver
) -> None:
    sandbox = await start_sandbox(port=0, auto_status=True)
    try:
        await register(http, sandbox, receiver)
        await send(http, sandbox)
        for _ in range(100):
            if len(receiver.received) == 3:
                break
            await asyncio.sleep(0.02)
        kinds = [hook["payload"]["type"] for hook in receiver.received]
        assert kinds == ["enqueued", "sent", "delivered"]
    finally:
        await sandbox.stop()


async def test_a_status_the_callback_refused_is_posted_again_until_accepted(
    http: Http, receiver: CallbackReceiver
) -> None:
    """As Gupshup "attempts again after a brief interval": a status our ingress answered
    with 503 (its broker restarting, say) is not lost."""
    sandbox = await start_sandbox(port=0, auto_status=True)
    try:
        await register(http, sandbox, receiver)
        receiver.status = 503
        await send(http, sandbox)
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.02)
        refused = len(receiver.received)
        assert refused >= 1
        receiver.status = 200
        for _ in range(200):
            kinds = [hook["payload"]["type"] for hook in receiver.received[refused:]]
            if len(kinds) >= 3:
                break
            await asyncio.sleep(0.05)
        assert kinds[-3:] == ["enqueued", "sent", "delivered"]
    finally:
        await sandbox.stop()
