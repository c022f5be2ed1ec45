"""The offline engine: Understand and Compose with rules, patterns and templates.

It holds a sensible conversation on its own (the product works without any model key) and
is the fallback of the Anthropic engine for every layer. Understand reads English (and
notices Chinese and Malay); Compose is one function for every language it speaks, taking
its words from the phrase table in `phrases.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from services.brain.engines.phrases import ENGLISH, PHRASES, PROPERTY_NAMES, Phrase
from services.brain.reply.geo import district_near
from services.brain.reply.model import (
    Context,
    Decision,
    Draft,
    LeadMessage,
    ListingCard,
    Profile,
    Recall,
    Request,
    TimeAsked,
    Understanding,
)
from services.brain.reply.slots import Slot
from services.brain.reply.when import parse_when, pick_offered

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
PROPERTY_TYPES = (
    ("executive_condo", r"\b(?:ec|executive condo(?:minium)?)\b"),
    ("condo", r"\b(?:condo|condominium|apartment)s?\b"),
    ("hdb", r"\b(?:hdb|bto|resale flat|flat)s?\b"),
    ("landed", r"\b(?:landed|terrace|semi-d|semi-detached|bungalow|cluster house)s?\b"),
    ("commercial", r"\b(?:commercial|shophouse|office|retail unit)s?\b"),
)
NAME = re.compile(r"\b(?i:my name is|i am|i'm|this is|call me)\s+([A-Z][a-z]+(?:\s[A-Z][a-z]+)?)\b")
NOT_NAMES = {"Looking", "Interested", "Just", "Not", "Keen", "Here", "Busy", "Fine", "Good"}

REQUEST_PATTERNS: dict[Request, str] = {
    "reschedule": r"\b(?:reschedul\w*|change (?:the|my) (?:time|slot|appointment)|another time|"
    r"move (?:it|the (?:viewing|appointment|call))|postpone)\b",
    "cancel": r"\b(?:cancel\w*|can(?:no|')t make it|cannot make it|won't make it)\b",
    "human": r"\b(?:real person|human|speak (?:to|with) (?:the |an |your )?(?:agent|someone|him|"
    r"her)|talk (?:to|with) (?:the |an |your )?(?:agent|someone|him|her)|call me|"
    r"agent call|not a bot|are you a bot)\b",
    "book": r"\b(?:book\w*|view(?:ing)?|appointment|meet(?:ing)?|consult\w*|schedule|"
    r"come down|visit|see the (?:unit|place|house|condo|flat))\b",
    "listings": r"\bany\b[^?.!\n]{0,40}\b(?:units?|listings?|condos?|flats?|houses?|homes?|"
    r"options?|hdb|ec|properties)\b|\b(?:(?:what|which) (?:units?|listings?|properties|"
    r"options)|available|listings?|recommend|show me)\b",
    "price": r"\b(?:price|prices|how much|psf|yield|valuation|worth)\b",
    "greeting": r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening)|yo)\b",
    "thanks": r"\b(?:thanks|thank you|thx|tq|ty)\b",
    "not_interested": r"\b(?:not interested|no thanks|no thank you|stop messaging|"
    r"leave me alone)\b",
    "later": r"\b(?:later|not now|not yet|next time|get back to you|will let you know)\b",
}
RESISTANT = re.compile(
    r"\b(?:just (?:browsing|looking|checking)|agents? keep (?:calling|messaging|texting)|"
    r"don't (?:push|pressure|call)|no pressure|not ready|too many agents|stop calling|"
    r"only looking)\b",
    re.IGNORECASE,
)
URGENT = re.compile(r"\b(?:asap|urgent\w*|immediately|right away|today)\b", re.IGNORECASE)
NEGATIVE = re.compile(
    r"\b(?:annoy\w*|angry|upset|terrible|bad service|scam|irritat\w*|frustrat\w*)\b",
    re.IGNORECASE,
)
POSITIVE = re.compile(r"\b(?:great|awesome|perfect|love|nice|excellent|sounds good)\b", re.I)
MEDIA_TYPES = {"image", "file", "audio", "video", "sticker"}
CJK = re.compile(r"[\u4e00-\u9fff]")
MALAY = re.compile(r"\b(?:saya|rumah|mahu|nak|boleh|terima kasih|berapa)\b", re.IGNORECASE)


def extract_facts(text: str) -> Profile:
    """Qualification facts found in one of the lead's messages."""
    lowered = text.lower()
    facts: dict[str, object] = {}
    for intent, words in INTENT_WORDS.items():
        if any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words):
            facts["intent"] = intent
            break
    if match := BUDGET.search(text):
        amount, unit = float(match.group(1)), match.group(2).lower()
        facts["budget"] = int(amount * (1_000 if unit == "k" else 1_000_000))
    elif match := PLAIN_BUDGET.search(text):
        facts["budget"] = int((match.group(1) or match.group(2)).replace(",", ""))
    if match := BEDROOMS.search(text):
        facts["bedrooms"] = int(match.group(1))
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
    for kind, pattern in PROPERTY_TYPES:
        if re.search(pattern, lowered):
            facts["property_type"] = kind
            break
    if (match := NAME.search(text)) and match.group(1).split()[0] not in NOT_NAMES:
        facts["name"] = match.group(1)
    return Profile.model_validate(facts)


