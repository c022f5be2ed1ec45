"""With RabbitMQ down, ingress answers 503 (Gupshup retries); once it is back, it accepts.

The test runs its own RabbitMQ node, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cli.local_stack import StackProcesses, port_open, stack_env
from shared.broker import Broker, PublishFailed, Subscription, Subscriptions
from shared.crypto import KeyRing
from shared.models import ThreadWork
from shared.repositories.agents import AgentRepository
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.settings import Settings
from shared.store import Store
from tests.conftest import make_settings
from tests.e2e.conftest import free_port
from tests.e2e.private_infra import PrivateRabbitMQ


@pytest.fixture
async def rabbitmq(tmp_path: Path) -> AsyncIterator[PrivateRabbitMQ]:
    """A private RabbitMQ node (not started yet), stopped at the end."""
    node = PrivateRabbitMQ(tmp_path / "rabbitmq")
    yield node
    await node.stop()


def text_webhook(message_id: str) -> dict[str, object]:
    """A lead's text message as Gupshup posts it (v2)."""
    return {
        "app": "OutageApp",
        "timestamp": 1764050000000,
        "version": 2,
        "type": "message",
        "payload": {
            "id": message_id,
            "source": "6598887777",
            "type": "text",
            "payload": {"text": "Hello?"},
            "sender": {"phone": "6598887777", "name": "Rachel"},
        },
    }


async def post_until_accepted(
    http: aiohttp.ClientSession, url: str, body: dict[str, object]
) -> None:
    """Retry like Gupshup does: every answer is 503 until one is 200 with an empty body."""
    deadline = time.monotonic() + 60
    while True:
        async with http.post(url, json=body) as response:
            if response.status == 200:
                assert await response.read() == b""
                return
            assert response.status == 503
        assert time.monotonic() < deadline, "ingress did not recover"
        await asyncio.sleep(0.5)


async def test_ingress_answers_503_while_rabbitmq_is_down_and_accepts_after(
    rabbitmq: PrivateRabbitMQ, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        amqp_url=rabbitmq.url,
        ingress_port=free_port(),
        admin_port=free_port(),
        publish_timeout_seconds=2,
    )
    store = Store(settings)
    await store.migrate()
    org, _ = await OrganizationRepository(store).create("Outage Realty", OrganizationSettings())
    _, key = await AgentRepository(store, KeyRing.from_settings(settings)).create(
        org_id=org.id,
        name="Jason Tan",
        number="+6591110002",
        gupshup_app="OutageApp",
        gupshup_api_key="k",
    )
    # Ingress starts while the broker is down, as after a cluster-wide restart.
    ingress = StackProcesses(stack_env(settings), sandbox_port=0, log_dir=tmp_path / "logs")
    ingress.start(names=("ingress",), sandbox=False)
    base = f"http://127.0.0.1:{settings.ingress_port}"
    url = f"{base}/v1/webhooks/gupshup/{key}"
    try:
        async with aiohttp.ClientSession() as http:
            while not port_open(settings.ingress_port):
                await asyncio.sleep(0.1)
            async with http.post(url, json=text_webhook("wamid.before-start")) as response:
                assert response.status == 503
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200  # alive: Kubernetes must not restart it

            await rabbitmq.start()
            await post_until_accepted(http, url, text_webhook("wamid.before-start"))

            await rabbitmq.stop()
            async with http.post(url, json=text_webhook("wamid.outage")) as response:
                assert response.status == 503
            await rabbitmq.start()
            await post_until_accepted(http, url, text_webhook("wamid.outage"))

        broker = Broker(settings, "test")
        await broker.connect()
        received = [
            await broker.fetch(broker.topology.queue("router"), timeout=5) for _ in range(2)
        ]
        await broker.close()
        bodies = b" ".join(m.body for m in received if m is not None)
        assert b"wamid.before-start" in bodies and b"wamid.outage" in bodies
    finally:
        assert ingress.stop() == {"ingress": 0}
        await store.client.drop_database(settings.mongodb_db)
        await store.close()


async def test_consumers_resume_after_the_broker_restarts(rabbitmq: PrivateRabbitMQ) -> None:
    """A stage keeps consuming once RabbitMQ is back: its consumer is restored with the
    connection, so the process need not be restarted (its readiness never said otherwise)."""
    settings: Settings = make_settings(amqp_url=rabbitmq.url)
    await rabbitmq.start()
    broker = Broker(settings, "restart-check")
    await broker.connect()
    await broker.declare_topology()
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: ThreadWork) -> None:
        await received.put(event.thread_id)

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    work = ThreadWork(
        event_id="e1", org_id="org_1", agent_id="agt_1", thread_id="before", lead_id="lead_1"
    )
    await broker.publish(work, message_id="m1")
    assert await asyncio.wait_for(received.get(), timeout=15) == "before"

    await rabbitmq.restart(hard=False)
    deadline = time.monotonic() + 60
    while True:  # publishes fail until the connection is restored
        try:
            after = work.model_copy(update={"event_id": "e2", "thread_id": "after"})
            await broker.publish(after, message_id="m2")
            break
        except PublishFailed:
            assert time.monotonic() < deadline, "the broker connection never came back"
            await asyncio.sleep(0.5)
    try:
        assert await asyncio.wait_for(received.get(), timeout=30) == "after"
    finally:
        await broker.stop_consuming(grace_seconds=5)
        await broker.close()
