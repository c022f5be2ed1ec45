"""Messages of threads, inbound and outbound; stored once per (agent, provider id).

The stored shape of a message, either way, is written here only, and every read answers a
typed `ThreadMessage`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id
from shared.models import Bubble, InboundMessage, Location, Media, ReplyChoice, SendCommand
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, insert_if_absent, set_fields, with_retry

PartT = TypeVar("PartT", bound=BaseModel)


def message_id(agent_id: str, provider_message_id: str) -> str:
    """A message's id follows from its agent and its first provider id (or our send id)."""
    return derived_id("msg", agent_id, provider_message_id)


def content_key(message: InboundMessage) -> str:
    """What a message says, whatever its type, for recognising the same message twice."""
    parts = [message.type, message.text or ""]
    if message.media is not None:
        parts.append(message.media.url or message.media.filename or "")
    if message.location is not None:
        parts.append(f"{message.location.latitude},{message.location.longitude}")
    if message.choice is not None:
        parts.append(f"{message.choice.id}|{message.choice.title}")
    return "\x1f".join(parts)


class ThreadMessage(StoredRecord):
    """A stored message of a thread: the lead's (`in`), or the bot's or the agent's (`out`)."""

    model_config = ConfigDict(frozen=True)

    direction: Literal["in", "out"]
    type: str = "text"
    text: str | None = None
    author: str | None = None  # ours only: the engine, or "human:<user>" for the agent
    send_id: str | None = None  # ours only: the send that carries it
    sent_at: datetime
    received_at: datetime
    answered: bool = False
    dispatched: bool = False  # the lead's: the brain was told of it (confirmed by the broker)
    consent_intent: str | None = None  # the lead's: set when it asks to stop or resume
    payload: dict[str, Any] | None = None  # the lead's: media, location, choice, referral

    @property
    def choice(self) -> ReplyChoice | None:
        """The button or list row the lead chose, if that is what the message is."""
        return _part(self.payload, "choice", ReplyChoice)

    @property
    def location(self) -> Location | None:
        """The place the lead shared, if that is what the message is."""
        return _part(self.payload, "location", Location)

    @property
    def media(self) -> Media | None:
        """The image, video, audio or document the lead sent, if that is what the message is."""
        return _part(self.payload, "media", Media)


def _part(payload: dict[str, Any] | None, key: str, model: type[PartT]) -> PartT | None:
    value = (payload or {}).get(key)
    return model.model_validate(value) if value else None


