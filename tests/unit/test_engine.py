"""The rule-based reply engine: persona greeting, one question at a time, facts, call offer."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.brain.engine import QUESTIONS, Conversation, compose_reply, extract_facts
from shared.repositories.agents import Persona

QUESTION_FOR = {question: key for key, question in QUESTIONS}
ALL_FACTS = {
    "intent": "own_stay",
    "budget": "1500000",
    "area": "Tampines",
    "bedrooms": "3",
    "timeline": "6 months",
}


def conversation(
    *,
    stage: str = "qualifying",
    profile: dict[str, Any] | None = None,
    new_texts: list[str] | None = None,
    persona: Persona | None = None,
    lead_name: str | None = "Rachel Lim",
) -> Conversation:
    return Conversation(
        persona=persona or Persona(bot_name="Mia"),
        agent_name="Jason Tan",
        lead_name=lead_name,
        stage=stage,
        profile=profile or {},
        new_texts=["Hi"] if new_texts is None else new_texts,
    )


def questions(bubbles: list[str]) -> list[str]:
    """The sentences of a reply that end with a question mark."""
    return [q.strip() for q in re.findall(r"[^.!?\n]*\?", "\n".join(bubbles))]


def asked_fact(bubbles: list[str]) -> str | None:
    """Which qualification fact the reply asks for, if any."""
    asked = [key for question, key in QUESTION_FOR.items() if any(question in b for b in bubbles)]
    assert len(asked) <= 1, bubbles
    return asked[0] if asked else None


def test_first_reply_greets_as_the_bot_with_the_leads_first_name_and_asks_one_question() -> None:
    reply = compose_reply(
        conversation(stage="new", new_texts=["Hi, I saw your listing on PropertyGuru"])
    )
    greeting = reply.bubbles[0]
    assert "Mia" in greeting
    assert "Rachel" in greeting and "Lim" not in greeting
    assert "Jason Tan" in greeting
    assert questions(reply.bubbles) == [QUESTIONS[0][1]]
    assert reply.stage == "qualifying"


@pytest.mark.parametrize("lead_name", [None, "", "   "])
def test_first_reply_without_a_name_greets_without_one(lead_name: str | None) -> None:
    greeting = compose_reply(conversation(stage="new", lead_name=lead_name)).bubbles[0]
    assert greeting.startswith("Hi! I'm Mia")
    assert "None" not in greeting


def test_first_name_is_found_despite_stray_spaces_in_the_profile_name() -> None:
    greeting = compose_reply(conversation(stage="new", lead_name="  Rachel  Lim")).bubbles[0]
    assert greeting.startswith("Hi Rachel! I'm Mia")


def test_later_replies_do_not_greet_again() -> None:
    reply = compose_reply(conversation(stage="qualifying", new_texts=["to buy"]))
    assert not any("Mia" in bubble for bubble in reply.bubbles)
    assert len(questions(reply.bubbles)) == 1


@pytest.mark.parametrize(
    ("message", "facts"),
    [
        (
            "Hi, looking to buy a 3-bedroom condo in Tampines, budget around 1.5m, "
            "hoping to move in 6 months",
            {
                "intent": "own_stay",
                "budget": "1500000",
                "bedrooms": "3",
                "area": "Tampines",
                "timeline": "6 months",
            },
        ),
        ("Budget is $800k", {"budget": "800000"}),
        ("max 1.2 mil", {"budget": "1200000"}),
        ("S$2M tops", {"budget": "2000000"}),
        ("my budget is $1,500,000", {"budget": "1500000"}),
        ("around 3k per month", {"budget": "3000"}),
        ("3br please", {"bedrooms": "3"}),
        ("we need 4 bedrooms", {"bedrooms": "4"}),
        ("a 2 bed unit", {"bedrooms": "2"}),
        ("I want to invest, rental yield matters most", {"intent": "investment"}),
        ("Looking for an investment property", {"intent": "investment"}),
        ("Looking to rent near Orchard", {"intent": "rent", "area": "Orchard"}),
        ("We want to buy near my parents in Bishan", {"intent": "own_stay", "area": "Bishan"}),
        ("for own stay, 99-year leasehold is ok", {"intent": "own_stay"}),
        ("Pasir Ris or Tampines", {"area": "Pasir Ris"}),
        ("Jurong West", {"area": "Jurong"}),
        ("anywhere in the north-east", {"area": "North-East"}),
        ("north east is fine", {"area": "North-East"}),
        ("Prefer D15", {"area": "D15"}),
        ("district 10 please", {"area": "D10"}),
        ("ASAP", {"timeline": "asap"}),
        ("sometime next year", {"timeline": "next year"}),
        ("within 3 months", {"timeline": "3 months"}),
        ("about 1,100 sqft, 3k psf is too much", {}),
        ("Something different from what I have", {}),
        ("ok thanks", {}),
    ],
)
def test_facts_are_read_from_realistic_messages(message: str, facts: dict[str, str]) -> None:
    assert extract_facts(message) == facts


def test_facts_from_every_message_of_a_burst_are_kept() -> None:
    reply = compose_reply(
        conversation(new_texts=["Looking to buy", "budget 1.5m", "Tampines, 3br"])
    )
    assert reply.profile == {
        "intent": "own_stay",
        "budget": "1500000",
        "area": "Tampines",
        "bedrooms": "3",
    }
    assert asked_fact(reply.bubbles) == "timeline"


@pytest.mark.parametrize(
    "known",
    [
        combination
        for size in range(len(ALL_FACTS))
        for combination in itertools.combinations(ALL_FACTS, size)
    ],
    ids=lambda known: "+".join(known) or "nothing",
)
def test_asks_the_first_missing_fact_and_never_a_known_one(known: tuple[str, ...]) -> None:
    profile = {key: ALL_FACTS[key] for key in known}
    reply = compose_reply(conversation(profile=profile, new_texts=["ok"]))
    first_missing = next(key for key, _ in QUESTIONS if key not in profile)
    assert asked_fact(reply.bubbles) == first_missing
    assert len(questions(reply.bubbles)) == 1
    assert reply.stage == "qualifying"
    assert reply.profile == profile


def test_a_fact_given_in_the_answer_is_not_asked_again() -> None:
    reply = compose_reply(
        conversation(profile={"intent": "investment"}, new_texts=["around $800k, in D9"])
    )
    assert reply.profile["budget"] == "800000" and reply.profile["area"] == "D9"
    assert asked_fact(reply.bubbles) == "bedrooms"


def test_once_qualified_it_offers_a_call_with_the_agent() -> None:
    all_but_timeline = {key: value for key, value in ALL_FACTS.items() if key != "timeline"}
    reply = compose_reply(conversation(profile=all_but_timeline, new_texts=["next month"]))
    assert reply.stage == "qualified"
    assert asked_fact(reply.bubbles) is None
    [offer] = questions(reply.bubbles)
    assert "call" in offer and "Jason Tan" in offer
    assert reply.profile["timeline"] == "next month"


def test_a_lead_who_gives_everything_at_once_is_greeted_and_offered_a_call() -> None:
    reply = compose_reply(
        conversation(
            stage="new",
            new_texts=["Buying a 3br in Bishan, budget 1.8m, need to move in 6 months"],
        )
    )
    assert "Mia" in reply.bubbles[0]
    assert reply.stage == "qualified"
    [offer] = questions(reply.bubbles)
    assert "Jason Tan" in offer


def test_the_personas_own_greeting_and_signature_are_used() -> None:
    persona = Persona(
        bot_name="Mia",
        greeting="Hello from Jason's property team!",
        signature="— Mia, for Jason Tan (CEA R012345A)",
    )
    reply = compose_reply(conversation(stage="new", persona=persona))
    assert reply.bubbles[0] == "Hello from Jason's property team!"
    assert reply.bubbles[-1].endswith("\n— Mia, for Jason Tan (CEA R012345A)")
    assert sum(bubble.count("CEA R012345A") for bubble in reply.bubbles) == 1
    assert len(questions(reply.bubbles)) == 1


LEAD_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                *("buy", "rent", "invest", "1.5m", "$800k", "3br", "D15", "Bishan", "asap"),
                *("please", "?", "ok", "next year", "north-east", "$1,200,000", "2k sqft", "\n"),
            ]
        ),
        max_size=6,
    ).map(" ".join),
)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(LEAD_TEXT, max_size=3),
    known=st.sets(st.sampled_from(sorted(ALL_FACTS))),
    stage=st.sampled_from(["new", "qualifying", "qualified"]),
)
def test_any_burst_gets_one_question_and_none_about_a_known_fact(
    texts: list[str], known: set[str], stage: str
) -> None:
    profile = {key: ALL_FACTS[key] for key in known}
    reply = compose_reply(conversation(stage=stage, profile=profile, new_texts=texts))
    assert len(questions(reply.bubbles)) == 1
    assert set(profile) <= set(reply.profile)
    asked = asked_fact(reply.bubbles)
    assert asked is None or asked not in reply.profile
    assert (reply.stage == "qualified") == (asked is None)
    assert all(bubble.strip() for bubble in reply.bubbles)


@pytest.mark.parametrize(
    ("tone", "opening"),
    [("friendly", "Hi Rachel!"), ("professional", "Good day Rachel."), ("casual", "Hey Rachel!")],
)
def test_first_reply_speaks_in_the_personas_tone(tone: str, opening: str) -> None:
    persona = Persona(bot_name="Ava", tone=tone)  # type: ignore[arg-type]
    reply = compose_reply(
        Conversation(
            persona=persona,
            agent_name="Jason Tan",
            lead_name="Rachel Lim",
            stage="new",
            profile={},
            new_texts=["Hello"],
        )
    )
    assert reply.bubbles[0].startswith(opening)
    assert "Ava" in reply.bubbles[0] and "Jason Tan" in reply.bubbles[0]