def _area_pattern(area: str) -> str:
    # "north-east", "north east" and "pasir-ris" are written both ways.
    words = re.split(r"[-\s]", area)
    return r"\b" + r"[-\s]+".join(re.escape(word) for word in words) + r"\b"


def message_text(message: LeadMessage) -> str:
    """What a message says in words (a list reply's title, a media caption)."""
    return " ".join(
        part for part in (message.text, message.choice_title, message.caption) if part
    ).strip()


def requests_in(text: str) -> list[Request]:
    """The explicit requests a message makes, in a stable order."""
    lowered = text.lower()
    return [name for name, pattern in REQUEST_PATTERNS.items() if re.search(pattern, lowered)]


class OfflineEngine:
    """Rules, patterns and templates; no network."""

    name = "offline"

    async def understand(self, context: Context) -> Understanding:
        """What the lead's new messages say."""
        return understand(context)

    async def compose(self, context: Context, recall: Recall, decision: Decision) -> Draft:
        """The reply's bubbles for the decided action."""
        return compose(context, recall, decision)


def understand(context: Context) -> Understanding:
    """Read the burst in the order the lead sent it; a later message overrides an earlier one."""
    facts = Profile()
    requests: list[Request] = []
    when: TimeAsked | None = None
    picked: int | None = None
    media: list[str] = []
    district: str | None = None
    texts: list[str] = []
    offered = [Slot(start=o.start, end=o.end) for o in context.offered]
    for message in sorted(context.new_messages, key=lambda m: m.at):
        text = message_text(message)
        if message.type in MEDIA_TYPES:
            media.append(message.media_kind or message.type)
        if message.latitude is not None and message.longitude is not None:
            district = district_near(message.latitude, message.longitude)
        if message.choice_id and message.choice_id.startswith("slot:") and offered:
            index = _int(message.choice_id.removeprefix("slot:"))
            if index is not None and 0 <= index < len(offered):
                picked = index
        if not text:
            continue
        texts.append(text)
        facts = facts.merged(extract_facts(text))
        requests.extend(r for r in requests_in(text) if r not in requests)
        if "human" not in requests and _asks_for(context.agent_name, text):
            requests.append("human")
        asked = parse_when(text, context.now, context.timezone)
        if asked is not None:
            when = TimeAsked(start=asked.start, end=asked.end, exact=asked.exact)
        if offered and picked is None:
            chosen = pick_offered(text, offered, context.timezone, now=context.now)
            if chosen is not None:
                picked = offered.index(chosen)
    joined = "\n".join(texts)
    return Understanding(
        facts=facts,
        requests=requests,
        sentiment=_sentiment(joined),
        resistant=bool(RESISTANT.search(joined)),
        urgency="high" if URGENT.search(joined) else "normal",
        when=when,
        picked_slot=picked,
        media=media,
        district=district,
        language=_language(joined),
    )


def _asks_for(agent_name: str, text: str) -> bool:
    """Whether the lead asks to speak with the agent by name ("can I speak to Jason?")."""
    first = re.escape(agent_name.split(" ")[0].lower())
    return bool(
        re.search(
            rf"\b(?:speak|talk|chat) (?:to|with) {first}\b|\b{first} (?:call|contact) me\b",
            text.lower(),
        )
    )


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _sentiment(text: str) -> str:
    if NEGATIVE.search(text):
        return "negative"
    return "positive" if POSITIVE.search(text) else "neutral"


def _language(text: str) -> str | None:
    if CJK.search(text):
        return "zh"
    return "ms" if MALAY.search(text) else None


# --- Compose -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Words:
    """One language's phrases as this reply uses them: in the persona's tone, fresh."""

    phrases: Mapping[str, Phrase]
    tone: str
    said: frozenset[str]  # what the bot said lately

    def __call__(self, key: str, **values: object) -> str:
        """The phrase for `key` with its placeholders filled."""
        phrase = self.phrases.get(f"{key}@{self.tone}") or self.phrases[key]
        options = (phrase,) if isinstance(phrase, str) else phrase
        # The first phrasing not used lately (Guard drops repetitions).
        fresh = next((o for o in options if not any(t.startswith(o) for t in self.said)), None)
        return (fresh or options[-1]).format(**values)

    def optional(self, key: str | None) -> str | None:
        """The phrase for `key`, or None when this language has none."""
        return self(key) if key and key in self.phrases else None


