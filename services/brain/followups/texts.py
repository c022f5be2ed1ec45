"""What follow-ups and reminders say: short, in the agent's persona, no questions, no pressure.

Pure functions of the agent, the lead's name and profile, and the time; English only (the
lead's language is not known when a follow-up goes).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from services.brain.engines.phrases import PROPERTY_NAMES
from services.brain.reply.model import Profile
from shared.local_time import when_label
from shared.repositories.agents import Agent, Persona

HELLO = {"friendly": "Hi", "professional": "Hello", "casual": "Hey"}
# Spelled out: a follow-up is read without the conversation that named the property.
THINGS = {**PROPERTY_NAMES, "executive_condo": "executive condo", "commercial": "commercial space"}


def _hello(persona: Persona, name: str | None) -> str:
    first = (name or "").split(" ")[0]
    return f"{HELLO[persona.tone]} {first}," if first else f"{HELLO[persona.tone]},"


def _signed(persona: Persona, text: str) -> str:
    return f"{text}\n{persona.signature}" if persona.signature else text


def describe_search(profile: Profile) -> str:
    """What the lead is looking for, from their profile: "your search for a condo in Bishan"."""
    words = []
    if profile.bedrooms:
        words.append(f"{profile.bedrooms}-bedroom")
    thing = THINGS.get(profile.property_type or "")
    words.append(thing or "home")
    if profile.intent == "rent":
        words.append("to rent")
    if profile.area:
        words.append(f"in {profile.area}")
    if len(words) == 1 and thing is None:
        return "your property search"
    phrase = " ".join(words)
    article = "an" if phrase[0] in "aeiou8" or phrase.startswith(("HDB", "11-", "18-")) else "a"
    return f"your search for {article} {phrase}"


def follow_up_text(step: int, steps: int, agent: Agent, name: str | None, profile: Profile) -> str:
    """A short nudge in the agent's persona, by step: no questions, no pressure."""
    persona = agent.persona
    hello = _hello(persona, name)
    search = describe_search(profile)
    if step >= steps:
        text = (
            f"{hello} it's {persona.bot_name}, {agent.name}'s assistant. I won't keep checking "
            f"in, but I'm here whenever you'd like help with {search}."
        )
    elif step == 1:
        text = (
            f"{hello} just checking in on {search}. Whenever you're ready, I'm happy to help "
            f"with listings, prices or a time to talk with {agent.name}."
        )
    elif step == 2:
        text = (
            f"{hello} {agent.name} is keeping an eye out for you on {search}. Message here "
            "any time you'd like an update."
        )
    else:
        text = (
            f"{hello} hope all is well! If you're still thinking about {search}, "
            f"{agent.name} and I are here to help."
        )
    return _signed(persona, text)


def reminder_text(agent: Agent, name: str | None, start: datetime, now: datetime) -> str:
    """The appointment's reminder, its day said as the lead reads it today."""
    zone = ZoneInfo(agent.timezone)
    day, clock = when_label(start, agent.timezone).split(", ")
    days_ahead = (start.astimezone(zone).date() - now.astimezone(zone).date()).days
    if days_ahead == 0:
        when = f"today at {clock}"
    elif days_ahead == 1:
        when = f"tomorrow, {day} at {clock}"
    else:
        when = f"on {day} at {clock}"
    text = (
        f"{_hello(agent.persona, name)} a reminder: your appointment with {agent.name} is "
        f"{when}. If you need another time, just reply here."
    )
    return _signed(agent.persona, text)
