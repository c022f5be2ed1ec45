"""Conversions per agent: a booked appointment, a deal marked won or lost."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id
from shared.repositories.threads import Thread
from shared.store import Document, Store, with_retry

ConversionKind = Literal["booked", "won", "lost"]
CONVERTED = ("booked", "won")


class ConversionRepository:
    """Record conversions once per thread and kind, and report on them."""

    def __init__(self, store: Store) -> None:
        self._conversions = store.db["conversions"]
        self._threads = store.db["threads"]

    async def record(self, thread: Thread, kind: ConversionKind, at: datetime, actor: str) -> bool:
        """Record a conversion of a thread; False when it was recorded before."""
        doc: Document = {
            "_id": derived_id("cnv", thread.id, kind),
            "org_id": thread.org_id,
            "agent_id": thread.agent_id,
            "lead_id": thread.lead_id,
            "thread_id": thread.id,
            "kind": kind,
            "at": at,
            "actor": actor,
            "source": thread.source_name,
        }
        with contextlib.suppress(DuplicateKeyError):
            await with_retry(lambda: self._conversions.insert_one(doc))
            return True
        return False

    async def booked_threads(self, org_id: str, thread_ids: list[str]) -> set[str]:
        """Which of these threads have a booked appointment."""
        cursor = self._conversions.find(
            {"org_id": org_id, "thread_id": {"$in": thread_ids}, "kind": "booked"},
            {"thread_id": 1},
        )
        return {doc["thread_id"] async for doc in cursor}

    async def report(self, org_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Leads, conversions and conversion rate per agent and source, for threads started
        in [start, end); conversions count whenever they happened."""
        threads = [
            doc
            async for doc in self._threads.find(
                {"org_id": org_id, "created_at": {"$gte": start, "$lt": end}},
                {"agent_id": 1, "source": 1},
            )
        ]
        by_thread = {t["_id"]: t for t in threads}
        kinds: dict[str, set[str]] = defaultdict(set)
        if by_thread:
            async for doc in self._conversions.find(
                {"org_id": org_id, "thread_id": {"$in": list(by_thread)}},
                {"thread_id": 1, "kind": 1},
            ):
                kinds[doc["thread_id"]].add(doc["kind"])
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for thread in threads:
            source = (thread.get("source") or {}).get("source", "organic")
            row = rows.setdefault(
                (thread["agent_id"], source),
                {
                    "agent_id": thread["agent_id"],
                    "source": source,
                    "leads": 0,
                    "booked": 0,
                    "won": 0,
                    "lost": 0,
                    "converted": 0,
                },
            )
            row["leads"] += 1
            for kind in kinds[thread["_id"]]:
                row[kind] += 1
            if kinds[thread["_id"]] & set(CONVERTED):
                row["converted"] += 1
        for row in rows.values():
            row["conversion_rate"] = round(row["converted"] / row["leads"], 4)
        return sorted(rows.values(), key=lambda r: (r["agent_id"], r["source"]))
