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
from shared.store import Document, Store, converge, with_retry

SendState = Literal["sending", "submitted", "failed", "unknown", "skipped"]
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

    async def delivery_of(self, org_id: str, send_ids: list[str]) -> dict[str, Document]:
        """How far each send got: its state, delivery status and any error."""
        if not send_ids:
            return {}
        cursor = self._sends.find(
            {"_id": {"$in": send_ids}, "org_id": org_id},
            {"state": 1, "status": 1, "error": 1, "error_code": 1, "reason": 1},
        )
        return {doc.pop("_id"): doc async for doc in cursor}

    async def get(self, send_id: str) -> Document | None:
        """A send's claim, if any."""
        return await with_retry(lambda: self._sends.find_one({"_id": send_id}))

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

        Statuses arrive concurrently and out of order, so each is its own document and the
        send's `status` is a summary of them, kept right by `converge`.
        """
        entry: Document = {
            "_id": derived_id("dst", send["_id"], status),
            "send_id": send["_id"],
            "org_id": send["org_id"],
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
                    {"_id": send["_id"]},
                    {"$set": {"whatsapp_message_id": fields["whatsapp_message_id"]}},
                )
            )

        async def furthest() -> str | None:
            latest = await self._statuses.find_one(
                {"send_id": send["_id"]}, sort=[("rank", -1), ("at", -1)]
            )
            return None if latest is None else str(latest["status"])

        async def current() -> str | None:
            doc = await self._sends.find_one({"_id": send["_id"]}, {"status": 1})
            return None if doc is None else doc.get("status")

        async def write(value: str | None) -> None:
            await with_retry(
                lambda: self._sends.update_one({"_id": send["_id"]}, {"$set": {"status": value}})
            )

        await converge(furthest, current, write)
