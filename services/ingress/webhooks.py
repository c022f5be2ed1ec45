"""The Gupshup webhook endpoint: authenticate, bound, validate, publish, then answer.

Validation is `shared.gupshup.attribution.attribute`, the same function the router applies to
what ingress publishes: ingress answers 400 or 403 from it before any 2xx, then publishes the
body exactly as received (`inbound.raw.v1`). A 2xx is sent only once the broker confirmed the
event, so an accepted webhook is never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid

from aiohttp import web

from services.ingress.metrics import WEBHOOK_DURATION, WEBHOOKS
from shared.batching import PublishBatcher
from shared.broker import Broker, PublishFailed
from shared.crypto import KeyRing
from shared.gupshup.attribution import MalformedPayload, WrongApp, attribute
from shared.health import add_health_routes
from shared.logs import get_logger
from shared.models import RawWebhook, utcnow
from shared.onboarding import CALLBACK_PATH
from shared.repositories.agents import Agent, AgentDirectory
from shared.settings import Settings

log = get_logger(__name__)
WEBHOOK_PATH = CALLBACK_PATH + "{agent_key}"  # the key is the last segment


def _answer(status: int, reason: str | None = None) -> web.Response:
    WEBHOOKS.labels(str(status)).inc()
    if reason is None:
        return web.Response(status=status)
    return web.json_response({"error": reason}, status=status)


def create_webhook_app(
    settings: Settings,
    broker: Broker,
    agents: AgentDirectory,
    key_ring: KeyRing,
    stopping: asyncio.Event | None = None,
) -> web.Application:
    """The public application: the webhook route plus health and metrics.

    Readiness turns 503 once `stopping` is set, while webhooks are still accepted.
    """

    async def readiness() -> dict[str, bool]:
        # Ingress keeps accepting known agents' webhooks while the store is down.
        return {"broker": broker.is_ready()}

    app = web.Application(client_max_size=settings.webhook_max_body_bytes)
    publisher = PublishBatcher(broker, max_events=settings.ingress_publish_batch)
    app.router.add_post(WEBHOOK_PATH, WebhookReceiver(publisher, agents, key_ring).receive)
    add_health_routes(app, readiness, stopping)
    return app


class WebhookReceiver:
    """Handles `POST /v1/webhooks/gupshup/{agent_key}`."""

    def __init__(
        self, publisher: PublishBatcher, agents: AgentDirectory, key_ring: KeyRing
    ) -> None:
        self._publisher = publisher
        self._agents = agents
        self._key_ring = key_ring

    def _signature_ok(self, agent: Agent, signature: str | None, raw: bytes) -> bool:
        """Check Meta's X-Hub-Signature-256 where the agent has an app secret.

        Gupshup's own (v2) callbacks are unsigned, so an absent header is accepted: the
        unguessable callback URL is the authentication; a present one must be right.
        """
        sealed = agent.credentials.get("app_secret")
        if signature is None or sealed is None:
            return True
        secret = self._key_ring.decrypt(sealed, agent_id=agent.id, field="app_secret")
        expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.strip().lower(), expected)

    async def receive(self, request: web.Request) -> web.Response:
        """Answer 2xx only after the broker confirmed the raw event."""
        started = time.perf_counter()
        try:
            return await self._receive(request)
        finally:
            WEBHOOK_DURATION.observe(time.perf_counter() - started)

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            agent = await self._agents.by_callback_key(request.match_info["agent_key"])
        except Exception as exc:
            log.warning("cannot look up the callback key: store unavailable", error=str(exc))
            return _answer(503, "temporarily unavailable")
        if agent is None:
            return _answer(404, "unknown callback")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("webhook body too large", agent_id=agent.id)
            return _answer(413, "body too large")
        if not self._signature_ok(agent, request.headers.get("X-Hub-Signature-256"), raw):
            log.warning("webhook signature does not match the app secret", agent_id=agent.id)
            return _answer(401, "bad signature")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("webhook body is not JSON", agent_id=agent.id, size=len(raw))
            return _answer(400, "body is not JSON")
        if not isinstance(body, dict):
            log.warning("webhook body is not a JSON object", agent_id=agent.id)
            return _answer(400, "body is not a JSON object")
        received_at = utcnow()
        event_id = uuid.uuid4().hex
        try:
            attribute(body, agent, event_id=event_id, received_at=received_at)
        except MalformedPayload as exc:
            log.warning("malformed webhook", agent_id=agent.id, reason=str(exc))
            return _answer(400, f"malformed payload: {exc}")
        except WrongApp as exc:
            log.warning("webhook for another app", agent_id=agent.id, reason=str(exc))
            return _answer(403, str(exc))
        event = RawWebhook(
            event_id=event_id,
            org_id=agent.org_id,
            agent_id=agent.id,
            received_at=received_at,
            body=body,
        )
        try:
            await self._publisher.publish(event, message_id=event_id)
        except PublishFailed as exc:
            log.warning("broker unavailable: asking Gupshup to retry", error=str(exc))
            return _answer(503, "temporarily unavailable")
        return _answer(200)
