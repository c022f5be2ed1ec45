# ruff: noqa: RUF001 - Chinese punctuation is full-width on purpose.
"""The offline engine's layers: facts and requests read, the next action decided by rules,
replies composed in the persona with at most one question, and Guard's blocks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.brain.engines.offline import compose, extract_facts, summarize, understand
from services.brain.engines.phrases import PHRASES
from services.brain.reply.decide import decide
from services.brain.reply.guard import guard
from services.brain.reply.model import (
    AppointmentView,
    Context,
    Decision,
    Draft,
    LeadMessage,
    ListingCard,
    Profile,
    Recall,
    SlotOption,
    Turn,
    Understanding,
)
from shared.repositories.agents import Persona

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Singapore
FULL = Profile(intent="own_stay", budget=1_500_000, area="Tampines", bedrooms=3, timeline="soon")


def context(*texts: str, **overrides: Any) -> Context:
    values: dict[str, Any] = {
        "org_id": "org_1",
        "agent_id": "agt_1",
        "thread_id": "thr_1",
        "lead_id": "lead_1",
        "agent_name": "Jason Tan",
        "persona": Persona(bot_name="Mia"),
        "timezone": "Asia/Singapore",
        "now": NOW,
        "stage": "qualifying",
        "new_messages": [
            LeadMessage(type="text", text=t, at=NOW + timedelta(seconds=n))
            for n, t in enumerate(texts)
        ],
    }
    values.update(overrides)
    return Context(**values)


def slot(hours: int) -> SlotOption:
    start = NOW + timedelta(hours=hours)
    return SlotOption(start=start, end=start + timedelta(minutes=30), label=f"slot {hours}")


def questions(bubbles: list[str]) -> list[str]:
    return re.findall(r"[^.!?\n]*\?", "\n".join(bubbles))


@pytest.mark.parametrize(
    ("message", "facts"),
    [
        (
            "Hi, looking to buy a 3-bedroom condo in Tampines, budget around 1.5m, "
            "hoping to move in 6 months",
            {
                "intent": "own_stay",
                "budget": 1_500_000,
                "bedrooms": 3,
                "area": "Tampines",
                "timeline": "6 months",
                "property_type": "condo",
            },
        ),
        ("Budget is $800k", {"budget": 800_000}),
        ("max 1.2 mil", {"budget": 1_200_000}),
        ("S$2M tops", {"budget": 2_000_000}),
        ("my budget is $1,500,000", {"budget": 1_500_000}),
        ("around 3k per month", {"budget": 3000}),
        ("3br please", {"bedrooms": 3}),
        ("we need 4 bedrooms", {"bedrooms": 4}),
        ("I want to invest, rental yield matters most", {"intent": "investment"}),
        ("Looking to rent near Orchard", {"intent": "rent", "area": "Orchard"}),
        ("We want to buy near my parents in Bishan", {"intent": "own_stay", "area": "Bishan"}),
        ("for own stay, 99-year leasehold is ok", {"intent": "own_stay"}),
        ("anywhere in the north-east", {"area": "North-East"}),
        ("Prefer D15", {"area": "D15"}),
        ("district 10 please", {"area": "D10"}),
        ("sometime next year", {"timeline": "next year"}),
        ("an EC or a resale HDB flat", {"property_type": "executive_condo"}),
        ("Hi, I'm Rachel", {"name": "Rachel"}),
        ("I am looking for a landed home", {"property_type": "landed"}),
        ("about 1,100 sqft, 3k psf is too much", {}),
        ("ok thanks", {}),
    ],
)
def test_facts_are_read_from_realistic_messages(message: str, facts: dict[str, Any]) -> None:
    assert extract_facts(message).model_dump(exclude_none=True) == facts


def test_a_burst_is_read_in_the_order_the_lead_sent_it() -> None:
    later, earlier = NOW + timedelta(seconds=5), NOW
    ctx = context(
        new_messages=[
            LeadMessage(type="text", text="actually 2.1m", at=later),
            LeadMessage(type="text", text="Looking to buy, budget 1.5m, Tampines", at=earlier),
        ]
    )
    facts = understand(ctx).facts
    assert (facts.intent, facts.budget, facts.area) == ("own_stay", 2_100_000, "Tampines")


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ("Can I speak to Jason directly?", "human"),
        ("are you a bot?", "human"),
        ("I'd like to book a viewing", "book"),
        ("Any 3-bedroom condos available in Tampines?", "listings"),
        ("I need to cancel, can't make it", "cancel"),
        ("can we reschedule to another time", "reschedule"),
        ("not interested, thanks", "not_interested"),
    ],
)
def test_requests_are_recognised(text: str, request_: str) -> None:
    assert request_ in understand(context(text)).requests


def test_resistant_lead_is_recognised_and_never_offered_a_booking() -> None:
    ctx = context("Just browsing, agents keep calling me")
    understanding = understand(ctx)
    assert understanding.resistant
    recall = Recall(profile=FULL, free_slots=[slot(24), slot(48)])
    decision = decide(ctx, understanding, recall)
    assert decision.action == "respect_pace"
    draft = compose(ctx, recall, decision)
    assert questions(draft.bubbles) == []
    assert not any("book" in b.lower() for b in draft.bubbles)


def test_first_reply_greets_in_the_persona_and_asks_one_question() -> None:
    ctx = context("Hello", stage="new", profile=Profile(name="Rachel Lim"))
    recall = Recall(profile=ctx.profile)
    decision = decide(ctx, understand(ctx), recall)
    assert (decision.action, decision.greet, decision.question) == ("ask", True, "intent")
    bubbles = compose(ctx, recall, decision).bubbles
    assert bubbles[0] == "Hi Rachel! I'm Mia, Jason Tan's assistant. Thanks for reaching out."
    assert questions(bubbles) == [PHRASES["en"]["intent"]]


@pytest.mark.parametrize("known", [(), ("intent",), ("intent", "budget"), ("intent", "area")])
def test_asks_the_first_missing_fact_never_a_known_or_already_asked_one(
    known: tuple[str, ...],
) -> None:
    profile = Profile(**{k: getattr(FULL, k) for k in known})
    ctx = context("ok", asked=["timeline"])
    decision = decide(ctx, understand(ctx), Recall(profile=profile))
    assert decision.question not in (*known, "timeline")
    assert decision.question == next(
        f for f in ("intent", "budget", "area", "bedrooms") if f not in known
    )


def test_qualified_lead_is_offered_two_or_three_slots_then_booked_by_picking_one() -> None:
    offered = [slot(24), slot(48), slot(72)]
    ctx = context("ok")
    recall = Recall(profile=FULL, free_slots=offered)
    decision = decide(ctx, understand(ctx), recall)
    assert decision.action == "offer_slots" and decision.slots == offered
    bubbles = compose(ctx, recall, decision).bubbles
    assert all(s.label in "\n".join(bubbles) for s in offered)
    assert len(questions(bubbles)) == 1

    picked = context("the second one", offered=offered, stage="booking")
    choice = decide(picked, understand(picked), recall)
    assert choice.action == "confirm_booking" and choice.slot == offered[1]


def test_list_reply_picks_the_offered_slot() -> None:
    offered = [slot(24), slot(48)]
    ctx = context(
        offered=offered,
        new_messages=[LeadMessage(type="list_reply", choice_id="slot:1", choice_title="x", at=NOW)],
    )
    assert understand(ctx).picked_slot == 1


def test_a_request_for_a_person_hands_off_even_mid_booking() -> None:
    ctx = context("can I talk to the agent please", offered=[slot(24)], stage="booking")
    assert decide(ctx, understand(ctx), Recall(profile=FULL)).action == "handoff"


def test_cancel_and_reschedule_act_on_the_booked_appointment() -> None:
    booked = AppointmentView(
        appointment_id="apt_1", start=slot(24).start, end=slot(24).end, label="slot 24"
    )
    recall = Recall(profile=FULL, appointment=booked, free_slots=[slot(48)])
    cancel = context("sorry I need to cancel")
    assert decide(cancel, understand(cancel), recall).action == "cancel"
    move = context("can we reschedule?")
    decision = decide(move, understand(move), recall)
    assert decision.action == "offer_slots" and decision.slots == [slot(48)]


def test_photos_and_voice_notes_are_acknowledged_and_kept_for_the_agent() -> None:
    ctx = context(
        new_messages=[
            LeadMessage(type="image", media_kind="image", at=NOW),
            LeadMessage(type="audio", media_kind="audio", at=NOW),
        ]
    )
    recall = Recall(profile=FULL)
    decision = decide(ctx, understand(ctx), recall)
    assert decision.action == "acknowledge_media"
    assert "photo, voice message" in compose(ctx, recall, decision).bubbles[0]


def test_a_shared_location_finds_listings_in_its_district() -> None:
    ctx = context(
        new_messages=[LeadMessage(type="location", latitude=1.354, longitude=103.944, at=NOW)]
    )
    understanding = understand(ctx)
    assert understanding.district == "D18"  # Tampines
    decision = decide(ctx, understanding, Recall(profile=FULL))
    assert decision.action == "answer_listings"


def test_listings_are_cited_as_stored_and_only_those() -> None:
    card = ListingCard(
        listing_id="lst_1",
        project="Treasure at Tampines",
        district="D18",
        property_type="condo",
        bedrooms=3,
        price=1_480_000,
        size_sqft=1100,
        tenure="99-year",
    )
    ctx = context("Any 3-bedroom condos in Tampines?")
    recall = Recall(profile=FULL, listings=[card])
    decision = decide(ctx, understand(ctx), recall)
    bubbles = compose(ctx, recall, decision).bubbles
    text = "\n".join(bubbles)
    assert "Treasure at Tampines (D18): 3-bedroom condo, $1,480,000, 1,100 sqft" in text
    assert guard(ctx, recall, decision, Draft(bubbles=bubbles)).blocked == []


@pytest.mark.parametrize(
    ("bubble", "reason"),
    [
        ("Only 2 units left, act fast!", "scarcity"),
        ("Many buyers are looking at this one", "scarcity"),
        ("This is guaranteed to appreciate", "promise"),
        ("You can expect a 5% rental yield", "promise"),
        ("It's going for $1,200,000 now", "unknown_figure"),
        ("Call my other client at +65 9123 4567", "other_data"),
        ("Email rachel@example.com for details", "other_data"),
    ],
)
def test_guard_blocks_pressure_promises_unknown_figures_and_other_peoples_data(
    bubble: str, reason: str
) -> None:
    ctx = context("hi")
    decision = Decision(action="ask", stage="qualifying")
    verdict = guard(ctx, Recall(profile=FULL), decision, Draft(bubbles=[bubble]))
    assert reason in verdict.blocked and verdict.bubbles == []


def test_guard_keeps_one_question_drops_repetition_and_signs() -> None:
    ctx = context(
        "hi",
        persona=Persona(bot_name="Mia", signature="- Mia, for Jason"),
        history=[Turn(who="bot", text="Thanks, that's helpful!", at=NOW)],
    )
    draft = Draft(bubbles=["Thanks, that's helpful!", "What budget? And which area?"])
    verdict = guard(ctx, Recall(profile=FULL), Decision(action="ask", stage="qualifying"), draft)
    assert verdict.bubbles == ["What budget?\n- Mia, for Jason"]


def test_budget_the_lead_gave_may_be_repeated_back() -> None:
    ctx = context("hi")
    draft = Draft(bubbles=["Noted, a budget of $1.5m."])
    assert (
        guard(ctx, Recall(profile=FULL), Decision(action="ask", stage="qualifying"), draft).blocked
        == []
    )


def test_understanding_and_decision_types_stay_strict() -> None:
    with pytest.raises(ValueError):
        Understanding.model_validate({"requests": ["dance"]})


def test_an_upset_lead_is_handed_to_the_agent() -> None:
    ctx = context("This is so annoying, your bot keeps asking the same thing")
    understanding = understand(ctx)
    assert understanding.sentiment == "negative"
    assert decide(ctx, understanding, Recall(profile=FULL)).action == "handoff"


def test_without_recall_nothing_is_booked_or_cited() -> None:
    offered = [slot(24), slot(48)]
    ctx = context("the first one", offered=offered, stage="booking")
    blind = Recall(profile=Profile(), complete=False)
    decision = decide(ctx, understand(ctx), blind)
    assert decision.action == "ask" and decision.slot is None and not decision.listings


@pytest.mark.parametrize(
    ("text", "language", "greeting", "question"),
    [
        ("你好，我想买房自住", "zh", "您好！我是Mia", "您的预算大概是多少"),
        ("Saya nak beli rumah untuk keluarga", "ms", "Hai! Saya Mia", "Berapakah bajet anda?"),
    ],
)
def test_the_lead_is_answered_in_their_language_where_the_persona_allows(
    text: str, language: str, greeting: str, question: str
) -> None:
    allowed = Persona(bot_name="Mia", languages=["zh", "ms"])
    ctx = context(text, stage="new", persona=allowed, profile=Profile(intent="own_stay"))
    understanding = understand(ctx)
    assert understanding.language == language
    recall = Recall(profile=ctx.profile)
    decision = decide(ctx, understanding, recall)
    assert decision.language == language
    draft = compose(ctx, recall, decision)
    assert draft.bubbles[0].startswith(greeting) and question in draft.bubbles[-1]
    verdict = guard(ctx, recall, decision, draft)
    assert verdict.blocked == [] and len(verdict.bubbles) == 2

    english_only = context(text, stage="new", profile=Profile(intent="own_stay"))
    assert decide(english_only, understand(english_only), recall).language is None


def test_guard_counts_full_width_question_marks_too() -> None:
    draft = Draft(bubbles=["您的预算大概是多少？您喜欢哪个地区？"])
    verdict = guard(context("hi"), Recall(profile=FULL), Decision(action="ask", stage="new"), draft)
    assert verdict.bubbles == ["您的预算大概是多少？"]


def test_the_thread_summary_says_where_the_lead_stands() -> None:
    profile = FULL.model_copy(update={"name": "Rachel Lim", "property_type": "condo"})
    assert summarize(profile, "booked", "Sat 28 Nov, 3:00 pm") == (
        "Rachel Lim: to buy for own stay; 3-bedroom condo in Tampines within $1,500,000; "
        "timeline soon; viewing booked for Sat 28 Nov, 3:00 pm."
    )
    assert summarize(Profile(), "nurturing") == "The lead: looking; not ready yet."
