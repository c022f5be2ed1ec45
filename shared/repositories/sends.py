"""Sends: one document per bubble handed to Gupshup, created as a claim before the call.

The claim's `_id` is the send id, so only one worker can call Gupshup for a bubble.

States: `sending` (claimed, request about to go or in flight) becomes `submitted`
(Gupshup's id recorded), `failed` (refused), `skipped` (a rule forbade it), or `unknown`:
the request may have reached Gupshup (it timed out after being written, Gupshup answered
500 or 504, or the process died mid-call). An unknown send is never retried blindly:
Gupshup posts a status callback for every message it accepted, so a status naming the
lead's number that arrives while a send to that lead is unknown resolves it as submitted
(`resolve_unknown`); only after `ambiguous_resolve_seconds` without one is it sent again,
under a resend claim that one worker alone can win (`claim_resend`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from functools import partial
from typing import Literal

from pydantic import ConfigDict
from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id
from shared.models import Bubble, utcnow
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, converge, with_retry

SendState = Literal["sending", "submitted", "failed", "unknown", "skipped"]
# A status this much older than a claim cannot be about it (Gupshup's clock may lag ours).
CLOCK_SKEW = timedelta(seconds=5)
# Later statuses win; a late "sent" never overwrites "read".
STATUS_RANK = {"enqueued": 1, "sent": 2, "delivered": 3, "read": 4, "failed": 5, "deleted": 5}


class SendClaim(StoredRecord):
    """One bubble's send as stored: whose it is, where it goes and how far it got."""

    model_config = ConfigDict(frozen=True)

    org_id: str
    agent_id: str
    thread_id: str
    command_id: str
    destination: str  # the lead (or, for a notification, the agent), E.164
    state: SendState
    claimed_at: datetime
    gupshup_message_id: str | None = None
    unknown_since: datetime | None = None
    # The reply's fallback template, kept for a window-closed failure reported later.
    fallback: tuple[Bubble, ...] = ()


def _claim_of(doc: Document | None) -> SendClaim | None:
    return None if doc is None else SendClaim.model_validate(doc)


