"""Merging two leads found to be one person (a number appears for a lead known by BSUID).

Which lead survives follows from the stored leads alone (the one holding the phone number,
else the older one), so two replicas merging the same pair at once agree. The lead that
gives way is marked first (`merged_into`) and kept as a pointer, then everything that named
it is moved, each step an idempotent update, and `merge_complete` is set last: whoever
next finds the pointer of an unfinished merge (a replica that died half way) finishes it.
Consent merges towards opting out: an opt-out on either side stays an opt-out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from shared.logs import get_logger
from shared.metrics import LEAD_MERGES
from shared.models import utcnow
from shared.repositories.audit import AuditLog
from shared.repositories.consents import ConsentRepository
from shared.store import Document, Store, with_retry

log = get_logger(__name__)

# Documents that name a lead by `lead_id` and simply follow it to the survivor.
FOLLOWERS = (
    "messages",
    "replies",
    "consent_events",
    "appointments",
    "scheduled_messages",
    "conversions",
    "lead_imports",
    "template_usage",
)

_LATEST = datetime.max.replace(tzinfo=None)


def survivor_of(a: Document, b: Document) -> tuple[Document, Document]:
    """(survivor, absorbed): the lead with the number, else the older, else the smaller id."""
    if bool(a.get("phone")) != bool(b.get("phone")):
        return (a, b) if a.get("phone") else (b, a)

    def age(doc: Document) -> tuple[Any, str]:
        created = doc.get("created_at")
        return (created.replace(tzinfo=None) if created else _LATEST, str(doc["_id"]))

    return (a, b) if age(a) <= age(b) else (b, a)


class LeadMerges:
    """Merge leads and finish merges a crash interrupted."""

    def __init__(self, store: Store) -> None:
        self._db = store.db
        self._leads = store.db["leads"]
        self._threads = store.db["threads"]
        self._consents = ConsentRepository(store)
        self._audit = AuditLog(store)

    async def merge(self, first: str, second: str) -> str:
        """Make the two leads one and answer the survivor's id (idempotent)."""
        a = await self._latest(first)
        b = await self._latest(second)
        if a["_id"] == b["_id"]:
            return str(a["_id"])
        survivor, absorbed = survivor_of(a, b)
        survivor_id, absorbed_id = str(survivor["_id"]), str(absorbed["_id"])
        await with_retry(
            lambda: self._leads.update_one(
                {"_id": absorbed_id, "merged_into": None},
                {"$set": {"merged_into": survivor_id, "merged_at": utcnow()}},
            )
        )
        marked = await with_retry(lambda: self._leads.find_one({"_id": absorbed_id}))
        target = str((marked or {}).get("merged_into") or survivor_id)
        if target != survivor_id:  # another replica merged it elsewhere first: join that
            return await self.merge(survivor_id, target)
        await self.complete(absorbed_id, survivor_id)
        return survivor_id

    async def complete(self, absorbed_id: str, survivor_id: str) -> None:
        """Move everything of `absorbed_id` to `survivor_id`; safe to run again and at once."""
        absorbed = await with_retry(lambda: self._leads.find_one({"_id": absorbed_id}))
        if absorbed is None or absorbed.get("merge_complete"):
            return
        # Threads and what names the lead move first, the claims and the identifiers last:
        # until then a lookup by the absorbed lead's user ID still meets the unfinished
        # pointer (and finishes the merge itself) instead of trusting a survivor that already
        # holds the ID while the agent's thread still names the absorbed lead.
        orgs = await self._move_threads(absorbed_id, survivor_id)
        opted_out = {
            org: await self._opted_out_either(org, absorbed_id, survivor_id) for org in orgs
        }
        for name in FOLLOWERS:
            await with_retry(
                partial(
                    self._db[name].update_many,
                    {"lead_id": absorbed_id},
                    {"$set": {"lead_id": survivor_id}},
                )
            )
        await with_retry(lambda: self._db["consents"].delete_many({"lead_id": absorbed_id}))
        for org_id, at in opted_out.items():
            if at is not None:
                await self._keep_opt_out(org_id, survivor_id, at)
        await with_retry(
            lambda: self._db["lead_keys"].update_many(
                {"lead_id": absorbed_id}, {"$set": {"lead_id": survivor_id}}
            )
        )
        await self._copy_identity(absorbed, survivor_id)
        first = await with_retry(
            lambda: self._leads.update_one(
                {"_id": absorbed_id, "merge_complete": None},
                {"$set": {"merge_complete": True}},
            )
        )
        if first.modified_count:  # one audit entry and one count, however many finished it
            LEAD_MERGES.inc()
            for org_id in sorted(orgs):
                await self._audit.record(
                    org_id=org_id,
                    actor="platform",
                    action="lead.merge",
                    target=survivor_id,
                    before={"lead_id": absorbed_id},
                    after={"lead_id": survivor_id},
                )
        log.info("leads merged", lead_id=survivor_id, merged_lead_id=absorbed_id)

    async def _latest(self, lead_id: str) -> Document:
        """The lead, or the one it was merged into."""
        for _ in range(8):
            doc = await with_retry(partial(self._leads.find_one, {"_id": lead_id}))
            if doc is None:
                raise LookupError(f"lead {lead_id} does not exist")
            if not doc.get("merged_into"):
                return doc
            lead_id = str(doc["merged_into"])
        raise RuntimeError(f"lead {lead_id}: too many merge pointers")

    async def _copy_identity(self, absorbed: Document, survivor_id: str) -> None:
        """The survivor gains the absorbed lead's names and identifiers, and the earlier
        first touch (each a conditional or set-like update, safe to repeat)."""
        additions = {
            field: {"$each": list(absorbed.get(field) or [])}
            for field in ("names", "user_ids", "usernames", "parent_seen_by")
            if absorbed.get(field)
        }
        if additions:
            await with_retry(
                lambda: self._leads.update_one({"_id": survivor_id}, {"$addToSet": additions})
            )
        if absorbed.get("parent_user_id"):
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": survivor_id, "parent_user_id": None},
                    {"$set": {"parent_user_id": absorbed["parent_user_id"]}},
                )
            )
        # Each organization keeps the first touch that came through it (never another's).
        touches = [
            t for t in (absorbed.get("first_touch"), *absorbed.get("first_touches", [])) if t
        ]
        if touches:
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": survivor_id}, {"$addToSet": {"first_touches": {"$each": touches}}}
                )
            )
        touch = absorbed.get("first_touch") or {}
        if touch.get("at") is not None:
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": survivor_id, "first_touch.at": {"$gt": touch["at"]}},
                    {"$set": {"first_touch": touch}},
                )
            )
        if absorbed.get("created_at") is not None:
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": survivor_id, "created_at": {"$gt": absorbed["created_at"]}},
                    {"$set": {"created_at": absorbed["created_at"]}},
                )
            )

    async def _move_threads(self, absorbed_id: str, survivor_id: str) -> set[str]:
        """Re-point the absorbed lead's threads (a second thread with the same agent stays
        as it is, pointing at the survivor's). Answers the organizations whose threads
        changed."""
        orgs: set[str] = set()
        cursor = self._threads.find({"lead_id": absorbed_id})
        threads = await with_retry(lambda: cursor.to_list(None))
        for thread in threads:
            orgs.add(str(thread["org_id"]))
            same_agent = await with_retry(
                partial(
                    self._threads.find_one, {"agent_id": thread["agent_id"], "lead_id": survivor_id}
                )
            )
            if same_agent is None:
                await with_retry(
                    partial(
                        self._threads.update_one,
                        {"_id": thread["_id"]},
                        {"$set": {"lead_id": survivor_id}},
                    )
                )
                continue
            # The agent already has a thread with the survivor (two replicas raced): the
            # absorbed one stays open with its messages and pending work, so nothing waiting in
            # it goes unanswered; it only points at the thread that goes on.
            await with_retry(
                partial(
                    self._threads.update_one,
                    {"_id": thread["_id"]},
                    {"$set": {"merged_into": same_agent["_id"]}},
                )
            )
        return orgs

    async def _opted_out_either(
        self, org_id: str, absorbed_id: str, survivor_id: str
    ) -> datetime | None:
        """When the later of the two leads' decisions was made, if either is an opt-out."""
        latest: list[datetime] = []
        opted_out = False
        for lead_id in (absorbed_id, survivor_id):
            decision = await self._consents.latest(org_id, lead_id)
            if decision is not None:
                latest.append(decision["at"])
                opted_out = opted_out or bool(decision["opted_out"])
        return max(latest) if opted_out and latest else None

    async def _keep_opt_out(self, org_id: str, lead_id: str, after: datetime) -> None:
        """An opt-out on either side stays one: recorded after both sides' decisions."""
        if await self._consents.opted_out(org_id, lead_id):
            return
        await self._consents.record(
            org_id=org_id,
            lead_id=lead_id,
            agent_id="platform",
            opted_out=True,
            how="lead-merge",
            at=after + timedelta(milliseconds=1),
        )
