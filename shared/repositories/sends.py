"""Sends: one document per bubble handed to Gupshup, created as a claim before the call.

The claim's `_id` is the send id, so only one worker can call Gupshup for a bubble. A claim
still in state `sending` after a crash is an ambiguous send: it is not retried blindly.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from functools import partial
from typing import Literal

from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id
from shared.models import utcnow
from shared.store import Document, Store, with_retry

SendState = Literal["sending", "submitted", "failed", "unknown"]
# Later statuses win; a late "sent" never overwrites "read".
STATUS_RANK = {"enqueued": 1, "sent": 2, "delivered": 3, "read": 4, "failed": 5, "deleted": 5}


class SendRepository:
    """Claim, complete and look up sends."""

    def __init__(self, store: Store) -> None:
        self._sends = store.db["sends"]
        self._statuses = store.db["delivery_statuses"]

    async def claim(self, send_id: str, fields: Document) -> Document | None:
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
            return existing
        return None

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

    async def find_by_provider_id(
        self, org_id: str, gupshup_id: str | None, whatsapp_id: str | None
    ) -> Document | None:
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
                return found
        return None

    async def record_status(
        self, send: Document, status: str, at: datetime, fields: Document
    ) -> None:
        """Record a delivery status; the send's current status is the furthest one seen.

        Statuses arrive concurrently and out of order, and the local store does not make
        updates atomic, so each status is its own document and the send's `status` is
        recomputed from all of them rather than pushed onto an array.
        """
        entry: Document = {
            "_id": derived_id("dst", send["_id"], status),
            "send_id": send["_id"],
            "org_id": send["org_id"],
            "status": status,
            "at": at,
            **fields,
        }
        with contextlib.suppress(DuplicateKeyError):  # a redelivered status
            await with_retry(lambda: self._statuses.insert_one(entry))
        seen = [doc async for doc in self._statuses.find({"send_id": send["_id"]})]
        furthest = max(seen, key=lambda d: (STATUS_RANK.get(d["status"], 0), d["at"]))
        update: Document = {"status": furthest["status"]}
        if fields.get("whatsapp_message_id"):
            update["whatsapp_message_id"] = fields["whatsapp_message_id"]
        await with_retry(lambda: self._sends.update_one({"_id": send["_id"]}, {"$set": update}))

    async def statuses(self, send_id: str) -> list[Document]:
        """A send's delivery statuses in the order they happened."""
        cursor = self._statuses.find({"send_id": send_id}).sort("at", 1)
        return [doc async for doc in cursor]
