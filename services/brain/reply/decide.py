"""Decide: the next action, by rules that bound any engine.

The order of the rules is the policy: a request for a person wins over everything; a booking
in progress comes before more questions; a resistant lead is never pushed to book; only one
qualifying question per reply, and never one already asked or answered.
"""

from __future__ import annotations

from services.brain.reply.model import (
    AppointmentView,
    Context,
    Decision,
    Recall,
    SlotOption,
    Stage,
    Understanding,
)

# The questions asked, one per reply, before a consultation is offered unprompted; the
# property type is recorded when the lead gives it, not asked.
QUALIFY = ("intent", "budget", "area", "bedrooms", "timeline")
SLOTS_OFFERED = 3


def decide(context: Context, understanding: Understanding, recall: Recall) -> Decision:
    """The next action for this reply, in the lead's language where the persona allows it."""
    decision = _decide(context, understanding, recall)
    language = understanding.language
    persona = context.persona
    if language and language != persona.language.split("-")[0] and language in persona.languages:
        return decision.model_copy(update={"language": language})
    return decision


def _decide(context: Context, understanding: Understanding, recall: Recall) -> Decision:
    requests = set(understanding.requests)
    greet = context.stage == "new" and not context.history
    appointment = recall.appointment

    if "human" in requests or understanding.sentiment == "negative":
        # Asked for a person, or upset: a conversation for the agent, not the bot.
        return Decision(action="handoff", stage="handed_off", greet=greet)
    if appointment is not None and "cancel" in requests:
        return Decision(action="cancel", stage="qualified", slot=_as_slot(appointment))
    if not recall.complete:
        # Without the bookings and listings, nothing is booked, moved or cited now.
        question = _next_question(context, recall)
        if question is not None:
            return Decision(
                action="ask", stage=_stage(context.stage), greet=greet, question=question
            )
        return Decision(action="close", stage=_stage(context.stage), greet=greet)
    chosen = _chosen(context, understanding, recall)
    moving = "reschedule" in requests or understanding.when is not None
    if appointment is not None and (moving or understanding.picked_slot is not None):
        # A booked lead picking one of the new times offered, or naming one: move it.
        if chosen is not None:
            return Decision(action="reschedule", stage="booked", slot=chosen)
        return Decision(action="offer_slots", stage="booked", slots=_offer(recall))
    if chosen is not None and appointment is None:
        return Decision(action="confirm_booking", stage="booked", greet=greet, slot=chosen)
    if understanding.media and not understanding.requests and not _has_facts(understanding):
        return Decision(
            action="acknowledge_media", stage=_stage(context.stage), media=understanding.media
        )
    if "not_interested" in requests or understanding.resistant or "later" in requests:
        return Decision(action="respect_pace", stage="nurturing", greet=greet)
    wants_booking = "book" in requests or (understanding.when is not None and appointment is None)
    if wants_booking and appointment is None:
        slots = _offer(recall)
        if slots:
            return Decision(action="offer_slots", stage="booking", greet=greet, slots=slots)
        return Decision(action="handoff", stage="handed_off", greet=greet)  # no free time
    if "listings" in requests or "price" in requests or understanding.district:
        question = _next_question(context, recall)
        return Decision(
            action="answer_listings",
            stage=_stage(context.stage),
            greet=greet,
            listings=recall.listings[:3],
            question=question if not recall.listings else None,
        )
    if "thanks" in requests and (appointment is not None or context.stage in ("booked",)):
        return Decision(action="close", stage=_stage(context.stage))
    question = _next_question(context, recall)
    if question is not None:
        return Decision(
            action="ask",
            stage="qualifying",
            greet=greet,
            thank=_has_facts(understanding),
            question=question,
        )
    if appointment is None and context.stage not in ("booking",):
        slots = _offer(recall)
        if slots:
            return Decision(action="offer_slots", stage="booking", greet=greet, slots=slots)
    if recall.listings and context.stage != "booked":
        return Decision(
            action="answer_listings", stage="qualified", greet=greet, listings=recall.listings[:3]
        )
    return Decision(action="close", stage=_stage(context.stage), greet=greet)


def _chosen(context: Context, understanding: Understanding, recall: Recall) -> SlotOption | None:
    """The slot the lead picked from those offered, or named exactly and free."""
    if understanding.picked_slot is not None and understanding.picked_slot < len(context.offered):
        return context.offered[understanding.picked_slot]
    when = understanding.when
    if when is not None and when.exact:
        for slot in recall.free_slots:
            if slot.start == when.start:
                return slot
    return None


def _offer(recall: Recall) -> list[SlotOption]:
    return recall.free_slots[:SLOTS_OFFERED]


def _as_slot(appointment: AppointmentView) -> SlotOption:
    return SlotOption(start=appointment.start, end=appointment.end, label=appointment.label)


def _has_facts(understanding: Understanding) -> bool:
    return bool(understanding.facts.model_dump(exclude_none=True))


def _next_question(context: Context, recall: Recall) -> str | None:
    """The first qualifying field neither known nor asked before."""
    missing = recall.profile.missing()
    return next((n for n in QUALIFY if n in missing and n not in context.asked), None)


def _stage(current: Stage) -> Stage:
    return "qualifying" if current == "new" else current
