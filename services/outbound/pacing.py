"""Pacing: when an agent's next bubble may leave.

Three limits, all shared by every outbound replica through the store: the agent's send
rate (claims on time slots, `RateSlots`), a pause after the lead's previous message, and a
pause of the whole agent when Gupshup throttles its number (`AgentPauses`). A send never
leaves outside a slot; a wait longer than `send_max_wait_seconds` is not spent holding a
consumer but handed back to the broker as a `Defer`, so a throttled agent delays nobody else.
"""

from __future__ import annotations

import asyncio
import random
import time

from shared.errors import Defer
from shared.metrics import SEND_WAIT, THROTTLED
from shared.repositories.agents import Agent
from shared.repositories.rate_slots import AgentPauses, RateSlots
from shared.settings import Settings

# A send that wakes later than this after its slot takes a fresh slot: with slots spaced by
# SLOT_MARGIN, what is left of the margin absorbs uneven latency to Gupshup (see RateSlots).
MAX_LATENESS_SECONDS = 0.006
# How long an agent pauses when a status says Gupshup throttled its number.
AGENT_BACKOFF_SECONDS = 30.0
# Backoff when Gupshup gives no hint: up to twice as long each time, at most this long.
THROTTLE_MAX_SECONDS = 60.0


def come_back_in(wait: float, max_wait: float) -> int:
    """Milliseconds to defer a send whose rate slot is `wait` seconds away.

    It comes back when the slot is at most `max_wait` away (delay tiers round the delay up),
    so the agent's sends keep coming with no gap in its rate.
    """
    return int(max(min(wait - max_wait, 30.0), 0.1) * 1000)


def throttle_ceiling(streak: int, base: float) -> float:
    """The longest backoff after `streak` hint-less 429s in a row: doubling, capped."""
    return min(base * 2.0 ** (streak - 1), THROTTLE_MAX_SECONDS)


class Pacer:
    """Hold each send until its agent's slot; back an agent off when Gupshup throttles it."""

    def __init__(self, slots: RateSlots, pauses: AgentPauses, settings: Settings) -> None:
        self._slots = slots
        self._pauses = pauses
        self._settings = settings
        # Consecutive 429s per agent in this process, for the exponential backoff.
        self._throttled: dict[str, int] = {}
        # Per agent, this process's sends take their rate slots one at a time (see pace).
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting_turn: dict[str, int] = {}

    async def pace(self, agent: Agent, previous: float) -> None:
        """Wait for the pause after the lead's previous message, then the agent's rate slot.

        In this process an agent's sends take their slots one at a time, each just before
        it leaves, so a slot is held only by the send about to use it and a late wake-up
        wastes one slot, not a queue of them.
        """
        key = f"agent:{agent.id}"
        interval = RateSlots.interval(agent.rate_per_second)
        max_wait = self._settings.send_max_wait_seconds
        not_before = max(
            previous + self._settings.lead_pause_seconds, await self._pauses.until(agent.id)
        )
        pause = not_before - time.time()
        if pause > max_wait:  # mostly: Gupshup throttled the agent, which is paused
            THROTTLED.labels(agent.id).inc()
            delay_ms = come_back_in(pause, max_wait)
            raise Defer("agent paused, or pausing after the lead's last message", delay_ms=delay_ms)
        if pause > 0:
            await asyncio.sleep(pause)
        queued = self._waiting_turn.get(key, 0)
        if queued * interval > max_wait:
            THROTTLED.labels(agent.id).inc()
            delay_ms = come_back_in(queued * interval, max_wait)
            raise Defer("agent at its send rate", delay_ms=delay_ms)
        self._waiting_turn[key] = queued + 1
        try:
            async with self._turns.setdefault(key, asyncio.Lock()):
                await self._take_slot(agent, key, interval)
        finally:
            self._waiting_turn[key] -= 1

    async def _take_slot(self, agent: Agent, key: str, interval: float) -> None:
        for _ in range(3):
            start = await self._slots.claim(key, interval, time.time())
            wait = start - time.time()
            if wait > self._settings.send_max_wait_seconds:
                await self._slots.give_back(key, start, interval)
                THROTTLED.labels(agent.id).inc()
                delay_ms = come_back_in(wait, self._settings.send_max_wait_seconds)
                raise Defer("agent at its send rate", delay_ms=delay_ms)
            if wait > 0:
                await asyncio.sleep(wait)
            SEND_WAIT.observe(max(wait, 0.0))
            if time.time() - start <= MAX_LATENESS_SECONDS:
                return
        # Never send outside a slot: a busy process hands the command back instead.
        raise Defer("too busy to keep the send rate", delay_ms=100)

    def reached(self, agent_id: str) -> None:
        """Gupshup took a send of the agent's: its throttling streak is over."""
        self._throttled.pop(agent_id, None)

    def backoff_seconds(self, agent_id: str) -> float:
        """How long to back off after a 429 without a hint: exponential per agent, jittered."""
        self._throttled[agent_id] = streak = self._throttled.get(agent_id, 0) + 1
        ceiling = throttle_ceiling(streak, self._settings.gupshup_backoff_base_seconds)
        return random.uniform(ceiling / 2, ceiling)

    async def pause(self, agent_id: str, seconds: float) -> None:
        """No send of the agent's, by any replica, for `seconds`."""
        await self._pauses.pause(agent_id, seconds)
