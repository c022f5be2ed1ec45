"""Replies: what the brain decided to say, written before it is published.

A reply's id derives from the messages it answers, so a re-run finds the stored reply
instead of composing a second one; `published` turns true once the broker confirmed it.
"""

from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from shared.models import SendCommand
from shared.store import Document, Store, with_retry


class ReplyRepository:
    """Store replies and find those not yet published."""

    def __init__(self, store: Store) -> None:
        self._replies = store.db["replies"]

    async def create(
        self,
        command: SendCommand,
        answers: list[str],
        engine: str,
        thread_state: Document | None = None,
    ) -> SendCommand:
        """Store a reply; if it exists already, return the stored one instead.

        `thread_state` is what the reply changes on its thread (stage, profile ...): kept with
        the reply so that publishing a stored reply after a crash applies it too.
        """
        doc: Document = {
            "_id": command.command_id,
            "org_id": command.org_id,
            "thread_id": command.thread_id,
            "answers": answers,
            "engine": engine,
            "command": command.model_dump(mode="json"),
            "thread_state": thread_state or {},
            "published": False,
            "created_at": command.created_at,
        }
        try:
            await with_retry(lambda: self._replies.insert_one(doc))
        except DuplicateKeyError:
            existing = await with_retry(
                lambda: self._replies.find_one(
                    {"_id": command.command_id, "org_id": command.org_id}
                )
            )
            if existing is None:
                raise
            return SendCommand.model_validate(existing["command"])
        return command

    async def unpublished(self, org_id: str, thread_id: str) -> list[Document]:
        """Replies of a thread stored but not confirmed by the broker, oldest first."""
        cursor = self._replies.find(
            {"org_id": org_id, "thread_id": thread_id, "published": False}
        ).sort("created_at", 1)
        return [doc async for doc in cursor]

    async def exists(self, org_id: str, reply_id: str) -> bool:
        """Whether a reply with this id is stored."""
        doc = await with_retry(
            lambda: self._replies.find_one({"_id": reply_id, "org_id": org_id}, {"_id": 1})
        )
        return doc is not None

    async def thread_state_of(self, org_id: str, reply_id: str) -> Document:
        """What a stored reply changes on its thread."""
        doc = await with_retry(
            lambda: self._replies.find_one({"_id": reply_id, "org_id": org_id}, {"thread_state": 1})
        )
        return (doc or {}).get("thread_state") or {}

    async def earlier_unfinished(
        self, org_id: str, thread_id: str, before: datetime, since: datetime, reply_id: str
    ) -> bool:
        """True when an earlier reply of the thread (made after `since`) is not sent yet.

        The store keeps milliseconds: two replies made within one are ordered by id, so
        exactly one of them is the earlier.
        """
        same_ms = before.replace(microsecond=before.microsecond // 1000 * 1000)
        found = await with_retry(
            lambda: self._replies.find_one(
                {
                    "org_id": org_id,
                    "thread_id": thread_id,
                    "created_at": {"$gte": since},
                    "outbound_done": {"$ne": True},
                    "$or": [
                        {"created_at": {"$lt": same_ms}},
                        {"created_at": same_ms, "_id": {"$lt": reply_id}},
                    ],
                }
            )
        )
        return found is not None

    async def mark_outbound_done(self, org_id: str, reply_id: str) -> None:
        """Outbound finished with the reply (sent, skipped or given up): later ones may go."""
        await with_retry(
            lambda: self._replies.update_one(
                {"_id": reply_id, "org_id": org_id}, {"$set": {"outbound_done": True}}
            )
        )

    async def mark_published(self, org_id: str, reply_id: str) -> None:
        """The broker confirmed the reply's send command."""
        await with_retry(
            lambda: self._replies.update_one(
                {"_id": reply_id, "org_id": org_id}, {"$set": {"published": True}}
            )
        )
