"""Send-rate limits shared by every outbound replica: claims on time slots.

A limit of r messages per second is a sequence of slots 1/r seconds apart (with a small
margin, so a send that leaves a few milliseconds late cannot crowd a one-second window). A
sender claims the first free slot at or after now by inserting a document whose `_id` is
(key, slot number): a duplicate key means another replica holds that slot, so it tries the
next one. No read-modify-write is involved, so it holds on MongoDB and FerretDB alike.
Old slots are swept by whoever claims.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime

from pymongo.errors import DuplicateKeyError

from shared.store import Store, with_retry

# Slots are 5 % further apart than 1/rate: any one-second window then has 50 ms to spare,
# which absorbs a late wake-up and uneven latency between the replicas and Gupshup (at
# 2.5 %, a loaded two-core machine put six sends of a 5/s agent, or two of a 1/s agent, in
# one second at the receiving end in about one run in three). An agent gets up to 95 % of
# its rate.
SLOT_MARGIN = 1.05
MAX_PROBES = 2000
SWEEP_AFTER_SECONDS = 120


class SlotsExhausted(Exception):
    """No free slot was found close enough; try later."""


class RateSlots:
    """Claim and give back send slots per key (an agent, or an agent and a lead)."""

    def __init__(self, store: Store) -> None:
        self._slots = store.db["rate_slots"]
        self._hints: dict[str, int] = {}
        self._claims = 0

    @staticmethod
    def interval(rate_per_second: float) -> float:
        """Seconds between consecutive slots for a rate."""
        return SLOT_MARGIN / rate_per_second

    async def claim(self, key: str, interval: float, not_before: float) -> float:
        """Claim the first free slot at or after `not_before` (epoch seconds); its start."""
        number = max(math.ceil(not_before / interval), self._hints.get(key, 0))
        for _ in range(MAX_PROBES):
            doc = {
                "_id": f"{key}#{number}",
                "key": key,
                "at": datetime.fromtimestamp(number * interval, UTC),
            }
            try:
                await with_retry(lambda d=doc: self._slots.insert_one(d))  # type: ignore[misc]
            except DuplicateKeyError:
                number += 1
                continue
            self._hints[key] = number + 1
            await self._sweep()
            return number * interval
        raise SlotsExhausted(f"no free send slot for {key}")

    async def give_back(self, key: str, start: float, interval: float) -> None:
        """Free a slot we claimed but will not use (only its claimant calls this)."""
        number = round(start / interval)
        with contextlib.suppress(Exception):  # an unused slot left behind only wastes time
            await self._slots.delete_one({"_id": f"{key}#{number}"})
        if self._hints.get(key, 0) > number:
            self._hints[key] = number

    async def _sweep(self) -> None:
        self._claims += 1
        if self._claims % 500:
            return
        cutoff = datetime.fromtimestamp(time.time() - SWEEP_AFTER_SECONDS, UTC)
        await with_retry(lambda: self._slots.delete_many({"at": {"$lt": cutoff}}))


class AgentPauses:
    """Back-off of a whole agent (Gupshup said the number is rate limited): no slot before it.

    Each pause is its own document, so concurrent pauses never overwrite a longer one; the
    latest end wins. Read at most once a second per agent and process.
    """

    def __init__(self, store: Store) -> None:
        self._pauses = store.db["agent_pauses"]
        self._cache: dict[str, tuple[float, float]] = {}

    async def pause(self, agent_id: str, seconds: float) -> None:
        """No send for the agent until `seconds` from now."""
        until = time.time() + seconds
        await with_retry(
            lambda: self._pauses.insert_one(
                {"agent_id": agent_id, "until": datetime.fromtimestamp(until, UTC)}
            )
        )
        self._cache[agent_id] = (time.monotonic(), until)

    async def until(self, agent_id: str) -> float:
        """When the agent may send again (epoch seconds; in the past when not paused)."""
        cached = self._cache.get(agent_id)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        latest = await with_retry(
            lambda: self._pauses.find_one({"agent_id": agent_id}, sort=[("until", -1)])
        )
        until = latest["until"].timestamp() if latest else 0.0
        self._cache[agent_id] = (time.monotonic(), until)
        return until
