"""Router: turns raw Gupshup callbacks into typed events of a known organization and agent.

The body is parsed and its app checked by `shared.gupshup.attribution.attribute`, the very
check ingress answered 400 or 403 from before publishing it; what is left to the router is
what ingress cannot know: that the agent still exists in that organization now, and which
stage each event goes to. Anything unattributable is dead-lettered, counted by reason.
"""

from __future__ import annotations

from services.router.metrics import EVENTS_ROUTED, UNATTRIBUTED
from shared.broker import Broker
from shared.errors import PermanentError, UnknownAgent
from shared.gupshup.attribution import MalformedPayload, WrongApp, attribute
from shared.logs import get_logger
from shared.models import IgnoredEvent, RawWebhook
from shared.repositories.agents import AgentDirectory

log = get_logger(__name__)


class Router:
    """Attribute and fan out one raw webhook."""

    def __init__(self, broker: Broker, agents: AgentDirectory) -> None:
        self._broker = broker
        self._agents = agents

    async def handle(self, raw: RawWebhook) -> None:
        """Publish every event the callback carries; unattributable ones are dead-lettered."""
        agent = await self._agents.by_id(raw.agent_id)
        if agent is None or agent.org_id != raw.org_id:
            UNATTRIBUTED.labels("unknown_agent").inc()
            raise UnknownAgent(f"no agent {raw.agent_id} in organization {raw.org_id}")
        try:
            events = attribute(raw.body, agent, event_id=raw.event_id, received_at=raw.received_at)
        except MalformedPayload as exc:
            UNATTRIBUTED.labels("malformed").inc()
            raise PermanentError(f"malformed payload: {exc}") from exc
        except WrongApp as exc:
            UNATTRIBUTED.labels("app_mismatch").inc()
            raise UnknownAgent(f"{exc}: the callback is not agent {agent.id}'s app") from exc
        for event in events:
            EVENTS_ROUTED.labels(event.kind).inc()
            if isinstance(event, IgnoredEvent):
                log.info("event accepted, nothing to do", type=event.type, agent_id=agent.id)
                continue
            await self._broker.publish(event, message_id=event.event_id)