class SendRepository:
    """Claim, complete and look up sends."""

    def __init__(self, store: Store) -> None:
        self._sends = store.db["sends"]
        self._statuses = store.db["delivery_statuses"]
        self._resends = store.db["send_resends"]

    async def claim(self, send_id: str, fields: Document) -> SendClaim | None:
        """Claim a send; None when we won, else the existing claim."""
        doc: Document = {
            "_id": send_id,
            "state": "sending",
            "gupshup_message_id": None,
            "whatsapp_message_id": None,
            "status": None,
            "attempts": 1,
            "claimed_at": utcnow(),
            **fields,
        }
        try:
            await with_retry(lambda: self._sends.insert_one(doc))
        except DuplicateKeyError:
            existing = await with_retry(lambda: self._sends.find_one({"_id": send_id}))
            if existing is None:
                raise
            return SendClaim.model_validate(existing)
        return None

    async def delivery_of(self, org_id: str, send_ids: list[str]) -> dict[str, Document]:
        """How far each send got: its state, delivery status and any error."""
        if not send_ids:
            return {}
        cursor = self._sends.find(
            {"_id": {"$in": send_ids}, "org_id": org_id},
            {"state": 1, "status": 1, "error": 1, "error_code": 1, "reason": 1},
        )
        return {doc.pop("_id"): doc async for doc in cursor}

    async def get(self, send_id: str) -> SendClaim | None:
        """A send's claim, if any."""
        return _claim_of(await with_retry(lambda: self._sends.find_one({"_id": send_id})))

    async def release(self, send_id: str) -> None:
        """Drop our claim: the request surely did not reach Gupshup, a retry may claim again."""
        await with_retry(lambda: self._sends.delete_one({"_id": send_id, "state": "sending"}))

    async def finish(self, send_id: str, state: SendState, **fields: object) -> None:
        """Record the outcome of our call to Gupshup."""
        await with_retry(
            lambda: self._sends.update_one(
                {"_id": send_id}, {"$set": {"state": state, "finished_at": utcnow(), **fields}}
            )
        )

    async def mark_unknown(self, send_id: str, since: datetime, error: str) -> None:
        """The send may or may not have reached Gupshup; evidence is awaited from `since`."""
        await with_retry(
            lambda: self._sends.update_one(
                {"_id": send_id, "state": "sending"},
                {
                    "$set": {
                        "state": "unknown",
                        "unknown_since": since,
                        "error": error,
                        "finished_at": utcnow(),
                    }
                },
            )
        )

    async def claim_resend(self, send: SendClaim) -> bool:
        """Take the right to send an unknown send again; False if another worker has it.

        The resend claim is keyed by the ambiguity it resolves, so a later ambiguity of the
        same send (the resend timing out too) can be resolved again.
        """
        assert send.unknown_since is not None, "only an unknown send is sent again"
        claim = {"_id": f"{send.id}@{send.unknown_since.isoformat()}", "claimed_at": utcnow()}
        try:
            await with_retry(lambda: self._resends.insert_one(claim))
        except DuplicateKeyError:
            return False
        result = await with_retry(
            lambda: self._sends.update_one(
                {"_id": send.id, "state": "unknown", "gupshup_message_id": None},
                {
                    "$set": {"state": "sending", "claimed_at": utcnow(), "resent": True},
                    "$inc": {"attempts": 1},
                },
            )
        )
        return result.modified_count == 1

    async def resolve_unknown(
        self,
        org_id: str,
        agent_id: str,
        destinations: list[str],
        gupshup_id: str,
        at: datetime,
        interrupted_before: datetime,
    ) -> SendClaim | None:
        """Attach a status for an unknown Gupshup id to the unknown send to that lead (named
        by any of its addresses: number or BSUID), if any.

        Unknown means marked so, or still `sending` though claimed before
        `interrupted_before` (its process died mid-call). An agent's sends to one lead go
        out one at a time, in order, and a later one waits for an unknown one to be
        resolved, so at most one send can be waiting for this.
        """
        unresolved: list[Document] = [
            {"state": "unknown"},
            {"state": "sending", "claimed_at": {"$lt": interrupted_before}},
        ]
        query: Document = {
            "org_id": org_id,
            "agent_id": agent_id,
            "destination": {"$in": destinations},
            "gupshup_message_id": None,
            "claimed_at": {"$lte": at + CLOCK_SKEW},
            "$or": unresolved,
        }
        candidate = await with_retry(lambda: self._sends.find_one(query, sort=[("claimed_at", 1)]))
        if candidate is None:
            return None
        result = await with_retry(
            lambda: self._sends.update_one(
                {"_id": candidate["_id"], "gupshup_message_id": None, "$or": unresolved},
                {
                    "$set": {
                        "state": "submitted",
                        "gupshup_message_id": gupshup_id,
                        "resolved_by": "status",
                    }
                },
            )
        )
        if result.modified_count != 1:
            return None
        return await self.get(candidate["_id"])

    async def in_flight(
        self, org_id: str, agent_id: str, destinations: list[str], younger_than: float
    ) -> bool:
        """Whether a request to this lead may still be waiting for Gupshup's answer."""
        found = await with_retry(
            lambda: self._sends.find_one(
                {
                    "org_id": org_id,
                    "agent_id": agent_id,
                    "destination": {"$in": destinations},
                    "state": "sending",
                    "claimed_at": {"$gte": utcnow() - timedelta(seconds=younger_than)},
                },
                {"_id": 1},
            )
        )
        return found is not None

    async def find_by_provider_id(
        self, org_id: str, gupshup_id: str | None, whatsapp_id: str | None
    ) -> SendClaim | None:
        """The send a delivery status is about."""
        queries: list[Document] = [
            {field: value, "org_id": org_id}
            for field, value in (
                ("gupshup_message_id", gupshup_id),
                ("whatsapp_message_id", whatsapp_id),
            )
            if value
        ]
        for query in queries:
            found = await with_retry(partial(self._sends.find_one, query))
            if found is not None:
                return SendClaim.model_validate(found)
        return None

    async def record_status(
        self, send: SendClaim, status: str, at: datetime, fields: Document
    ) -> None:
        """Record a delivery status; the send's current status is the furthest one seen.

        Statuses arrive concurrently and out of order, so each is its own document and the
        send's `status` is a summary of them, kept right by `converge`.
        """
        entry: Document = {
            "_id": derived_id("dst", send.id, status),
            "send_id": send.id,
            "org_id": send.org_id,
            "status": status,
            "rank": STATUS_RANK.get(status, 0),
            "at": at,
            **fields,
        }
        with contextlib.suppress(DuplicateKeyError):  # a redelivered status
            await with_retry(lambda: self._statuses.insert_one(entry))
        if fields.get("whatsapp_message_id"):
            await with_retry(
                lambda: self._sends.update_one(
                    {"_id": send.id},
                    {"$set": {"whatsapp_message_id": fields["whatsapp_message_id"]}},
                )
            )

        async def furthest() -> str | None:
            latest = await self._statuses.find_one(
                {"send_id": send.id}, sort=[("rank", -1), ("at", -1)]
            )
            return None if latest is None else str(latest["status"])

        async def current() -> str | None:
            doc = await self._sends.find_one({"_id": send.id}, {"status": 1})
            return None if doc is None else doc.get("status")

        async def write(value: str | None) -> None:
            await with_retry(
                lambda: self._sends.update_one({"_id": send.id}, {"$set": {"status": value}})
            )

        await converge(furthest, current, write)
