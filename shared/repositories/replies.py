"""Replies: what the brain decided to say, written before it is published.

A reply's id derives from the messages it answers, so a re-run finds the stored reply
instead of composing a second one; `published` turns true once the broker confirmed it.
A stored reply is read as a typed `StoredReply`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from shared.models import SendCommand, utcnow
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, insert_if_absent, set_fields, with_retry


class StoredReply(StoredRecord):
    """A reply as stored: its send command, the messages it answers, who composed it and
    what it changes on its thread."""

    model_config = ConfigDict(frozen=True)

    command: SendCommand
    answers: list[str] = Field(default_factory=list)
    engine: str  # the engine that composed it, or "human:<user>" for the agent
    thread_state: dict[str, Any] = Field(default_factory=dict)  # stage, profile ...
    published: bool = False


class AnsweredElsewhere(Exception):
    """Another run is answering (or answered) some of these messages."""


class ReplyRepository:
    """Store replies and find those not yet published."""

    def __init__(self, store: Store) -> None:
        self._replies = store.db["replies"]
        self._claims = store.db["answer_claims"]

    async def claim_answers(
        self, org_id: str, reply_id: str, answers: list[str], stale_after: timedelta
    ) -> None:
        """Make `reply_id` the one reply to these messages, or raise AnsweredElsewhere.

        Each message is claimed by inserting a document whose `_id` is the message, so two
        runs that read overlapping sets of messages (a lease taken over from a run that was
        slow, not dead) cannot both answer one: the loser gives back what it claimed. A
        claim whose reply was never stored and that is older than `stale_after` belongs to
        a run that died: it is taken over.
        """
        taken: list[str] = []
        try:
            for message_id in answers:
                if not await self._claim_one(org_id, reply_id, message_id, stale_after):
                    raise AnsweredElsewhere(f"message {message_id} is another reply's")
                taken.append(message_id)
        except AnsweredElsewhere:
            if taken:
                await with_retry(
                    lambda: self._claims.delete_many({"_id": {"$in": taken}, "reply_id": reply_id})
                )
            raise

    async def _claim_one(
        self, org_id: str, reply_id: str, message_id: str, stale_after: timedelta
    ) -> bool:
        claim = {"_id": message_id, "org_id": org_id, "reply_id": reply_id, "at": utcnow()}
        for _ in range(2):
            try:
                await with_retry(lambda: self._claims.insert_one(claim))
                return True
            except DuplicateKeyError:
                existing = await with_retry(lambda: self._claims.find_one({"_id": message_id}))
                if existing is None:
                    continue  # given back meanwhile: try again
                if existing["reply_id"] == reply_id:
                    return True  # ours, from an earlier attempt of this same reply
                holder = str(existing["reply_id"])
                stored = await with_retry(
                    partial(self._replies.find_one, {"_id": holder}, {"_id": 1})
                )
                if stored is not None or utcnow() - existing["at"] < stale_after:
                    return False
                # The run that claimed it died before storing its reply.
                await with_retry(
                    partial(self._claims.delete_one, {"_id": message_id, "reply_id": holder})
                )
        return False

    async def create(
        self,
        command: SendCommand,
        answers: list[str],
        engine: str,
        thread_state: Document | None = None,
    ) -> StoredReply:
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
        existing = await insert_if_absent(
            self._replies, doc, {"_id": command.command_id, "org_id": command.org_id}
        )
        if existing is not None:
            return StoredReply.model_validate(existing)
        return StoredReply(
            id=command.command_id,
            command=command,
            answers=answers,
            engine=engine,
            thread_state=thread_state or {},
        )

    async def unpublished(self, org_id: str, thread_id: str) -> list[StoredReply]:
        """Replies of a thread stored but not confirmed by the broker, oldest first."""
        cursor = self._replies.find(
            {"org_id": org_id, "thread_id": thread_id, "published": False}
        ).sort("created_at", 1)
        return [StoredReply.model_validate(doc) async for doc in cursor]

    async def exists(self, org_id: str, reply_id: str) -> bool:
        """Whether a reply with this id is stored."""
        doc = await with_retry(
            lambda: self._replies.find_one({"_id": reply_id, "org_id": org_id}, {"_id": 1})
        )
        return doc is not None

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
        await set_fields(self._replies, org_id, reply_id, {"outbound_done": True})

    async def mark_published(self, org_id: str, reply_id: str) -> None:
        """The broker confirmed the reply's send command."""
        await set_fields(self._replies, org_id, reply_id, {"published": True})
