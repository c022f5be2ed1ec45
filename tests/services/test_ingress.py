"""Ingress: webhooks are authenticated, bounded, validated and published before the 2xx."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.ingress.webhooks import WEBHOOK_PATH, create_webhook_app
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.models import RawWebhook
from shared.repositories.agents import AgentDirectory, AgentRepository
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import Tenant, Tenants, fetch_event, gupshup_fixture


@pytest.fixture
async def ingress_broker(settings: Settings, broker: Broker) -> AsyncIterator[Broker]:
    """Ingress's own connection to the broker (the topology is the test's)."""
    own = Broker(settings, "ingress")
    await own.connect()
    yield own
    await own.close()


@pytest.fixture
async def client(
    settings: Settings, store: Store, ingress_broker: Broker
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The webhook application, as the ingress service builds it."""
    app = create_webhook_app(
        settings,
        ingress_broker,
        AgentDirectory.for_store(store, settings),
        KeyRing.from_settings(settings),
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    """The agent whose app the v2 fixtures name."""
    return await tenants.agent()


def webhook_url(callback_key: str) -> str:
    return WEBHOOK_PATH.format(agent_key=callback_key)


async def router_depth(broker: Broker) -> int:
    return await broker.queue_depth(broker.topology.queue("router"))


async def test_valid_webhook_is_published_before_an_empty_200(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant
) -> None:
    body = gupshup_fixture("v2_text.json")
    response = await client.post(webhook_url(tenant.callback_key), json=body)
    assert response.status == 200
    assert await response.read() == b""
    raw = await fetch_event(broker, "router", RawWebhook, timeout=0.5)
    assert raw is not None, "a 200 was answered before the raw event was on the router queue"
    assert raw.org_id == tenant.org_id
    assert raw.agent_id == tenant.agent_id
    assert raw.body == body


async def test_unknown_callback_key_is_404(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant
) -> None:
    response = await client.post(webhook_url("cbk_not-a-key"), json=gupshup_fixture("v2_text.json"))
    assert response.status == 404
    assert await router_depth(broker) == 0


async def test_body_that_is_not_json_is_400(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant
) -> None:
    response = await client.post(
        webhook_url(tenant.callback_key),
        data=b'{"app": "TanHomesSG", "type": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert await router_depth(broker) == 0


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],
        "a string",
        {"hello": "world"},
        {"app": "TanHomesSG", "type": "message", "payload": {"type": "text", "payload": 7}},
    ],
    ids=["array", "string", "unknown-object", "message-without-fields"],
)
async def test_json_of_the_wrong_shape_is_400(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant, body: Any
) -> None:
    response = await client.post(webhook_url(tenant.callback_key), data=json.dumps(body))
    assert response.status == 400
    assert await router_depth(broker) == 0


async def test_body_over_the_size_limit_is_413(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant, settings: Settings
) -> None:
    body = gupshup_fixture("v2_text.json")
    body["payload"]["payload"]["text"] = "x" * (settings.webhook_max_body_bytes + 1)
    response = await client.post(webhook_url(tenant.callback_key), data=json.dumps(body))
    assert response.status == 413
    assert await router_depth(broker) == 0


def of_another_app(body: dict[str, Any]) -> None:
    """A v2 payload that names an app other than the agent's."""
    body["app"] = "SomeoneElsesApp"


def of_another_gupshup_app_id(body: dict[str, Any]) -> None:
    """A v3 payload that names a Gupshup app id other than the agent's."""
    body["gs_app_id"] = "11111111-2222-4333-8444-555555555555"


