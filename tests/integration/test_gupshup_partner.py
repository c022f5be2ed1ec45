"""PartnerClient against the local Gupshup sandbox: subscription, templates, tokens, failures;
the BSUID configuration against a local fake of the Partner API (`tests/fakes`).

Template review is Meta's; here the sandbox's control API plays it, and the template-event it
posts lands at a small callback server standing in for our ingress.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox import RunningSandbox
from shared.gupshup.partner import (
    PARTNER_TOKEN_TTL_SECONDS,
    BsuidOutcome,
    PartnerClient,
    PartnerError,
    PartnerTemplate,
    PartnerUnavailable,
    TemplateExists,
    enable_app_bsuid,
)
from tests.conftest import CallbackReceiver, control, free_port, register_app
from tests.fakes.gupshup_partner import FakePartnerApi, PartnerCall

EMAIL, PASSWORD = "ops@example.com", "s3cret-partner-pw"
BODY = "Hi {{1}}, your viewing at {{2}} is tomorrow at {{3}}."
EXAMPLE = "Hi Rachel, your viewing at Tampines Green is tomorrow at 3pm."


@dataclass(frozen=True)
class App:
    name: str
    app_id: str


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def app(sandbox: RunningSandbox, http: aiohttp.ClientSession) -> App:
    """A Gupshup app with an app id, registered at the sandbox and private to the test."""
    registered = App(name=f"TanHomes{uuid.uuid4().hex[:8]}", app_id=str(uuid.uuid4()))
    await register_app(
        http,
        sandbox,
        app=registered.name,
        app_id=registered.app_id,
        api_key="key-tan-homes",
        number="6591110001",
        callback_url="http://127.0.0.1:9/unused",
    )
    return registered


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[PartnerClient]:
    partner = PartnerClient(sandbox.base_url, EMAIL, PASSWORD, timeout_seconds=2.0)
    yield partner
    await partner.close()


async def create_viewing_reminder(client: PartnerClient, app: App) -> PartnerTemplate:
    return await client.create_template(
        app.app_id, "viewing_reminder", "en", "UTILITY", BODY, EXAMPLE
    )


async def review(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    app: App,
    template: PartnerTemplate,
    status: str,
    **extra: str,
) -> Any:
    """Meta's verdict on a template, through the sandbox's control API."""
    code, answer = await control(
        http,
        sandbox,
        "POST",
        "/sandbox/v1/templates/status",
        app=app.name,
        template_id=template.id,
        status=status,
        **extra,
    )
    assert code == 200, answer
    return answer


async def test_subscribe_points_the_apps_callbacks_at_the_url(
    client: PartnerClient,
    app: App,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    receiver: CallbackReceiver,
) -> None:
    subscription = await client.subscribe(app.app_id, receiver.url, version=3)
    assert (subscription.url, subscription.version) == (receiver.url, 3)
    assert "TEMPLATE" in subscription.modes and subscription.tag == "realtybot"
    _, apps = await control(http, sandbox, "GET", "/sandbox/v1/apps")
    [record] = [item for item in apps if item["app"] == app.name]
    assert (record["callback_url"], record["format"]) == (receiver.url, "v3")


async def test_created_template_is_pending_and_listed(client: PartnerClient, app: App) -> None:
    created = await create_viewing_reminder(client, app)
    assert (created.name, created.language, created.category) == (
        "viewing_reminder",
        "en",
        "UTILITY",
    )
    assert (created.status, created.reason, created.body) == ("PENDING", None, BODY)
    assert await client.list_templates(app.app_id) == [created]


async def test_same_name_and_language_raises_template_exists(
    client: PartnerClient, app: App
) -> None:
    await create_viewing_reminder(client, app)
    with pytest.raises(TemplateExists) as raised:
        await create_viewing_reminder(client, app)
    assert raised.value.status == 400
    assert "Template Already exists" in raised.value.message
    assert len(await client.list_templates(app.app_id)) == 1


async def test_invalid_template_is_refused_with_gupshups_message(
    client: PartnerClient, app: App
) -> None:
    with pytest.raises(PartnerError) as raised:
        await client.create_template(app.app_id, "Viewing Reminder", "en", "UTILITY", BODY, EXAMPLE)
    assert not isinstance(raised.value, TemplateExists)
    assert raised.value.status == 400 and "Invalid elementName" in raised.value.message


async def test_approval_posts_template_event_and_list_shows_approved(
    client: PartnerClient,
    app: App,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    receiver: CallbackReceiver,
) -> None:
    await client.subscribe(app.app_id, receiver.url)
    template = await create_viewing_reminder(client, app)
    answer = await review(http, sandbox, app, template, "APPROVED")
    assert answer["callback_status"] == 200
    [event] = receiver.received
    assert (event["app"], event["version"], event["type"]) == (app.name, 2, "template-event")
    assert event["payload"] == {
        "type": "status-update",
        "id": template.id,
        "status": "approved",
        "elementName": "viewing_reminder",
        "languageCode": "en",
    }
    [listed] = await client.list_templates(app.app_id)
    assert (listed.id, listed.status, listed.reason) == (template.id, "APPROVED", None)


async def test_rejected_template_carries_its_reason(
    client: PartnerClient,
    app: App,
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    receiver: CallbackReceiver,
) -> None:
    await client.subscribe(app.app_id, receiver.url)
    template = await create_viewing_reminder(client, app)
    await review(http, sandbox, app, template, "REJECTED", reason="TAG_CONTENT_MISMATCH")
    assert receiver.received[0]["payload"]["status"] == "rejected"
    assert receiver.received[0]["payload"]["rejectedReason"] == "TAG_CONTENT_MISMATCH"
    [listed] = await client.list_templates(app.app_id)
    assert (listed.status, listed.reason) == ("REJECTED", "TAG_CONTENT_MISMATCH")


async def test_wrong_password_is_a_401_partner_error_that_hides_the_password(
    sandbox: RunningSandbox, http: aiohttp.ClientSession, app: App
) -> None:
    await control(
        http, sandbox, "POST", "/sandbox/v1/partner/credentials", email=EMAIL, password="other"
    )
    partner = PartnerClient(sandbox.base_url, EMAIL, PASSWORD, timeout_seconds=2.0)
    try:
        with pytest.raises(PartnerError) as raised:
            await partner.list_templates(app.app_id)
    finally:
        await partner.close()
    assert type(raised.value) is PartnerError and raised.value.status == 401
    assert PASSWORD not in str(raised.value) and EMAIL not in str(raised.value)


async def test_expired_tokens_are_renewed_by_logging_in_once_more(
    client: PartnerClient, app: App, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    created = await create_viewing_reminder(client, app)
    first_login = await client.login()
    await control(http, sandbox, "POST", "/sandbox/v1/partner/expire-tokens")
    assert await client.list_templates(app.app_id) == [created]
    assert await client.login() != first_login


async def test_token_refused_again_after_a_new_login_is_a_401_partner_error(
    client: PartnerClient, app: App, http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    await client.list_templates(app.app_id)
    # The password changed and the tokens expired: the one renewed login fails too.
    await control(
        http, sandbox, "POST", "/sandbox/v1/partner/credentials", email=EMAIL, password="new"
    )
    await control(http, sandbox, "POST", "/sandbox/v1/partner/expire-tokens")
    with pytest.raises(PartnerError) as raised:
        await client.list_templates(app.app_id)
    assert type(raised.value) is PartnerError and raised.value.status == 401


async def test_partner_token_is_reused_for_23_hours_then_renewed(
    sandbox: RunningSandbox,
) -> None:
    clock = FakeClock()
    partner = PartnerClient(sandbox.base_url, EMAIL, PASSWORD, timeout_seconds=2.0, clock=clock)
    try:
        first = await partner.login()
        clock.now += PARTNER_TOKEN_TTL_SECONDS - 1
        assert await partner.login() == first
        clock.now += 1
        assert await partner.login() != first
    finally:
        await partner.close()


async def test_unknown_app_is_a_404_partner_error(client: PartnerClient) -> None:
    with pytest.raises(PartnerError) as raised:
        await client.list_templates(str(uuid.uuid4()))
    assert raised.value.status == 404


async def test_unreachable_base_url_raises_partner_unavailable() -> None:
    partner = PartnerClient(f"http://127.0.0.1:{free_port()}", EMAIL, PASSWORD, 2.0)
    try:
        with pytest.raises(PartnerUnavailable) as raised:
            await partner.login()
    finally:
        await partner.close()
    assert raised.value.status is None and PASSWORD not in str(raised.value)


async def test_service_unavailable_answer_raises_partner_unavailable() -> None:
    async def unavailable(_request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "message": "Service Unavailable"}, status=503)

    gupshup = TestServer(web.Application())
    gupshup.app.router.add_post("/partner/account/login", unavailable)
    await gupshup.start_server()
    partner = PartnerClient(str(gupshup.make_url("/")), EMAIL, PASSWORD, 2.0)
    try:
        with pytest.raises(PartnerUnavailable) as raised:
            await partner.login()
    finally:
        await partner.close()
        await gupshup.close()
    assert raised.value.status == 503


@pytest.fixture
async def bsuid_gupshup() -> AsyncIterator[FakePartnerApi]:
    """A local Partner API that serves the BSUID configuration (the sandbox does not yet)."""
    async with FakePartnerApi() as fake:
        yield fake


async def test_enable_bsuid_puts_both_flags_with_the_apps_token(
    bsuid_gupshup: FakePartnerApi,
) -> None:
    partner = PartnerClient(bsuid_gupshup.base_url, EMAIL, PASSWORD, 2.0)
    try:
        await partner.enable_bsuid("app-42")
    finally:
        await partner.close()
    assert bsuid_gupshup.bsuid_calls() == [
        PartnerCall(
            "PUT",
            "/partner/app/app-42/config/bsuid",
            {"enableBSUID": True, "enableBSUIDV3": True},
            "app-jwt-1",
        )
    ]


async def test_enable_bsuid_renews_a_refused_app_token_once(
    bsuid_gupshup: FakePartnerApi,
) -> None:
    bsuid_gupshup.push(401, {"status": "error", "message": "Invalid token"})
    partner = PartnerClient(bsuid_gupshup.base_url, EMAIL, PASSWORD, 2.0)
    try:
        await partner.enable_bsuid("app-42")
    finally:
        await partner.close()
    tokens = [call.authorization for call in bsuid_gupshup.bsuid_calls()]
    assert tokens == ["app-jwt-1", "app-jwt-2"]


@pytest.mark.parametrize(
    ("status", "answer", "error", "outcome"),
    [
        (
            400,
            {"status": "error", "message": "enableBSUID or enableBSUIDV3 is required"},
            PartnerError,
            "failed: HTTP 400: PUT /partner/app/app-42/config/bsuid: enableBSUID or "
            "enableBSUIDV3 is required",
        ),
        (
            503,
            {"status": "error", "message": "Service Unavailable"},
            PartnerUnavailable,
            "failed: HTTP 503: PUT /partner/app/app-42/config/bsuid: Service Unavailable",
        ),
        (
            200,
            {"status": "error", "message": "App not live"},
            PartnerError,
            "failed: HTTP 200: PUT /partner/app/app-42/config/bsuid: App not live",
        ),
    ],
)
async def test_a_refused_bsuid_configuration_is_a_partner_error_and_an_outcome(
    bsuid_gupshup: FakePartnerApi,
    status: int,
    answer: dict[str, Any],
    error: type[PartnerError],
    outcome: str,
) -> None:
    bsuid_gupshup.bsuid_answer = (status, answer)
    partner = PartnerClient(bsuid_gupshup.base_url, EMAIL, PASSWORD, 2.0)
    try:
        with pytest.raises(error) as raised:
            await partner.enable_bsuid("app-42")
        assert type(raised.value) is error and raised.value.status == status
        assert await enable_app_bsuid(partner, "app-42") == BsuidOutcome(False, outcome)
    finally:
        await partner.close()


async def test_enable_app_bsuid_says_why_it_did_not_ask(bsuid_gupshup: FakePartnerApi) -> None:
    partner = PartnerClient(bsuid_gupshup.base_url, EMAIL, PASSWORD, 2.0)
    try:
        assert await enable_app_bsuid(partner, None) == BsuidOutcome(False, "no gupshup_app_id")
        assert await enable_app_bsuid(None, "app-42") == BsuidOutcome(
            False, "partner API not configured"
        )
        assert bsuid_gupshup.calls == []
        assert await enable_app_bsuid(partner, "app-42") == BsuidOutcome(True)
    finally:
        await partner.close()


async def test_enable_bsuid_with_gupshup_unreachable_is_partner_unavailable() -> None:
    partner = PartnerClient(f"http://127.0.0.1:{free_port()}", EMAIL, PASSWORD, 2.0)
    try:
        outcome = await enable_app_bsuid(partner, "app-42")
    finally:
        await partner.close()
    assert outcome.enabled is False and outcome.reason is not None
    assert outcome.reason.startswith("failed: cannot connect")
