"""Recall: what a reply may draw on beyond the messages (listings, free time, the booking).

Only this organization's data, and of its listings only the agent's own and the
organization's shared ones.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.brain.reply.geo import districts_for
from services.brain.reply.model import (
    AppointmentView,
    Context,
    ListingCard,
    Profile,
    Recall,
    SlotOption,
    Understanding,
)
from services.brain.reply.slots import Slot, free_slots
from services.brain.reply.when import TimeWindow
from shared.repositories.agents import Agent
from shared.repositories.appointments import AppointmentRepository
from shared.repositories.listings import ListingRepository
from shared.store import Store

MAX_LISTINGS_SCANNED = 500
HORIZON = timedelta(days=14)
# A listing a little over the budget is still worth showing; far over it is not.
BUDGET_STRETCH = 1.1


class Recaller:
    """Read what a reply may cite."""

    def __init__(self, store: Store) -> None:
        self._listings = ListingRepository(store)
        self._appointments = AppointmentRepository(store)

    async def recall(self, context: Context, understanding: Understanding, agent: Agent) -> Recall:
        """The profile so far, matching listings, free slots and the booked appointment."""
        profile = context.profile.merged(understanding.facts)
        if understanding.district and not understanding.facts.area:
            profile = profile.model_copy(update={"area": understanding.district})
        # Independent reads, at once: a reply waits for the slowest, not for their sum.
        listings, appointment, booked = await asyncio.gather(
            self.listings(context.org_id, context.agent_id, profile),
            self._appointments.active_for_thread(context.org_id, context.thread_id),
            self._appointments.booked_between(
                context.org_id, context.agent_id, context.now, context.now + HORIZON
            ),
        )
        when = understanding.when
        window = None if when is None else TimeWindow(when.start, when.end, when.exact)
        slots = free_slots(
            agent.working_hours,
            agent.timezone,
            agent.slot_minutes,
            [(a.start, a.end) for a in booked],
            context.now,
            count=3,
            window=window,
        )
        return Recall(
            profile=profile,
            listings=listings,
            free_slots=[self._option(slot, agent.timezone) for slot in slots],
            appointment=None
            if appointment is None
            else AppointmentView(
                appointment_id=appointment.id,
                start=appointment.start,
                end=appointment.end,
                label=Slot(start=appointment.start, end=appointment.end).label(agent.timezone),
            ),
            colleague_threads=context.colleague_threads,
        )

    @staticmethod
    def _option(slot: Slot, timezone: str) -> SlotOption:
        return SlotOption(start=slot.start, end=slot.end, label=slot.label(timezone))

    async def listings(self, org_id: str, agent_id: str, profile: Profile) -> list[ListingCard]:
        """Available listings of the agent or the organization matching the profile, best first."""
        stored = await self._listings.available_to_agent(org_id, agent_id, MAX_LISTINGS_SCANNED)
        wanted = districts_for(profile.area) if profile.area else set()
        scored: list[tuple[float, ListingCard]] = []
        for listing in stored:
            # The profile's filters first: only the listings kept become cards.
            if profile.area and not _in_area(listing.district or "", profile.area, wanted):
                continue
            if profile.property_type and listing.property_type != profile.property_type:
                continue
            if profile.bedrooms is not None and listing.bedrooms != profile.bedrooms:
                continue
            if profile.budget and (listing.price or 0) > profile.budget * BUDGET_STRETCH:
                continue
            card = ListingCard.of(listing)
            # Closest to the budget first (a budget is a ceiling leads like to use).
            score = abs(profile.budget - card.price) if profile.budget else card.price
            scored.append((score, card))
        scored.sort(key=lambda pair: (pair[0], pair[1].listing_id))
        return [card for _, card in scored]


def _in_area(district: str, area: str, wanted: set[str]) -> bool:
    """Whether a listing's district is in the area the lead asked for."""
    return bool(districts_for(district) & wanted) or area.lower() in district.lower()
