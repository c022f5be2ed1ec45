"""Consent per lead and organization: an opt-out through any agent stops the whole agency."""

from __future__ import annotations

from datetime import datetime

from shared.ids import derived_id
from shared.store import Store, with_retry


class ConsentRepository:
    """Record and read opt-ins and opt-outs."""

    def __init__(self, store: Store) -> None:
        self._consents = store.db["consents"]

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
        """Record the latest consent decision of a lead towards an organization."""
        consent_id = derived_id("cns", org_id, lead_id)
        await with_retry(
            lambda: self._consents.replace_one(
                {"_id": consent_id, "org_id": org_id},
                {
                    "_id": consent_id,
                    "org_id": org_id,
                    "lead_id": lead_id,
                    "agent_id": agent_id,
                    "opted_out": opted_out,
                    "how": how,
                    "at": at,
                },
                upsert=True,
            )
        )

    async def opted_out(self, org_id: str, lead_id: str) -> bool:
        """True when the lead opted out of this organization."""
        doc = await with_retry(
            lambda: self._consents.find_one(
                {"_id": derived_id("cns", org_id, lead_id), "org_id": org_id}
            )
        )
        return bool(doc and doc["opted_out"])
