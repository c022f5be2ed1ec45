"""Cross-agent intelligence: what an agent may know of the same lead's other threads.

Only threads of the same organization, and only as much as the organization allows
(`cross_agent_visibility`): never message content, never anything of another organization.
"""

from __future__ import annotations

from typing import Any

from shared.repositories.agents import AgentRepository
from shared.repositories.conversions import ConversionRepository
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.threads import Thread, ThreadRepository
from shared.store import Store


class ColleagueThreads:
    """The metadata of a lead's threads with other agents of the same organization."""

    def __init__(self, store: Store) -> None:
        self._orgs = OrganizationRepository(store)
        self._threads = ThreadRepository(store)
        self._agents = AgentRepository(store)
        self._conversions = ConversionRepository(store)

    async def of(self, thread: Thread) -> list[dict[str, Any]]:
        """The other threads of this thread's lead, as far as the organization shares them."""
        org = await self._orgs.get(thread.org_id)
        visibility = org.settings.cross_agent_visibility if org else "metadata"
        if visibility == "none":
            return []
        others = await self._threads.siblings(thread.org_id, thread.lead_id, thread.id)
        if not others:
            return []
        booked = await self._conversions.booked_threads(thread.org_id, [t.id for t in others])
        shared: list[dict[str, Any]] = []
        for other in others:
            agent = await self._agents.get_in_org(thread.org_id, other.agent_id)
            contacts = [t for t in (other.last_inbound_at, other.last_outbound_at) if t is not None]
            item: dict[str, Any] = {
                "agent_id": other.agent_id,
                "agent_name": agent.name if agent else None,
                "stage": other.stage,
                "state": other.state,
                "last_contact_at": max(contacts) if contacts else None,
                "appointment_booked": other.id in booked,
            }
            if visibility == "summary":
                item["summary"] = other.summary
            shared.append(item)
        return shared
