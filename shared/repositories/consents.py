"""Consent per lead and organization: an opt-out through any agent stops the whole agency.

Every decision is kept as its own document (`consent_events`); the latest by time wins,
whatever order the callbacks arrived in. `consents` holds one summary per (lead,
organization) for operators, kept in line by `converge`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id
from shared.store import Document, Store, converge, with_retry


class ConsentRepository:
    """Record and read opt-ins and opt-outs."""

    def __init__(self, store: Store) -> None:
        self._consents = store.db["consents"]
        self._events = store.db["consent_events"]

    async def record(
        self,
        *,
        org_id: str,
        lead_id: str,
        agent_id: str,
        opted_out: bool,
        how: str,
        at: datetime,
    ) -> None:
        """Record a consent decision of a lead towards an organization."""
        event: Document = {
            "_id": derived_id("cev", org_id, lead_id, at.isoformat(), str(opted_out)),
            "org_id": org_id,
            "lead_id": lead_id,
            "agent_id": agent_id,
            "opted_out": opted_out,
            "how": how,
            "at": at,
        }
        with contextlib.suppress(DuplicateKeyError):  # the same callback delivered again
            await with_retry(lambda: self._events.insert_one(event))
        consent_id = derived_id("cns", org_id, lead_id)

        async def latest() -> Document | None:
            return await self._latest(org_id, lead_id)

        async def summary() -> Document | None:
            doc = await self._consents.find_one({"_id": consent_id, "org_id": org_id})
            return None if doc is None else doc.get("decision")

        async def write(decision: Document | None) -> None:
            if decision is None:
                return
            await with_retry(
                lambda: self._consents.replace_one(
                    {"_id": consent_id, "org_id": org_id},
                    {
                        "_id": consent_id,
                        "org_id": org_id,
                        "lead_id": lead_id,
                        "opted_out": decision["opted_out"],
                        "agent_id": decision["agent_id"],
                        "how": decision["how"],
                        "at": decision["at"],
                        "decision": decision,
                    },
                    upsert=True,
                )
            )

        await converge(latest, summary, write)

    async def _latest(self, org_id: str, lead_id: str) -> Document | None:
        return await with_retry(
            lambda: self._events.find_one(
                {"org_id": org_id, "lead_id": lead_id},
                sort=[("at", DESCENDING)],
                projection={"_id": 1, "opted_out": 1, "agent_id": 1, "how": 1, "at": 1},
            )
        )

    async def latest(self, org_id: str, lead_id: str) -> Document | None:
        """The lead's latest decision towards this organization (opted_out, how, at), if any."""
        return await self._latest(org_id, lead_id)

    async def opted_out(self, org_id: str, lead_id: str) -> bool:
        """True when the lead's latest decision towards this organization is an opt-out."""
        latest = await self._latest(org_id, lead_id)
        return bool(latest and latest["opted_out"])
