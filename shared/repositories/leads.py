"""The global lead registry: one lead per E.164 number across the whole platform.

Every read answers a typed `LeadRecord`; what one organization may see of a lead (only the
names it saw, its own first touch) is a `LeadView`, never the whole record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.ids import new_id
from shared.metrics import LEADS
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, insert_if_absent, with_retry


class LeadName(BaseModel):
    """A name the lead used with one organization, and when it was first seen."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    org_id: str | None = None
    at: datetime | None = None


class LeadRecord(StoredRecord):
    """A lead as stored: their number, the names each organization saw (oldest first) and
    how they first came to the platform."""

    model_config = ConfigDict(frozen=True)

    phone: str
    names: tuple[LeadName, ...] = ()
    first_touch: dict[str, Any] | None = None  # org_id, agent_id, at, source ...
    created_at: datetime | None = None

    def names_in(self, org_id: str) -> list[str]:
        """The names this organization saw, oldest first (never a name another one saw)."""
        return [n.name for n in self.names if n.org_id == org_id]

    def view_for(self, org_id: str) -> LeadView:
        """What this organization may see of the lead: its names and its own first touch."""
        first_touch = self.first_touch or {}
        return LeadView(
            lead_id=self.id,
            phone=self.phone,
            names=tuple(self.names_in(org_id)),
            first_touch=first_touch if first_touch.get("org_id") == org_id else None,
        )


@dataclass(frozen=True)
class LeadView:
    """A lead as one organization sees it (the admin API's lead)."""

    lead_id: str
    phone: str
    names: tuple[str, ...]  # the names this organization saw, oldest first
    first_touch: dict[str, Any] | None  # None when the lead came through another organization

    def as_json(self) -> dict[str, Any]:
        """The view as the admin API shows it."""
        return {
            "lead_id": self.lead_id,
            "phone": self.phone,
            "names": list(self.names),
            "first_touch": self.first_touch,
        }


class LeadRepository:
    """Find-or-create leads by phone, safe when many replicas see a new number at once."""

    def __init__(self, store: Store) -> None:
        self._leads = store.db["leads"]

    async def view_for_org(self, org_id: str, lead_id: str) -> LeadView | None:
        """The lead as one organization may see it: names and first touch from it only."""
        lead = await self.get(lead_id)
        return None if lead is None else lead.view_for(org_id)

    async def resolve(
        self,
        phone: str,
        *,
        name: str | None,
        org_id: str,
        agent_id: str,
        at: datetime,
        source: dict[str, Any],
    ) -> tuple[LeadRecord, bool]:
        """The lead with this phone and whether this call created it (with its first touch);
        a name not seen before from this organization is added."""
        existing = await with_retry(lambda: self._leads.find_one({"phone": phone}))
        if existing is None:
            lead: Document = {
                "_id": new_id("lead"),
                "phone": phone,
                "names": [{"name": name, "org_id": org_id, "at": at}] if name else [],
                "first_touch": {"org_id": org_id, "agent_id": agent_id, "at": at, **source},
                "created_at": at,
            }
            existing = await insert_if_absent(self._leads, lead, {"phone": phone})
            if existing is None:
                LEADS.labels("created").inc()
                return LeadRecord.model_validate(lead), True
        record = LeadRecord.model_validate(existing)
        if name and not any(n.name == name and n.org_id == org_id for n in record.names):
            entry = {"name": name, "org_id": org_id, "at": at}
            await with_retry(
                lambda: self._leads.update_one({"_id": record.id}, {"$push": {"names": entry}})
            )
            record = record.model_copy(
                update={"names": (*record.names, LeadName(name=name, org_id=org_id, at=at))}
            )
        return record, False

    async def get(self, lead_id: str) -> LeadRecord | None:
        """The lead with this id, with every name organizations saw (filter with `names_in`)."""
        doc = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        return None if doc is None else LeadRecord.model_validate(doc)

    async def id_by_phone(self, phone: str) -> str | None:
        """The id of the lead with this E.164 number, if any (none is created)."""
        found = await with_retry(lambda: self._leads.find_one({"phone": phone}, {"_id": 1}))
        return None if found is None else str(found["_id"])
