"""The rule-based reply engine: greets in the agent's persona and qualifies the lead.

This is the seam where the five-layer brain plugs in: it takes the conversation so far and
returns the bubbles to send plus the updated stage and profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.repositories.agents import Persona

# The qualifying questions, asked one at a time in this order.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("intent", "Are you looking to buy a home to live in, to invest, or to rent?"),
    ("budget", "What budget range do you have in mind?"),
    ("area", "Which area or district would you prefer?"),
    ("bedrooms", "How many bedrooms do you need?"),
    ("timeline", "When are you hoping to move or buy?"),
)
# Whole words only: "please" is not "lease", "parents" and "currently" are not "rent".
INTENT_WORDS = {
    "investment": (
        "invest",
        "invests",
        "investing",
        "investment",
        "investor",
        "rental yield",
        "roi",
    ),
    "rent": ("rent", "renting", "rental", "lease", "leasing", "tenancy"),
    "own_stay": ("buy", "buying", "own stay", "live in", "purchase", "my family", "to live"),
}
# A unit is required ("1.5m", "$800k") unless the amount has a currency sign or thousands
# separators ("$1,500,000"); "2k sqft" and "3k psf" are sizes and prices per foot.
BUDGET = re.compile(r"\$?\s?(\d+(?:\.\d+)?)\s?(m|mil|million|k)\b(?!\s*(?:sq|psf))", re.IGNORECASE)
PLAIN_BUDGET = re.compile(r"(?:\$\s?(\d{5,})|\b(\d{1,3}(?:,\d{3}){1,2}))(?![\d,]|\s*(?:sq|psf))")
BEDROOMS = re.compile(r"\b(\d)\s?-?\s?(?:bed(?:room)?s?|br|room)\b", re.IGNORECASE)
AREAS = (
    "east",
    "west",
    "north",
    "north-east",
    "central",
    "tampines",
    "bedok",
    "pasir ris",
    "punggol",
    "sengkang",
    "jurong",
    "woodlands",
    "bishan",
    "toa payoh",
    "orchard",
    "bukit timah",
    "clementi",
    "queenstown",
    "marine parade",
    "serangoon",
)
# Singapore's postal districts, as leads write them: "D15", "District 10".
DISTRICT = re.compile(r"\b(?:d|district\s?)(0?[1-9]|1\d|2[0-8])\b", re.IGNORECASE)
TIMELINE = re.compile(
    r"\b(asap|now|immediately|this (?:month|year)|next (?:month|year)|\d+\s?(?:months?|years?))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Conversation:
    """What the engine knows when it composes a reply."""

    persona: Persona
    agent_name: str
    lead_name: str | None
    stage: str
    profile: dict[str, Any]
    new_texts: list[str]
    # The lead's threads with colleagues in the same organization (metadata only).
    colleague_threads: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ComposedReply:
    """The bubbles to send and the thread's new state."""

    bubbles: list[str]
    stage: str
    profile: dict[str, Any] = field(default_factory=dict)


def extract_facts(text: str) -> dict[str, str]:
    """Qualification facts found in a lead's message."""
    lowered = text.lower()
    facts: dict[str, str] = {}
    for intent, words in INTENT_WORDS.items():
        if any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words):
            facts["intent"] = intent
            break
    if match := BUDGET.search(text):
        amount, unit = float(match.group(1)), match.group(2).lower()
        facts["budget"] = str(int(amount * (1_000 if unit == "k" else 1_000_000)))
    elif match := PLAIN_BUDGET.search(text):
        facts["budget"] = (match.group(1) or match.group(2)).replace(",", "")
    if match := BEDROOMS.search(text):
        facts["bedrooms"] = match.group(1)
    # The first place named wins, and the longest name there: "north-east" is not "east".
    found = [
        (match.start(), -len(area), area)
        for area in AREAS
        if (match := re.search(_area_pattern(area), lowered))
    ]
    if found:
        facts["area"] = min(found)[2].title()
    elif match := DISTRICT.search(text):
        facts["area"] = f"D{int(match.group(1))}"
    if match := TIMELINE.search(text):
        facts["timeline"] = match.group(1).lower()
    return facts


def _area_pattern(area: str) -> str:
    # "north-east", "north east" and "pasir-ris" are written both ways.
    words = re.split(r"[-\s]", area)
    return r"\b" + r"[-\s]+".join(re.escape(word) for word in words) + r"\b"


# The persona's tone decides how the bot introduces itself.
GREETINGS = {
    "friendly": "Hi{name}! I'm {bot}, {agent}'s assistant. Thanks for reaching out.",
    "professional": "Good day{name}. I am {bot}, assistant to {agent}. Thank you for your enquiry.",
    "casual": "Hey{name}! {bot} here, helping {agent} out. Great to hear from you!",
}


def compose_reply(conversation: Conversation) -> ComposedReply:
    """One reply to the lead's latest messages: at most one question, short bubbles."""
    persona = conversation.persona
    profile = dict(conversation.profile)
    for text in conversation.new_texts:
        profile.update(extract_facts(text))
    bubbles: list[str] = []
    first_name = next(iter((conversation.lead_name or "").split()), "")
    if conversation.stage == "new":
        name = f" {first_name}" if first_name else ""
        default_greeting = GREETINGS[persona.tone].format(
            name=name, bot=persona.bot_name, agent=conversation.agent_name
        )
        bubbles.append(persona.greeting or default_greeting)
    elif not conversation.new_texts:
        bubbles.append("Thanks! I've passed this on so nothing gets missed.")
    missing = next(((key, q) for key, q in QUESTIONS if key not in profile), None)
    if missing is not None:
        bubbles.append(missing[1])
        stage = "qualifying"
    else:
        bubbles.append(
            f"Thanks, that's very helpful. Would you like to book a short call with "
            f"{conversation.agent_name} to go through suitable options?"
        )
        stage = "qualified"
    if persona.signature:
        bubbles[-1] = f"{bubbles[-1]}\n{persona.signature}"
    return ComposedReply(bubbles=bubbles, stage=stage, profile=profile)
