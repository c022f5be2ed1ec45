"""With RabbitMQ down, ingress answers 503 (Gupshup retries); once it is back, it accepts.

The test runs its own RabbitMQ node, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cli.local_stack import StackProcesses, port_open, stack_env
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.repositories.agents import AgentRepository
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.settings import Settings
from shared.store import Store
from tests.conftest import make_settings
from tests.e2e.conftest import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class PrivateRabbitMQ:
    """A RabbitMQ node of this test's own, in a temporary directory."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        name = f"outage{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "HOME": str(base),
            "RABBITMQ_NODENAME": f"{name}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        }
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text("loopback_users = none\nlog.console = false\n")
        (base / "enabled_plugins").write_text("[].\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's AMQP URL."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Start the node and wait until it serves AMQP."""
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while not port_open(self.port):
            assert time.monotonic() < deadline, "private RabbitMQ did not start"
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Stop the node and wait until its port is closed."""
        if self.process is None:
            return
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "stop"],
            env=self.env,
            check=False,
            capture_output=True,
        )
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        while port_open(self.port):
            await asyncio.sleep(0.1)


@pytest.fixture
async def rabbitmq(tmp_path: Path) -> AsyncIterator[PrivateRabbitMQ]:
    """A private RabbitMQ node (not started yet), stopped at the end."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.fail("rabbitmq-server is not installed (make test installs it)")
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
