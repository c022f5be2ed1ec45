"""Thread leases: at most one brain worker handles a thread at a time.

A lease is a document whose `_id` is the thread id plus a generation number, created by
insert. Taking over an expired lease inserts the next generation, so two claimants cannot
both win (a unique `_id`) and a late former owner can only touch its own generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from shared.models import utcnow
from shared.store import Store, with_retry


@dataclass(frozen=True)
class Lease:
    """A held lease."""

    thread_id: str
    generation: int
    owner: str
    expires_at: datetime

    @property
    def id(self) -> str:
        """The lease document's id."""
        return f"{self.thread_id}#{self.generation}"


class ThreadLeases:
    """Acquire and release thread leases."""

    def __init__(self, store: Store, ttl_seconds: float) -> None:
        self._leases = store.db["thread_leases"]
        self._ttl = timedelta(seconds=ttl_seconds)

    async def acquire(self, thread_id: str, owner: str) -> Lease | None:
        """Take the thread's lease, or None when another live owner holds it."""
        now = utcnow()
        latest = await with_retry(
            lambda: self._leases.find_one(
                {"thread_id": thread_id}, sort=[("generation", DESCENDING)]
            )
        )
        if latest is not None and not latest["released"] and latest["expires_at"] > now:
            return None
        generation = latest["generation"] + 1 if latest is not None else 1
        lease = Lease(thread_id, generation, owner, now + self._ttl)
        try:
            await with_retry(
                lambda: self._leases.insert_one(
                    {
                        "_id": lease.id,
                        "thread_id": thread_id,
                        "generation": generation,
                        "owner": owner,
                        "expires_at": lease.expires_at,
                        "released": False,
                    }
                )
            )
        except DuplicateKeyError:
            return None  # someone else took this generation first
        if generation > 1:  # older generations are finished or expired: sweep them
            await with_retry(
                lambda: self._leases.delete_many(
                    {"thread_id": thread_id, "generation": {"$lt": generation}}
                )
            )
        return lease

    async def release(self, lease: Lease) -> None:
        """Release a lease; only its own generation and owner are touched."""
        await with_retry(
            lambda: self._leases.update_one(
                {"_id": lease.id, "owner": lease.owner}, {"$set": {"released": True}}
            )
        )