def naming_two_different_numbers(body: dict[str, Any]) -> None:
    """A v3 payload with a second entry for another phone number id."""
    other = json.loads(json.dumps(body["entry"][0]))
    other["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    body["entry"].append(other)


@pytest.mark.parametrize(
    ("fixture", "tamper", "status"),
    [
        ("v2_text.json", of_another_app, 403),
        ("v3_text.json", of_another_gupshup_app_id, 403),
        ("v3_text.json", naming_two_different_numbers, 400),
    ],
    ids=[
        "payload-of-another-app-is-403",
        "v3-payload-of-another-gupshup-app-id-is-403",
        "v3-payload-naming-two-different-numbers-is-400",
    ],
)
async def test_payload_not_for_the_agent_is_refused_and_not_published(
    client: TestClient[Any, Any],
    broker: Broker,
    tenant: Tenant,
    fixture: str,
    tamper: Callable[[dict[str, Any]], None],
    status: int,
) -> None:
    body = gupshup_fixture(fixture)
    tamper(body)
    response = await client.post(webhook_url(tenant.callback_key), json=body)
    assert response.status == status
    assert await router_depth(broker) == 0


@pytest.mark.parametrize("fixture", ["v2_text_bsuid_only.json", "v3_text_bsuid_only.json"])
async def test_message_from_a_lead_known_only_by_user_id_is_published_and_accepted(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant, fixture: str
) -> None:
    body = gupshup_fixture(fixture)
    response = await client.post(webhook_url(tenant.callback_key), json=body)
    assert response.status == 200
    raw = await fetch_event(broker, "router", RawWebhook, timeout=0.5)
    assert raw is not None and raw.body == body


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("v2_text_bsuid_only.json", "payload: names no user"),
        ("v3_text_bsuid_only.json", "entry[0].changes[0].value.messages[0]: names no user"),
    ],
    ids=["v2", "v3"],
)
async def test_message_naming_no_user_is_400_with_the_reason(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant, fixture: str, reason: str
) -> None:
    body = gupshup_fixture(fixture)
    if "payload" in body:
        del body["payload"]["source"], body["payload"]["sender"]["userId"]
    else:
        del body["entry"][0]["changes"][0]["value"]["messages"][0]["from_user_id"]
    response = await client.post(webhook_url(tenant.callback_key), json=body)
    assert response.status == 400
    assert (await response.json())["error"].startswith(f"malformed payload: {reason}")
    assert await router_depth(broker) == 0


async def test_platform_connectivity_check_is_accepted(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    response = await client.post(
        webhook_url(tenant.callback_key),
        json=gupshup_fixture("v2_platform_connectivity_check.json"),
    )
    assert response.status == 200
    assert await response.read() == b""


async def test_readyz_is_ready_with_the_broker_connected(client: TestClient[Any, Any]) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"broker": True}
    assert (await client.get("/healthz")).status == 200


async def test_stopping_ingress_is_not_ready_but_still_accepts_webhooks(
    settings: Settings, store: Store, ingress_broker: Broker, broker: Broker, tenant: Tenant
) -> None:
    stopping = asyncio.Event()
    app = create_webhook_app(
        settings,
        ingress_broker,
        AgentDirectory.for_store(store, settings),
        KeyRing.from_settings(settings),
        stopping=stopping,
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/readyz")).status == 200
        stopping.set()  # SIGTERM: load balancers must let go before the listener closes
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "stopping"}
        assert (await client.get("/healthz")).status == 200
        body = gupshup_fixture("v2_text.json")
        assert (await client.post(webhook_url(tenant.callback_key), json=body)).status == 200
    assert await fetch_event(broker, "router", RawWebhook, timeout=0.5) is not None


async def test_metrics_count_webhooks_by_status(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    await client.post(webhook_url("cbk_unknown"), json=gupshup_fixture("v2_text.json"))
    await client.post(webhook_url(tenant.callback_key), json=gupshup_fixture("v2_text.json"))
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'realtybot_webhooks_total{status="200"}' in text
    assert 'realtybot_webhooks_total{status="404"}' in text


async def test_signed_webhooks_must_match_the_agents_app_secret(
    client: TestClient[Any, Any], broker: Broker, tenant: Tenant, store: Store, settings: Settings
) -> None:
    repository = AgentRepository(store, KeyRing.from_settings(settings))
    await repository.set_credentials(tenant.org_id, tenant.agent_id, {"app_secret": "s3cret"})
    raw = json.dumps(gupshup_fixture("v3_text.json")).encode()
    good = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    url = webhook_url(tenant.callback_key)
    headers = {"Content-Type": "application/json"}

    forged = await client.post(
        url, data=raw, headers={**headers, "X-Hub-Signature-256": "sha256=00"}
    )
    assert forged.status == 401
    assert await router_depth(broker) == 0
    signed = await client.post(url, data=raw, headers={**headers, "X-Hub-Signature-256": good})
    assert signed.status == 200
    unsigned = await client.post(url, data=raw, headers=headers)  # Gupshup's own callbacks
    assert unsigned.status == 200
    assert await router_depth(broker) == 2