def compose(context: Context, recall: Recall, decision: Decision) -> Draft:
    """Short bubbles in the persona's tone, at most one question, the signature last.

    In the decision's language when the phrase table has it, else in English.
    """
    language = decision.language if decision.language in PHRASES else ENGLISH
    persona = context.persona
    said = frozenset(turn.text.strip() for turn in context.history[-12:] if turn.who == "bot")
    words = Words(PHRASES[language], persona.tone, said)
    values = {"agent": context.agent_name, "bot": persona.bot_name}
    bubbles: list[str] = []
    if decision.greet:
        first = (recall.profile.name or "").split(" ")[0]
        greeting = words("greeting", name=f" {first}" if first else "", **values)
        # The persona's own greeting is written in its language, not the lead's.
        bubbles.append((persona.greeting if language == ENGLISH else None) or greeting)
    question = words.optional(decision.question)
    slots = "\n".join(f"{n}. {slot.label}" for n, slot in enumerate(decision.slots, 1))
    match decision.action:
        case "ask":
            if decision.thank and not decision.greet:
                bubbles.append(words("thanks"))
        case "acknowledge_media":
            names = (words.optional(f"media:{kind}") or "file" for kind in decision.media)
            bubbles.append(words("media", kinds=", ".join(dict.fromkeys(names)), **values))
        case "answer_listings":
            if decision.listings:
                cards = [_card(n, card) for n, card in enumerate(decision.listings, 1)]
                bubbles.append(words("listings") + "\n" + "\n".join(cards))
            else:
                bubbles.append(words("no_listing", wanted=_describe(recall.profile)))
        case "offer_slots":
            bubbles.append(words("offer", **values) + "\n" + slots)
            question = words("offer_question")
        case "slot_taken":
            bubbles.append(words("taken"))
            if decision.slots:
                bubbles.append(words("still_free") + "\n" + slots)
                question = words("taken_question")
        case "confirm_booking" | "reschedule":
            key = "booked" if decision.action == "confirm_booking" else "moved"
            label = decision.slot.label if decision.slot else words(f"{key}_any")
            bubbles.append(words(key, label=label, **values))
            if decision.link:
                calendar = "calendar" if key == "booked" else "moved_calendar"
                bubbles.append(words(calendar, link=decision.link))
            question = None
        case "cancel" | "handoff" | "respect_pace" | "close":
            key = {"cancel": "cancelled", "respect_pace": "pace"}.get(
                decision.action, decision.action
            )
            bubbles.append(words(key, **values))
            question = None
    if question:
        bubbles.append(question)
    bubbles = [b for b in bubbles if b]
    if not bubbles:
        bubbles = [words("safe", **values)]
    if persona.signature:
        bubbles[-1] = f"{bubbles[-1]}\n{persona.signature}"
    return Draft(bubbles=bubbles[:3] if len(bubbles) <= 3 else _fold(bubbles))


def _card(number: int, card: ListingCard) -> str:
    kind = PROPERTY_NAMES.get(card.property_type, card.property_type)
    rooms = f"{card.bedrooms}-bedroom " if card.bedrooms else ""
    size = f", {card.size_sqft:,} sqft" if card.size_sqft else ""
    tenure = f", {card.tenure}" if card.tenure else ""
    return (
        f"{number}. {card.project} ({card.district}): {rooms}{kind}, ${card.price:,}{size}{tenure}"
    )


def _describe(profile: Profile) -> str:
    parts = []
    if profile.bedrooms:
        parts.append(f"{profile.bedrooms}-bedroom")
    parts.append(PROPERTY_NAMES.get(profile.property_type or "", "home"))
    if profile.area:
        parts.append(f"in {profile.area}")
    if profile.budget:
        parts.append(f"within ${profile.budget:,}")
    return " ".join(parts)


def _fold(bubbles: list[str]) -> list[str]:
    """At most three bubbles: the middle ones are joined."""
    return [bubbles[0], "\n".join(bubbles[1:-1]), bubbles[-1]]


INTENT_NAMES = {"own_stay": "to buy for own stay", "investment": "to invest", "rent": "to rent"}
STAGE_NOTES = {
    "booked": "booked",
    "booking": "choosing a time",
    "nurturing": "not ready yet",
    "handed_off": "asked for the agent",
    "closed": "closed",
}


def summarize(profile: Profile, stage: str, booked: str | None = None) -> str:
    """One line on where the lead stands, for the thread and the agent's colleagues."""
    wants = INTENT_NAMES.get(profile.intent or "", "looking")
    parts = [f"{profile.name or 'The lead'}: {wants}"]
    described = _describe(profile)
    if described and described != "home":
        parts.append(described)
    if profile.timeline:
        parts.append(f"timeline {profile.timeline}")
    note = STAGE_NOTES.get(stage)
    if booked:
        parts.append(f"viewing booked for {booked}")
    elif note:
        parts.append(note)
    return "; ".join(parts) + "."
