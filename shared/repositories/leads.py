"""The global lead registry: one lead per E.164 number across the whole platform."""

from __future__ import annotations

from dataclasses import dataclass
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

    async def get(self, lead_id: str) -> LeadRecord | None:
        """The lead with this id, with every name organizations saw (filter with `names_in`)."""
        doc = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        return None if doc is None else LeadRecord.from_document(doc)

    async def id_by_phone(self, phone: str) -> str | None:
        """The id of the lead with this E.164 number, if any (none is created)."""
        found = await with_retry(lambda: self._leads.find_one({"phone": phone}, {"_id": 1}))
        return None if found is None else str(found["_id"])


@dataclass(frozen=True)
class LeadRecord:
    """A lead: their number and the names each organization saw them use, oldest first."""

    id: str
    phone: str
    names: tuple[tuple[str, str | None], ...]  # (name, org_id)

    @classmethod
    def from_document(cls, doc: Document) -> LeadRecord:
        """The record of a stored lead."""
        names = tuple((n["name"], n.get("org_id")) for n in doc.get("names", []))
        return cls(id=doc["_id"], phone=doc["phone"], names=names)

    def names_in(self, org_id: str) -> list[str]:
        """The names this organization saw, oldest first (never a name another one saw)."""
        return [name for name, seen_by in self.names if seen_by == org_id]
