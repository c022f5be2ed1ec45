"""Guard: nothing leaves that invents pressure, promises money, cites unknown figures or
another person's data; at most one question; WhatsApp-sized; no repetition.

A reply with blocked content is replaced as a whole (by the offline engine's reply for the
same decision, itself guarded) and counted; style problems are trimmed in place.
"""

from __future__ import annotations

import re

from services.brain.reply.model import Context, Decision, Draft, Recall, Verdict

MAX_BUBBLES = 3
MAX_BUBBLE_CHARS = 600
SCARCITY = re.compile(
    r"\b(?:only \d+ (?:units?|left|remaining|available)|selling (?:fast|out)|"
    r"last (?:few|remaining|\d+) units?|limited units?|high demand|many (?:buyers|people) "
    r"(?:are )?(?:interested|looking|viewing)|don't miss|before it'?s gone|won't last|"
    r"almost sold out|hot property)\b",
    re.IGNORECASE,
)
PROMISE = re.compile(
    r"\b(?:guarantee[sd]?|assured (?:returns?|profit|rental)|risk[- ]free|sure (?:profit|win)|"
    r"will (?:definitely |surely )?(?:appreciate|increase in value|go up in value)|"
    r"can't lose|cannot lose|"
    r"\d+(?:\.\d+)?\s?%\s(?:\w+\s)?(?:yield|returns?|roi|appreciation|profit))",
    re.IGNORECASE,
)
# Questions end with "?" or, in Chinese, the full-width question mark (U+FF1F).
QUESTION_MARK = re.compile("[?\uff1f]")
QUESTION = re.compile("[^.!?\u3002\uff01\uff1f\n]*[?\uff1f]")
MONEY = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)\s?(k|m|mil|million)?\b", re.IGNORECASE)
PHONE = re.compile(r"(?<![\w$])\+?\d[\d\s-]{6,}\d(?![\w,])")
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")


def guard(context: Context, recall: Recall, decision: Decision, draft: Draft) -> Verdict:
    """The bubbles that may leave, and why anything was blocked."""
    bubbles = [b.strip() for b in draft.bubbles if b and b.strip()]
    blocked: list[str] = []
    text = "\n".join(bubbles)
    if SCARCITY.search(text):
        blocked.append("scarcity")
    if PROMISE.search(text):
        blocked.append("promise")
    if _unknown_amounts(text, recall, decision):
        blocked.append("unknown_figure")
    if _foreign_data(text, context):
        blocked.append("other_data")
    if blocked:
        return Verdict(bubbles=[], blocked=blocked)
    bubbles = _one_question(bubbles)
    bubbles = _not_repeated(bubbles, context)
    bubbles = [_shorten(b) for b in bubbles][:MAX_BUBBLES]
    if not bubbles:
        return Verdict(bubbles=[], blocked=["empty"])
    signature = context.persona.signature
    if signature and signature not in bubbles[-1]:
        bubbles[-1] = f"{bubbles[-1]}\n{signature}"
    return Verdict(bubbles=bubbles)


def safe_reply(context: Context) -> list[str]:
    """What goes when nothing else may: true, harmless, no question."""
    text = f"Thanks for your message! {context.agent_name} will get back to you shortly."
    signature = context.persona.signature
    return [f"{text}\n{signature}" if signature else text]


def _amount(number: str, unit: str | None) -> int:
    value = float(number.replace(",", ""))
    scale = {"k": 1_000, "m": 1_000_000, "mil": 1_000_000, "million": 1_000_000}
    return round(value * scale.get((unit or "").lower(), 1))


def _unknown_amounts(text: str, recall: Recall, decision: Decision) -> bool:
    """A dollar figure that is neither a cited listing's price nor the lead's own budget."""
    known = {card.price for card in (*decision.listings, *recall.listings)}
    if recall.profile.budget:
        known.add(recall.profile.budget)
    for match in MONEY.finditer(text):
        amount = _amount(match.group(1), match.group(2))
        if not any(abs(amount - k) <= max(k * 0.005, 1) for k in known):
            return True
    return False


def _foreign_data(text: str, context: Context) -> bool:
    """Phone numbers or e-mail addresses: never ours to pass on in a reply."""
    return bool(EMAIL.search(text) or PHONE.search(_without_times_and_prices(text)))


def _without_times_and_prices(text: str) -> str:
    # Slot lists ("1. Sat 28 Nov, 3:00 pm") and prices ("$1,500,000") are not phone numbers.
    return MONEY.sub("", re.sub(r"\d{1,2}:\d{2}", "", text))


def _one_question(bubbles: list[str]) -> list[str]:
    """Keep the first question; later questions go (a bubble that was only a question too)."""
    kept: list[str] = []
    asked = False
    for bubble in bubbles:
        mark = QUESTION_MARK.search(bubble)
        if mark is None:
            kept.append(bubble)
            continue
        if asked:
            remainder = QUESTION.sub("", bubble).strip()
            if remainder:
                kept.append(remainder)
            continue
        first = mark.end()
        rest = QUESTION.sub("", bubble[first:]).strip()
        kept.append((bubble[:first] + (" " + rest if rest else "")).strip())
        asked = True
    return kept


def _normal(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _not_repeated(bubbles: list[str], context: Context) -> list[str]:
    """Drop a bubble the bot sent word for word in its recent messages."""
    signature = _normal(context.persona.signature or "")

    def plain(text: str) -> str:
        normal = _normal(text)
        return normal.removesuffix(signature).strip() if signature else normal

    said = {plain(t.text) for t in context.history[-12:] if t.who == "bot"}
    kept = []
    for bubble in bubbles:
        if plain(bubble) and plain(bubble) in said:
            continue
        kept.append(bubble)
    return kept


def _shorten(bubble: str) -> str:
    if len(bubble) <= MAX_BUBBLE_CHARS:
        return bubble
    cut = bubble[:MAX_BUBBLE_CHARS]
    end = max(cut.rfind(". "), cut.rfind("\n"))
    return cut[: end + 1].strip() if end > MAX_BUBBLE_CHARS // 2 else cut.rstrip() + "…"
