"""The sandbox's Partner template API, Meta's review via the control API, and template sends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sandbox import RunningSandbox
from tests.conftest import CallbackReceiver, control
from tests.sandbox.conftest import (
    APP,
    APP_ID,
    Http,
    create_template,
    fixture,
    listed,
    partner_app_token,
    register,
    send,
    set_template_status,
    shape,
)

OTHER_APP_ID = "5d0f3b1a-8c2e-4f7a-b6d9-0e1c2a3b4c5d"
EXISTS = "Template Already exists with same namespace and elementName and languageCode"


async def list_templates(
    http: Http, sandbox: RunningSandbox, app_token: str, app_id: str = APP_ID
) -> tuple[int, Any]:
    async with http.get(
        f"{sandbox.base_url}/partner/app/{app_id}/templates", headers={"Authorization": app_token}
    ) as response:
        return response.status, await response.json()


@pytest.fixture
async def app_token(http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver) -> str:
    """APP registered with APP_ID and its Partner app token."""
    await register(http, sandbox, receiver, app_id=APP_ID)
    return await partner_app_token(http, sandbox)


async def test_created_template_is_pending_with_gupshup_fields(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    status, body = await create_template(http, sandbox, app_token)
    assert status == 200 and body["status"] == "success"
    template = body["template"]
    assert uuid.UUID(template["id"]).version == 4
    assert {key: template[key] for key in ("elementName", "languageCode", "category")} == {
        "elementName": "viewing_reminder",
        "languageCode": "en",
        "category": "UTILITY",
    }
    assert (template["status"], template["data"]) == (
        "PENDING",
        "Hi {{1}}, see you at {{2}} tomorrow.",
    )
    assert template["appId"] == APP_ID and template["templateType"] == "TEXT"


async def test_list_shows_every_template_of_the_app_oldest_first(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    _, first = await create_template(http, sandbox, app_token)
    _, second = await create_template(
        http,
        sandbox,
        app_token,
        elementName="new_launch",
        languageCode="en_US",
        category="MARKETING",
        content="New launch in {{1}}!",
        example="New launch in Punggol!",
    )
    status, body = await list_templates(http, sandbox, app_token)
    assert status == 200 and body["status"] == "success"
    assert [item["id"] for item in body["templates"]] == [
        first["template"]["id"],
        second["template"]["id"],
    ]
    item = body["templates"][1]
    assert {"id", "elementName", "languageCode", "category", "status", "reason", "data"} <= set(
        item
    )
    assert isinstance(item["createdOn"], int) and isinstance(item["modifiedOn"], int)
    assert (item["elementName"], item["status"], item["reason"]) == ("new_launch", "PENDING", None)


async def test_same_name_and_language_is_refused_but_another_language_is_not(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    assert (await create_template(http, sandbox, app_token))[0] == 200
    assert await create_template(http, sandbox, app_token) == (
        400,
        {"status": "error", "message": EXISTS},
    )
    assert (await create_template(http, sandbox, app_token, languageCode="en_GB"))[0] == 200
    _, body = await list_templates(http, sandbox, app_token)
    assert len(body["templates"]) == 2


@pytest.mark.parametrize(
    ("field", "value", "message_start"),
    [
        ("elementName", "Viewing-Reminder", "Invalid elementName"),
        ("elementName", "", "Invalid elementName"),
        ("languageCode", "english", "Invalid languageCode"),
        ("category", "PROMOTION", "Invalid category provided"),
        ("templateType", "IMAGE", "Invalid templateType"),
        ("vertical", "", "vertical is required"),
        ("content", "", "content is required"),
        ("content", "Hi {{2}}", "Invalid content"),
        ("example", "Hi Rachel", "Invalid example"),
        ("example", "", "Invalid example"),
    ],
)
async def test_invalid_template_fields_are_refused_with_a_message(
    http: Http,
    sandbox: RunningSandbox,
    app_token: str,
    field: str,
    value: str,
    message_start: str,
) -> None:
    status, body = await create_template(http, sandbox, app_token, **{field: value})
    assert status == 400 and body["status"] == "error"
    assert body["message"].startswith(message_start)
    assert (await list_templates(http, sandbox, app_token))[1]["templates"] == []


async def test_template_api_needs_that_apps_token(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, app_token: str
) -> None:
    await control(
        http,
        sandbox,
        "POST",
        "/sandbox/v1/apps",
        app="OtherApp",
        api_key="key-other",
        number="6591110002",
        callback_url=receiver.url,
        app_id=OTHER_APP_ID,
    )
    other_token = await partner_app_token(http, sandbox, OTHER_APP_ID)
    refused = (401, {"status": "error", "message": "Authentication Failed"})
    assert await create_template(http, sandbox, other_token) == refused
    assert await list_templates(http, sandbox, "wrong") == refused
    assert (await list_templates(http, sandbox, app_token, app_id=str(uuid.uuid4())))[0] == 404


async def test_rejection_posts_template_event_like_fixture_and_list_shows_reason(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, app_token: str
) -> None:
    _, created = await create_template(http, sandbox, app_token)
    template_id = created["template"]["id"]
    status, body = await set_template_status(
        http, sandbox, "REJECTED", template_id=template_id, timestamp=1764050105000
    )
    assert status == 200 and body["callback_status"] == 200
    expected = fixture("v2_template_event.json")
    expected["app"], expected["payload"]["id"] = APP, template_id
    assert receiver.received == [expected]
    [item] = (await list_templates(http, sandbox, app_token))[1]["templates"]
    assert (item["status"], item["reason"]) == ("REJECTED", "INVALID_FORMAT")
    assert item["modifiedOn"] == 1764050105000


async def test_approval_by_name_and_language_posts_lowercase_status_without_reason(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, app_token: str
) -> None:
    await create_template(http, sandbox, app_token)
    status, body = await set_template_status(
        http, sandbox, "APPROVED", element_name="viewing_reminder", language="en"
    )
    assert status == 200 and body["template"]["status"] == "APPROVED"
    [event] = receiver.received
    expected = shape(fixture("v2_template_event.json"))
    del expected["payload"]["rejectedReason"]
    assert shape(event) == expected
    assert event["payload"]["status"] == "approved"
    assert event["payload"]["id"] == body["template"]["id"]


async def test_pause_carries_the_given_reason(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, app_token: str
) -> None:
    _, created = await create_template(http, sandbox, app_token)
    template_id = created["template"]["id"]
    await set_template_status(
        http, sandbox, "PAUSED", template_id=template_id, reason="LOW_QUALITY"
    )
    assert receiver.received[0]["payload"]["status"] == "paused"
    assert receiver.received[0]["payload"]["rejectedReason"] == "LOW_QUALITY"
    [item] = (await list_templates(http, sandbox, app_token))[1]["templates"]
    assert (item["status"], item["reason"]) == ("PAUSED", "LOW_QUALITY")


async def test_status_change_of_unknown_or_ambiguous_template_is_refused(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    _, created = await create_template(http, sandbox, app_token)
    template_id = created["template"]["id"]
    assert (await set_template_status(http, sandbox, "APPROVED", template_id="nope"))[0] == 404
    assert (await set_template_status(http, sandbox, "PENDING", template_id=template_id))[0] == 400
    both = {"template_id": template_id, "element_name": "viewing_reminder", "language": "en"}
    assert (await set_template_status(http, sandbox, "APPROVED", **both))[0] == 400
    assert (await set_template_status(http, sandbox, "APPROVED"))[0] == 400


async def test_template_send_needs_an_approved_template_of_the_app(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    _, created = await create_template(http, sandbox, app_token)
    template = {"id": created["template"]["id"], "params": ["Rachel", "Tampines"]}
    unknown = {"id": str(uuid.uuid4()), "params": []}
    assert await send(http, sandbox, template=unknown) == (
        400,
        {"status": "error", "message": "Template does not exist"},
    )
    assert await send(http, sandbox, template=template) == (
        400,
        {"status": "error", "message": "Template is not approved (status PENDING)"},
    )
    await set_template_status(http, sandbox, "APPROVED", template_id=template["id"])
    status, accepted = await send(http, sandbox, template=template)
    assert status == 200 and accepted["status"] == "submitted"
    await set_template_status(http, sandbox, "PAUSED", template_id=template["id"])
    assert (await send(http, sandbox, template=template))[0] == 400
    [item] = await listed(http, sandbox, f"app={APP}")
    assert (item["messageId"], item["template"]) == (accepted["messageId"], template)


async def test_partner_login_checks_configured_credentials_and_tokens_expire(
    http: Http, sandbox: RunningSandbox, app_token: str
) -> None:
    partner = sandbox.base_url + "/partner"
    credentials = {"email": "ops@example.com", "password": "right"}
    await control(http, sandbox, "POST", "/sandbox/v1/partner/credentials", **credentials)
    async with http.post(partner + "/account/login", data={**credentials, "password": "x"}) as r:
        assert (r.status, await r.json()) == (
            401,
            {"status": "error", "message": "Authentication Failed"},
        )
    async with http.post(partner + "/account/login", data=credentials) as r:
        assert r.status == 200 and (await r.json())["token"]
    assert (await list_templates(http, sandbox, app_token))[0] == 200
    assert await control(http, sandbox, "POST", "/sandbox/v1/partner/expire-tokens") == (
        200,
        {"status": "ok"},
    )
    assert (await list_templates(http, sandbox, app_token))[0] == 401


async def test_reset_forgets_templates(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver, app_token: str
) -> None:
    await create_template(http, sandbox, app_token)
    await control(http, sandbox, "POST", "/sandbox/v1/reset")
    await register(http, sandbox, receiver, app_id=APP_ID)
    fresh_token = await partner_app_token(http, sandbox)
    assert (await list_templates(http, sandbox, fresh_token))[1]["templates"] == []
