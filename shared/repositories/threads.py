"""Threads: one per agent and lead, holding the conversation's state.

A thread's id derives from its agent and lead, so creating it is an insert that at most one
replica wins; every read answers a typed `Thread`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from shared.ids import derived_id
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, insert_if_absent, set_fields, with_retry


def thread_id_for(agent_id: str, lead_id: str) -> str:
    """A thread's id follows from its agent and lead, so every replica derives the same one."""
    return derived_id("thr", agent_id, lead_id)


class Thread(StoredRecord):
    """One agent's conversation with one lead, as stored (fields a reply has not set yet are
    at their defaults)."""

    model_config = ConfigDict(frozen=True)

    org_id: str
    agent_id: str
    lead_id: str
    state: str = "bot"  # bot, human (the agent's), closed
    stage: str = "new"
    profile: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)  # how the lead came to this agent
    created_at: datetime | None = None
    last_inbound_at: datetime | None = None  # opens WhatsApp's 24-hour window
    last_outbound_at: datetime | None = None
    asked: list[str] = Field(default_factory=list)  # qualifying questions already asked
    offered: list[dict[str, Any]] = Field(default_factory=list)  # slots last offered
    opt_out_confirmed: bool = False
    summary: str | None = None
    handed_off_at: datetime | None = None  # when a person took the thread over
    handoff_note: str | None = None
    # When the lead, whose number WhatsApp withheld, was asked once to share it.
    contact_requested_at: datetime | None = None

    @field_validator("profile", "source", "asked", "offered", "opt_out_confirmed", mode="before")
    @classmethod
    def _stored_null_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # An older writer may have stored null where a value was not set yet.
        if value is not None:
            return value
        return cls.model_fields[info.field_name or ""].get_default(call_default_factory=True)

    @property
    def thread_id(self) -> str:
        """The thread's id (what commands and messages call it)."""
        return self.id

    @property
    def source_name(self) -> str:
        """How the lead came to this agent: ad, campaign, import or organic."""
        return str(self.source.get("source", "organic"))


def _thread(doc: Document | None) -> Thread | None:
    return None if doc is None else Thread.model_validate(doc)


class ThreadRepository:
    """Find-or-create threads and update their state."""

    def __init__(self, store: Store) -> None:
        self._threads = store.db["threads"]

    async def resolve(
        self, *, org_id: str, agent_id: str, lead_id: str, at: datetime, source: dict[str, Any]
    ) -> tuple[Thread, bool]:
        """The agent's thread with this lead and whether this call created it."""
        thread_id = thread_id_for(agent_id, lead_id)
        same = {"org_id": org_id, "agent_id": agent_id, "lead_id": lead_id}
        existing = await self._find(org_id, thread_id, same)
        if existing is not None:
            return Thread.model_validate(existing), False
        thread: Document = {
            "_id": thread_id,
            "org_id": org_id,
            "agent_id": agent_id,
            "lead_id": lead_id,
            "state": "bot",
            "stage": "new",
            "profile": {},
            "source": source,
            "created_at": at,
            "last_inbound_at": None,
            "last_outbound_at": None,
        }
        existing = await insert_if_absent(self._threads, thread, same)
        return Thread.model_validate(thread if existing is None else existing), existing is None

    async def find_for(self, org_id: str, agent_id: str, lead_id: str) -> Thread | None:
        """The agent's thread with this lead, if there is one."""
        same = {"org_id": org_id, "agent_id": agent_id, "lead_id": lead_id}
        return _thread(await self._find(org_id, thread_id_for(agent_id, lead_id), same))

    async def _find(self, org_id: str, thread_id: str, same: Document) -> Document | None:
        """The thread by its derived id (the usual case), else by agent and lead: a thread
        that came with a lead merged into this one keeps the id it was created with."""
        found = await with_retry(
            lambda: self._threads.find_one({"_id": thread_id, "org_id": org_id})
        )
        if found is not None and found.get("lead_id") == same["lead_id"]:
            return found
        return await with_retry(lambda: self._threads.find_one(same))

    async def get(self, org_id: str, thread_id: str) -> Thread | None:
        """A thread of an organization."""
        return _thread(
            await with_retry(lambda: self._threads.find_one({"_id": thread_id, "org_id": org_id}))
        )

    async def page(
        self,
        org_id: str,
        *,
        after: str | None,
        limit: int,
        agent_id: str | None = None,
        lead_id: str | None = None,
        state: str | None = None,
        lead_ids: list[str] | None = None,
    ) -> list[Thread]:
        """An organization's threads in id order, after a cursor (with `lead_ids`: only
        threads with one of these leads)."""
        query: Document = {"org_id": org_id}
        if after:
            query["_id"] = {"$gt": after}
        for field, value in (("agent_id", agent_id), ("lead_id", lead_id), ("state", state)):
            if value is not None:
                query[field] = value
        if lead_ids is not None:
            if lead_id is not None and lead_id not in lead_ids:
                return []
            query.setdefault("lead_id", {"$in": lead_ids})
        cursor = self._threads.find(query).sort("_id", 1).limit(limit)
        return [Thread.model_validate(doc) async for doc in cursor]

    async def siblings(self, org_id: str, lead_id: str, thread_id: str) -> list[Thread]:
        """The lead's other threads in the same organization (never another's)."""
        cursor = self._threads.find(
            {"org_id": org_id, "lead_id": lead_id, "_id": {"$ne": thread_id}}
        ).sort("_id", 1)
        return [Thread.model_validate(doc) async for doc in cursor]

    async def lead_ids(
        self, org_id: str, *, after: str | None, limit: int, among: list[str] | None = None
    ) -> list[str]:
        """Leads the organization knows (through its own threads), in id order; with
        `among`, only those of these leads."""
        match: Document = {"org_id": org_id}
        condition: Document = {}
        if after:
            condition["$gt"] = after
        if among is not None:
            condition["$in"] = among
        if condition:
            match["lead_id"] = condition
        cursor = await self._threads.aggregate(
            [
                {"$match": match},
                {"$group": {"_id": "$lead_id"}},
                {"$sort": {"_id": 1}},
                {"$limit": limit},
            ]
        )
        return [doc["_id"] async for doc in cursor]

    async def lead_ids_of_agent(self, org_id: str, agent_id: str) -> list[str]:
        """Every lead the agent has a thread with."""
        cursor = self._threads.find({"org_id": org_id, "agent_id": agent_id}, {"lead_id": 1})
        return sorted({str(doc["lead_id"]) async for doc in cursor})

    async def touch_inbound(self, org_id: str, thread_id: str, at: datetime) -> None:
        """Record a lead's message time (it opens the 24-hour window); never moves it back."""
        await with_retry(
            lambda: self._threads.update_one(
                {"_id": thread_id, "org_id": org_id}, {"$max": {"last_inbound_at": at}}
            )
        )

    async def update_state(self, org_id: str, thread_id: str, fields: Document) -> None:
        """Set conversation state fields (stage, profile ...) of a thread."""
        await set_fields(self._threads, org_id, thread_id, fields)
