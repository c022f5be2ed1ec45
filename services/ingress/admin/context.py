"""What the admin endpoints share: repositories, the broker and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from services.ingress.admin.framework import Call, not_found
from shared.broker import Broker, PublishFailed
from shared.crypto import KeyRing
from shared.gupshup.partner import PartnerClient, register_callback
from shared.ids import new_id
from shared.logs import get_logger
from shared.models import AgentChanged
from shared.repositories.agents import Agent, AgentRepository
from shared.repositories.api_keys import ApiKeyRepository
from shared.repositories.audit import AuditLog
from shared.repositories.organizations import OrganizationRepository
from shared.settings import Settings
from shared.store import Document, Store

log = get_logger(__name__)


@dataclass
class AdminContext:
    """Dependencies of the admin endpoints."""

    settings: Settings
    store: Store
    broker: Broker
    key_ring: KeyRing

    partner: PartnerClient | None = None

    def __post_init__(self) -> None:
        self.orgs = OrganizationRepository(self.store)
        self.agents = AgentRepository(self.store, self.key_ring)
        self.keys = ApiKeyRepository(self.store)
        self.audit = AuditLog(self.store)

    async def agent_of(self, call: Call) -> Agent:
        """The agent named by the path, if it belongs to the caller's organization."""
        agent = await self.agents.get_in_org(call.org_id, call.param("agent_id"))
        if agent is None:
            raise not_found("agent")
        return agent

    async def audited(
        self,
        call: Call,
        action: str,
        target: str,
        *,
        before: Document | None = None,
        after: Document | None = None,
    ) -> None:
        """Record a write made through the API in the organization's audit log."""
        org_id = call.key.org_id if call.key else None
        await self.audit.record(
            org_id=org_id,
            actor=call.actor,
            action=action,
            target=target,
            before=before,
            after=after,
        )

    def callback_url(self, callback_key: str) -> str:
        """The URL Gupshup posts an agent's events to."""
        base = str(self.settings.public_base_url).rstrip("/")
        return f"{base}/v1/webhooks/gupshup/{callback_key}"

    async def subscribe_callbacks(self, app_id: str | None, callback_key: str) -> str:
        """Point the agent's Gupshup app at its callback URL; says how that went."""
        outcome = await register_callback(self.partner, app_id, self.callback_url(callback_key))
        if outcome.startswith("failed"):
            log.warning("callback subscription failed", app_id=app_id, error=outcome)
        return outcome

    async def agent_changed(self, org_id: str, agent_id: str) -> None:
        """Tell every replica to drop its cached view of the agent (best effort)."""
        change = AgentChanged(event_id=new_id("chg"), org_id=org_id, agent_id=agent_id)
        try:
            await self.broker.broadcast_config_change(change)
        except PublishFailed as exc:
            log.warning(
                "configuration change not broadcast; caches expire on their own",
                agent_id=agent_id,
                error=str(exc),
            )
