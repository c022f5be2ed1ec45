"""The offline engine: Understand and Compose with rules, patterns and templates.

It holds a sensible conversation on its own (the product works without any model key) and
is the fallback of the Anthropic engine for every layer.
"""

from __future__ import annotations

import re

from services.brain.engines.phrases import PHRASES
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

QUESTIONS = {
    "intent": "Are you looking to buy a home to live in, to invest, or to rent?",
    "budget": "What budget range do you have in mind?",
    "area": "Which area or district would you prefer?",
    "property_type": "What type of property are you considering: condo, HDB, EC or landed?",
    "bedrooms": "How many bedrooms do you need?",
    "timeline": "When are you hoping to move or buy?",
}
# The persona's tone decides how the bot introduces itself.
GREETINGS = {
    "friendly": "Hi{name}! I'm {bot}, {agent}'s assistant. Thanks for reaching out.",
    "professional": "Good day{name}. I am {bot}, assistant to {agent}. Thank you for your enquiry.",
    "casual": "Hey{name}! {bot} here, helping {agent} out. Great to hear from you!",
}
THANKS = {
    "friendly": "Thanks, that's helpful!",
    "professional": "Thank you, that is helpful.",
    "casual": "Cool, thanks!",
}
MORE_THANKS = ("Got it, thank you.", "Noted, thanks!", "Great, thanks for that.")
TYPE_NAMES = {
    "condo": "condo",
    "hdb": "HDB flat",
    "landed": "landed home",
    "executive_condo": "EC",
    "commercial": "commercial unit",
}
MEDIA_NAMES = {
    "image": "photo",
    "file": "document",
    "audio": "voice message",
    "video": "video",
    "sticker": "sticker",
}


def compose(context: Context, recall: Recall, decision: Decision) -> Draft:
    """Short bubbles in the persona's tone, at most one question, the signature last."""
    if decision.language in PHRASES:
        return _compose_in(PHRASES[decision.language], context, recall, decision)
    persona = context.persona
    tone = persona.tone
    agent = context.agent_name
    bubbles: list[str] = []
    if decision.greet:
        first = (recall.profile.name or "").split(" ")[0]
        name = f" {first}" if first else ""
        greeting = GREETINGS[tone].format(name=name, bot=persona.bot_name, agent=agent)
        bubbles.append(persona.greeting or greeting)
    question = QUESTIONS.get(decision.question or "")
    match decision.action:
        case "ask":
            if decision.thank and not decision.greet:
                bubbles.append(_fresh(context, THANKS[tone], *MORE_THANKS))
        case "acknowledge_media":
            kinds = ", ".join(dict.fromkeys(MEDIA_NAMES.get(k, "file") for k in decision.media))
            bubbles.append(f"Thanks for the {kinds}! I've kept it for {agent} to look at.")
        case "answer_listings":
            bubbles.extend(_listings(decision, recall))
        case "offer_slots":
            bubbles.append(
                f"{agent} can meet you at one of these times:\n"
                + "\n".join(f"{n}. {slot.label}" for n, slot in enumerate(decision.slots, 1))
            )
            question = _fresh(
                context,
                "Which one suits you best?",
                "Which of these works for you?",
                "Would one of these suit you?",
            )
        case "slot_taken":
            bubbles.append("Sorry, that time was just taken.")
            if decision.slots:
                bubbles.append(
                    "These are still free:\n"
                    + "\n".join(f"{n}. {s.label}" for n, s in enumerate(decision.slots, 1))
                )
                question = _fresh(
                    context, "Would one of these work?", "Does one of these suit you instead?"
                )
        case "confirm_booking":
            label = decision.slot.label if decision.slot else "the time you chose"
            bubbles.append(
                f"You're booked with {agent} on {label}. "
                "You'll get a reminder the day before and an hour before."
            )
            if decision.link:
                bubbles.append(f"Add it to your calendar: {decision.link}")
            question = None
        case "reschedule":
            label = decision.slot.label if decision.slot else "the new time"
            bubbles.append(f"Done, your appointment with {agent} is moved to {label}.")
            if decision.link:
                bubbles.append(f"The calendar entry is updated: {decision.link}")
            question = None
        case "cancel":
            bubbles.append(
                f"Your appointment with {agent} is cancelled. Just message here when you'd "
                "like to find another time."
            )
            question = None
        case "handoff":
            bubbles.append(
                f"Sure, I've let {agent} know. {agent} will reply to you here personally."
            )
            question = None
        case "respect_pace":
            bubbles.append(
                "No problem at all, take your time. There's no pressure from us: I'm here "
                "whenever you'd like information on a place or a price range."
            )
            question = None
        case "close":
            bubbles.append(f"You're welcome! {agent} and I are here whenever you need us.")
            question = None
    if question:
        bubbles.append(question)
    bubbles = [b for b in bubbles if b]
    if not bubbles:
        bubbles = [f"Thanks! {agent} will get back to you shortly."]
    if persona.signature:
        bubbles[-1] = f"{bubbles[-1]}\n{persona.signature}"
    return Draft(bubbles=bubbles[:3] if len(bubbles) <= 3 else _fold(bubbles))


