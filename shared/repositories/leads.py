"""The global lead registry: one lead per E.164 number across the whole platform."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from shared.ids import new_id
from shared.metrics import LEADS
from shared.store import Document, Store, with_retry


class LeadRepository:
    """Find-or-create leads by phone, safe when many replicas see a new number at once."""

    def __init__(self, store: Store) -> None:
        self._leads = store.db["leads"]

    async def view_for_org(self, org_id: str, lead_id: str) -> Document | None:
        """The lead as one organization may see it: names and first touch from it only."""
        lead = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        if lead is None:
            return None
        first_touch = lead.get("first_touch") or {}
        return {
            "lead_id": lead["_id"],
            "phone": lead["phone"],
            "names": [n["name"] for n in lead.get("names", []) if n.get("org_id") == org_id],
            "first_touch": first_touch if first_touch.get("org_id") == org_id else None,
        }

    async def get_or_create(
        self,
        phone: str,
        *,
        name: str | None,
        org_id: str,
        agent_id: str,
        at: datetime,
        source: dict[str, Any],
    ) -> Document:
        """The lead with this phone; created (with its first touch) if it did not exist."""
        lead, _created = await self.resolve(
            phone, name=name, org_id=org_id, agent_id=agent_id, at=at, source=source
        )
        return lead

    async def resolve(
        self,
        phone: str,
        *,
        name: str | None,
        org_id: str,
        agent_id: str,
        at: datetime,
        source: dict[str, Any],
    ) -> tuple[Document, bool]:
        """The lead with this phone and whether this call created it (names seen are added)."""
        existing = await with_retry(lambda: self._leads.find_one({"phone": phone}))
        if existing is None:
            lead: Document = {
                "_id": new_id("lead"),
                "phone": phone,
                "names": [{"name": name, "org_id": org_id, "at": at}] if name else [],
                "first_touch": {"org_id": org_id, "agent_id": agent_id, "at": at, **source},
                "created_at": at,
            }
            try:
                await with_retry(lambda: self._leads.insert_one(lead))
                LEADS.labels("created").inc()
                return lead, True
            except DuplicateKeyError:  # another replica created it first: use theirs
                existing = await with_retry(lambda: self._leads.find_one({"phone": phone}))
                if existing is None:
                    raise
        if name and not any(
            n.get("name") == name and n.get("org_id") == org_id for n in existing.get("names", [])
        ):
            entry = {"name": name, "org_id": org_id, "at": at}
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": existing["_id"]}, {"$push": {"names": entry}}
                )
            )
        return existing, False

    async def id_by_phone(self, phone: str) -> str | None:
        """The id of the lead with this E.164 number, if any (none is created)."""
        found = await with_retry(lambda: self._leads.find_one({"phone": phone}, {"_id": 1}))
        return None if found is None else str(found["_id"])