class MessageRepository:
    """Store a thread's messages idempotently and read its history and unanswered ones."""

    def __init__(self, store: Store) -> None:
        self._messages = store.db["messages"]
        self._fingerprints = store.db["message_fingerprints"]

    async def store_inbound(
        self, message: InboundMessage, *, thread_id: str, lead_id: str, sender: str
    ) -> tuple[ThreadMessage, bool]:
        """Store a lead's message once; return it and whether this call stored it."""
        doc: Document = {
            "_id": message_id(message.agent_id, message.provider_message_id),
            "org_id": message.org_id,
            "agent_id": message.agent_id,
            "thread_id": thread_id,
            "lead_id": lead_id,
            "direction": "in",
            "provider_message_id": message.provider_message_id,
            "type": message.type,
            "text": message.text,
            "from": sender,  # the number, or the BSUID of a lead without one
            "payload": message.model_dump(
                mode="json", include={"media", "location", "choice", "referral"}
            ),
            "context_message_id": message.context_message_id,
            "sent_at": message.sent_at,
            "received_at": message.received_at,
            "answered": False,
            "answered_by": None,
            "dispatched": False,
        }
        existing = await insert_if_absent(
            self._messages,
            doc,
            {"agent_id": message.agent_id, "provider_message_id": message.provider_message_id},
        )
        return ThreadMessage.model_validate(doc if existing is None else existing), existing is None

    async def claim_fingerprint(self, message: InboundMessage, thread_id: str) -> bool:
        """False when this is Gupshup relaying an already seen message under another id.

        A relay carries the same content and the same WhatsApp timestamp as the original; a
        lead who repeats "ok" on purpose sends it at another time, so it is kept. The claim is
        an insert, so concurrent relays cannot both pass; the original's own redelivery does.
        """
        fingerprint_id = derived_id(
            "fpr", thread_id, content_key(message), message.sent_at.isoformat()
        )
        try:
            await with_retry(
                lambda: self._fingerprints.insert_one(
                    {
                        "_id": fingerprint_id,
                        "org_id": message.org_id,
                        "thread_id": thread_id,
                        "provider_message_id": message.provider_message_id,
                        "at": message.received_at,
                    }
                )
            )
        except DuplicateKeyError:
            first = await with_retry(lambda: self._fingerprints.find_one({"_id": fingerprint_id}))
            return first is None or first["provider_message_id"] == message.provider_message_id
        return True

    async def set_consent_intent(self, org_id: str, message_id: str, intent: str) -> None:
        """Mark a message as the lead's opt-out or opt-in."""
        await set_fields(self._messages, org_id, message_id, {"consent_intent": intent})

    async def mark_dispatched(self, org_id: str, message_id: str) -> None:
        """The thread's work item for this message was confirmed by the broker."""
        await set_fields(self._messages, org_id, message_id, {"dispatched": True})

    async def unanswered(self, org_id: str, thread_id: str) -> list[ThreadMessage]:
        """A thread's inbound messages not yet answered, in the order the lead sent them."""
        cursor = self._messages.find(
            {"org_id": org_id, "thread_id": thread_id, "direction": "in", "answered": False}
        ).sort([("sent_at", ASCENDING), ("received_at", ASCENDING)])
        return [ThreadMessage.model_validate(doc) async for doc in cursor]

    async def page(
        self, org_id: str, thread_id: str, *, before: datetime | None, limit: int
    ) -> list[ThreadMessage]:
        """A thread's messages before a time (all when `before` is None), newest first."""
        query: Document = {"org_id": org_id, "thread_id": thread_id}
        if before is not None:
            query["sent_at"] = {"$lt": before}
        cursor = self._messages.find(query).sort("sent_at", -1).limit(limit)
        return [ThreadMessage.model_validate(doc) async for doc in cursor]

    async def mark_answered(self, org_id: str, message_ids: list[str], reply_id: str) -> None:
        """Record which reply answered these messages."""
        await with_retry(
            lambda: self._messages.update_many(
                {"_id": {"$in": message_ids}, "org_id": org_id},
                {"$set": {"answered": True, "answered_by": reply_id}},
            )
        )

    async def store_outbound(
        self, command: SendCommand, send_id: str, bubble: Bubble, author: str
    ) -> None:
        """Store one bubble of a send command as the thread's history keeps it (idempotent: a
        re-run finds it already there); Gupshup's id replaces our send id once it is known."""
        doc: Document = {
            "_id": message_id(command.agent_id, send_id),
            "org_id": command.org_id,
            "agent_id": command.agent_id,
            "thread_id": command.thread_id,
            "lead_id": command.lead_id,
            "direction": "out",
            "provider_message_id": send_id,
            "send_id": send_id,
            "author": author,
            "type": bubble.type,
            "text": bubble.text,
            "sent_at": command.created_at,
            "received_at": command.created_at,
            "answered": True,
        }
        with contextlib.suppress(DuplicateKeyError):
            await with_retry(lambda: self._messages.insert_one(doc))

    async def set_provider_id(
        self, org_id: str, message_id: str, provider_message_id: str, at: datetime
    ) -> None:
        """Replace our own send id with Gupshup's once Gupshup accepted the message."""
        await set_fields(
            self._messages,
            org_id,
            message_id,
            {"provider_message_id": provider_message_id, "submitted_at": at},
        )

    async def lead_wrote_since(self, org_id: str, thread_id: str, since: datetime) -> bool:
        """Whether the lead wrote in the thread after `since`, or has a message unanswered."""
        found = await with_retry(
            lambda: self._messages.find_one(
                {
                    "org_id": org_id,
                    "thread_id": thread_id,
                    "direction": "in",
                    "$or": [{"received_at": {"$gt": since}}, {"answered": False}],
                },
                {"_id": 1},
            )
        )
        return found is not None
