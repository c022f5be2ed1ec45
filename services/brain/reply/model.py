"""The typed input and output of the brain's five layers.

Understand reads the lead's new messages; Recall gathers what the reply may draw on; Decide
picks the next action under rules; Compose writes it in the agent's persona; Guard checks it
before anything leaves. Both engines (offline rules, Anthropic) speak these types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.repositories.agents import Persona
from shared.repositories.listings import Listing

Intent = Literal["own_stay", "investment", "rent"]
PropertyKind = Literal["condo", "hdb", "landed", "executive_condo", "commercial"]
Request = Literal[
    "book",  # wants a viewing, a call or a consultation
    "reschedule",
    "cancel",
    "human",  # wants the agent, a person
    "listings",  # asks what is available
    "price",  # asks about prices, yields, valuations
    "greeting",
    "thanks",
    "not_interested",
    "later",  # not now, will come back
]
Action = Literal[
    "ask",  # one qualifying question (after a greeting on the first reply)
    "answer_listings",  # matching listings, or that none match
    "offer_slots",  # two or three free slots
    "confirm_booking",
    "slot_taken",  # the chosen slot went meanwhile: other slots offered
    "reschedule",
    "cancel",
    "handoff",  # the agent takes over
    "acknowledge_media",  # a photo, document or voice note kept for the agent
    "respect_pace",  # a resistant lead: no pushing
    "close",  # thanks, nothing more needed
]
Stage = Literal[
    "new", "qualifying", "qualified", "booking", "booked", "nurturing", "handed_off", "closed"
]
QUALIFYING_FIELDS = ("intent", "budget", "area", "property_type", "bedrooms", "timeline")


class Frozen(BaseModel):
    """Immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Profile(Frozen):
    """What the lead told us, kept on the thread."""

    name: str | None = None
    intent: Intent | None = None
    budget: int | None = Field(default=None, gt=0)  # in the organization's currency
    area: str | None = None  # an area ("Tampines", "East") or a district ("D15")
    property_type: PropertyKind | None = None
    bedrooms: int | None = Field(default=None, ge=0, le=20)
    timeline: str | None = None

    @classmethod
    def stored(cls, fields: dict[str, Any] | None) -> Profile:
        """The profile as kept on a thread; fields this version does not know are dropped."""
        return cls.model_validate(
            {k: v for k, v in (fields or {}).items() if k in cls.model_fields}
        )

    def merged(self, newer: Profile) -> Profile:
        """This profile updated with every field `newer` knows."""
        return self.model_copy(update=newer.model_dump(exclude_none=True))

    def missing(self) -> list[str]:
        """The qualifying fields still unknown, in the order they are asked."""
        return [name for name in QUALIFYING_FIELDS if getattr(self, name) is None]


class LeadMessage(Frozen):
    """One inbound message as Understand sees it."""

    type: str  # text, image, file, audio, video, location, list_reply, button_reply, ...
    text: str | None = None
    at: datetime
    choice_id: str | None = None  # a list or button reply
    choice_title: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    place: str | None = None  # a shared location's name or address
    media_kind: str | None = None  # image, file, audio, video, sticker
    caption: str | None = None


class Turn(Frozen):
    """One message of the thread's history."""

    who: Literal["lead", "bot", "agent"]
    text: str
    at: datetime


class TimeAsked(Frozen):
    """A time the lead named: exact ("tomorrow 3pm") or a window ("Sat afternoon")."""

    start: datetime
    end: datetime
    exact: bool


class Understanding(Frozen):
    """What the lead's new messages say."""

    facts: Profile = Field(default_factory=Profile)
    requests: list[Request] = Field(default_factory=list)
    sentiment: Literal["positive", "neutral", "negative"] = "neutral"
    resistant: bool = False  # "just browsing", "agents keep calling me"
    urgency: Literal["low", "normal", "high"] = "normal"
    when: TimeAsked | None = None
    picked_slot: int | None = None  # index into the slots offered last
    media: list[str] = Field(default_factory=list)  # kinds received: image, file, audio ...
    district: str | None = None  # from a shared location
    language: str | None = None  # the lead's language, when not the persona's


class ListingCard(Frozen):
    """A real listing the reply may cite, with nothing added."""

    listing_id: str
    project: str
    district: str
    property_type: str
    bedrooms: int
    price: int
    size_sqft: int | None = None
    tenure: str | None = None

    @classmethod
    def of(cls, listing: Listing) -> ListingCard:
        """What a reply may say of a stored listing."""
        return cls(
            listing_id=listing.id,
            **{name: getattr(listing, name) for name in cls.model_fields if name != "listing_id"},
        )


class SlotOption(Frozen):
    """A free time of the agent, with how the lead reads it."""

    start: datetime
    end: datetime
    label: str  # "Sat 28 Nov, 3:00 pm", in the agent's time zone


class AppointmentView(Frozen):
    """The thread's booked appointment."""

    appointment_id: str
    start: datetime
    end: datetime
    label: str


class Context(Frozen):
    """Everything a reply starts from: who speaks, to whom, and what was said."""

    org_id: str
    agent_id: str
    thread_id: str
    lead_id: str
    agent_name: str
    persona: Persona
    timezone: str
    currency: str = "SGD"
    now: datetime
    stage: Stage = "new"
    profile: Profile = Field(default_factory=Profile)
    new_messages: list[LeadMessage]
    history: list[Turn] = Field(default_factory=list)  # oldest first, new messages excluded
    asked: list[str] = Field(default_factory=list)  # qualifying fields already asked about
    offered: list[SlotOption] = Field(default_factory=list)  # slots offered last
    colleague_threads: list[dict[str, Any]] = Field(default_factory=list)


class Recall(Frozen):
    """What the reply may draw on beyond the messages."""

    profile: Profile
    listings: list[ListingCard] = Field(default_factory=list)  # matching, best first
    free_slots: list[SlotOption] = Field(default_factory=list)
    appointment: AppointmentView | None = None
    colleague_threads: list[dict[str, Any]] = Field(default_factory=list)
    complete: bool = True  # False: the reads failed, only the conversation is known


class Decision(Frozen):
    """The next action and what it needs."""

    action: Action
    stage: Stage
    greet: bool = False  # the first reply opens with the persona's greeting
    thank: bool = False  # the lead told us something: say thanks before the question
    question: str | None = None  # the qualifying field to ask about (at most one)
    listings: list[ListingCard] = Field(default_factory=list)
    slots: list[SlotOption] = Field(default_factory=list)
    slot: SlotOption | None = None  # the one booked, rescheduled to or cancelled
    link: str | None = None  # the booking's calendar file, for the lead
    language: str | None = None  # the lead's, when the persona allows it (else the persona's)
    media: list[str] = Field(default_factory=list)


class Draft(Frozen):
    """The bubbles of a reply, before Guard."""

    bubbles: list[str]


class Verdict(Frozen):
    """Guard's judgement: the bubbles that may leave, and what it removed or replaced."""

    bubbles: list[str]
    blocked: list[str] = Field(default_factory=list)  # reasons, e.g. "scarcity", "promise"