def _compose_in(
    words: dict[str, str], context: Context, recall: Recall, decision: Decision
) -> Draft:
    """The same replies in another language the persona allows."""
    persona = context.persona
    values = {"agent": context.agent_name, "bot": persona.bot_name}
    bubbles: list[str] = []
    if decision.greet:
        first = (recall.profile.name or "").split(" ")[0]
        bubbles.append(words["greeting"].format(name=f" {first}" if first else "", **values))
    question = words.get(decision.question or "")
    slots = "\n".join(f"{n}. {slot.label}" for n, slot in enumerate(decision.slots, 1))
    label = decision.slot.label if decision.slot else ""
    match decision.action:
        case "ask":
            if decision.thank and not decision.greet:
                bubbles.append(words["thanks"])
        case "acknowledge_media":
            bubbles.append(words["media"].format(**values))
        case "answer_listings":
            if decision.listings:
                cards = [_card(n, card) for n, card in enumerate(decision.listings, 1)]
                bubbles.append(words["listings"] + "\n" + "\n".join(cards))
            else:
                bubbles.append(words["no_listing"])
        case "offer_slots":
            bubbles.append(words["offer"].format(**values) + "\n" + slots)
            question = words["offer_question"]
        case "slot_taken":
            bubbles.append(words["taken"])
            if decision.slots:
                bubbles.append(words["still_free"] + "\n" + slots)
                question = words["taken_question"]
        case "confirm_booking" | "reschedule":
            key = "booked" if decision.action == "confirm_booking" else "moved"
            bubbles.append(words[key].format(label=label, **values))
            if decision.link:
                bubbles.append(words["calendar"].format(link=decision.link))
            question = None
        case "cancel" | "handoff" | "respect_pace" | "close":
            key = {"cancel": "cancelled", "respect_pace": "pace"}.get(
                decision.action, decision.action
            )
            bubbles.append(words[key].format(**values))
            question = None
    if question:
        bubbles.append(question)
    if not bubbles:
        bubbles = [words["safe"].format(**values)]
    if persona.signature:
        bubbles[-1] = f"{bubbles[-1]}\n{persona.signature}"
    return Draft(bubbles=bubbles[:3] if len(bubbles) <= 3 else _fold(bubbles))


def _fresh(context: Context, *options: str) -> str:
    """The first phrasing the bot has not used lately (Guard drops repetitions)."""
    said = {turn.text.strip() for turn in context.history[-12:] if turn.who == "bot"}
    return next((o for o in options if not any(t.startswith(o) for t in said)), options[-1])


def _listings(decision: Decision, recall: Recall) -> list[str]:
    if not decision.listings:
        wanted = _describe(recall.profile)
        return [
            f"I don't have a {wanted} listed right now. I'll keep an eye out and let you know."
            if wanted
            else "I don't have a listing that matches yet; I'll keep an eye out for you."
        ]
    lines = [_card(n, card) for n, card in enumerate(decision.listings, 1)]
    return ["Here's what matches:\n" + "\n".join(lines)]


def _card(number: int, card: ListingCard) -> str:
    kind = TYPE_NAMES.get(card.property_type, card.property_type)
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
    parts.append(TYPE_NAMES.get(profile.property_type or "", "home"))
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
