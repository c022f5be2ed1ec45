"""Scripted conversations through the whole pipeline with the offline engine.

Each asserts what the lead receives (at the Gupshup sandbox) and what is stored.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead


class Lead:
    """A lead chatting with an agent: says something, reads the whole reply."""

    def __init__(self, stack: Stack, agent: OnboardedAgent, name: str = "Rachel Lim") -> None:
        self.stack, self.agent, self.name = stack, agent, name
        self.phone = new_lead()
        self.seen = 0

    async def says(self, text: str) -> list[str]:
        """Send a message; the bubbles of the reply to it."""
        replies = await self._replies()
        await self.stack.lead_says(self.agent, self.phone, text, name=self.name)
        return await self.reply_after(replies)

    async def reply_after(self, replies_before: int) -> list[str]:
        """The bubbles of the next reply, once all of them reached the lead."""
        reply = await eventually(
            self._latest_reply_if_newer(replies_before), lambda r: r is not None, timeout=20
        )
        assert reply is not None
        count = len(reply["command"]["bubbles"])
        sent = await eventually(
            lambda: self.stack.sent_to(self.agent, self.phone),
            lambda s: len(s) >= self.seen + count,
        )
        bubbles = [text_of(m) for m in sent[self.seen : self.seen + count]]
        self.seen += count
        return bubbles

    def _latest_reply_if_newer(self, before: int) -> Any:
        async def probe() -> dict[str, Any] | None:
            replies = await self._all_replies()
            return replies[-1] if len(replies) > before else None

        return probe

    async def _all_replies(self) -> list[dict[str, Any]]:
        thread = await self.thread()
        if thread is None:
            return []
        cursor = self.stack.store.db["replies"].find({"thread_id": thread["_id"]})
        return sorted(await cursor.to_list(), key=lambda r: r["created_at"])

    async def _replies(self) -> int:
        return len(await self._all_replies())

    async def thread(self) -> dict[str, Any] | None:
        lead = await self.stack.store.db["leads"].find_one({"phone": "+" + self.phone})
        if lead is None:
            return None
        found: dict[str, Any] | None = await self.stack.store.db["threads"].find_one(
            {"agent_id": self.agent.agent.id, "lead_id": lead["_id"]}
        )
        return found


def text_of(sent: dict[str, Any]) -> str:
    """What the lead reads of a message: its text, or a list message's body."""
    return str(sent.get("text") or (sent.get("message") or {}).get("body", ""))


def questions(bubbles: list[str]) -> list[str]:
    return re.findall(r"[^.!?\n]*\?", "\n".join(bubbles))


def slot_lines(bubbles: list[str]) -> list[str]:
    """The numbered slots offered in a reply ("1. Mon 30 Nov, 10:00 am")."""
    return re.findall(r"^\d\. (.+)$", "\n".join(bubbles), re.MULTILINE)


async def appointments(stack: Stack, agent: OnboardedAgent) -> list[dict[str, Any]]:
    listed = await stack.admin("GET", f"/v1/appointments?agent_id={agent.agent.id}", agent.org_key)
    items: list[dict[str, Any]] = listed["items"]
    return items


async def test_first_time_buyer_is_qualified_and_booked_in_a_few_turns(stack: Stack) -> None:
    agent = await stack.onboard(bot_name="Mia")
    lead = Lead(stack, agent)

    first = await lead.says("Hi, I'm looking to buy my first home for my family")
    assert first[0].startswith("Hi Rachel! I'm Mia, Jason Tan's assistant")
    assert questions(first) == ["What budget range do you have in mind?"]  # intent is known

    second = await lead.says("Around 1.2m, in Tampines")
    assert questions(second) == ["How many bedrooms do you need?"]
    third = await lead.says("3 bedrooms, we'd like to move within 6 months")
    offered = slot_lines(third)
    assert 2 <= len(offered) <= 3, third
    assert len(questions(third)) == 1

    booked = await lead.says("The second one please")
    assert offered[1] in booked[0] and "booked with Jason Tan" in booked[0], booked
    link = next(b for b in booked if "/v1/calendar/" in b).split(": ", 1)[1]

    [appointment] = await appointments(stack, agent)
    assert appointment["status"] == "booked"
    thread = await lead.thread()
    assert thread is not None and thread["stage"] == "booked"
    assert thread["profile"] == {
        "name": "Rachel Lim",
        "intent": "own_stay",
        "budget": 1_200_000,
        "area": "Tampines",
        "bedrooms": 3,
        "timeline": "6 months",
    }
    base = str(stack.settings.public_base_url).rstrip("/")
    assert link.startswith(base + "/v1/calendar/"), link
    async with stack.http.get(stack.ingress_url + link[len(base) :]) as r:
        assert r.status == 200 and r.content_type == "text/calendar"
        assert "DTSTART:" in await r.text()


async def test_resistant_lead_is_not_pushed_to_book(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent)
    reply = await lead.says("Just browsing, agents keep calling me. Looking to buy in Bedok")
    text = "\n".join(reply)
    assert "no pressure" in text.lower()
    assert questions(reply) == [] and not slot_lines(reply)
    assert "book" not in text.lower()
    thread = await lead.thread()
    assert thread is not None and thread["stage"] == "nurturing"


async def test_investor_gets_only_real_listings_of_the_district_and_budget(
    stack: Stack,
) -> None:
    agent = await stack.onboard()
    listings = [
        ("Amber Park", "D15", 1_450_000, "available"),  # the only match
        ("Seaside Residences", "D15", 2_600_000, "available"),  # over budget
        ("Nassim Hill", "D10", 1_300_000, "available"),  # another district
        ("Marine Blue", "D15", 1_380_000, "sold"),  # not available
    ]
    for project, district, price, status in listings:
        await stack.admin(
            "POST",
            "/v1/listings",
            agent.org_key,
            {
                "project": project,
                "district": district,
                "property_type": "condo",
                "bedrooms": 2,
                "price": price,
                "size_sqft": 807,
                "tenure": "freehold",
                "status": status,
            },
            expect=201,
        )
    lead = Lead(stack, agent)
    reply = await lead.says(
        "I'm an investor looking at District 15, 2 bedroom condo, budget 1.5m. Any units?"
    )
    text = "\n".join(reply)
    assert "Amber Park (D15): 2-bedroom condo, $1,450,000, 807 sqft, freehold" in text
    for other in ("Seaside", "Nassim", "Marine Blue", "$2,600,000", "$1,300,000"):
        assert other not in text
    assert not re.search(r"yield|return|guarantee|only \d", text, re.IGNORECASE)


async def test_a_booking_is_rescheduled_and_then_cancelled(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent)
    offer = await lead.says(
        "Hi, looking to buy a 3 bedroom condo in Bishan, budget 2m, next year. Can I book a call?"
    )
    offered = slot_lines(offer)
    assert offered, offer
    await lead.says("1")
    [booked] = await appointments(stack, agent)

    again = await lead.says("Something came up, can we reschedule?")
    moved_to = slot_lines(again)
    assert moved_to and len(questions(again)) == 1
    choice = moved_to[-1]
    moved = await lead.says(f"option {len(moved_to)}")
    assert choice in moved[0] and "moved" in moved[0]
    [rescheduled] = await appointments(stack, agent)
    assert rescheduled["appointment_id"] == booked["appointment_id"]
    assert rescheduled["start"] != booked["start"]
    assert rescheduled["status"] == "rescheduled"

    cancelled = await lead.says("Sorry, I need to cancel")
    assert "cancelled" in cancelled[0]
    [gone] = await appointments(stack, agent)
    assert gone["status"] == "cancelled"


async def test_a_burst_of_three_messages_is_answered_once(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent)
    for text in ("Hi", "looking to rent a condo", "in Orchard, budget 5k"):
        await stack.lead_says(agent, lead.phone, text)
    reply = await lead.reply_after(0)
    await asyncio.sleep(1.5)  # room for a second reply, which must not come
    thread = await lead.thread()
    assert thread is not None
    replies = await stack.store.db["replies"].find({"thread_id": thread["_id"]}).to_list()
    assert len(replies) == 1 and len(replies[0]["answers"]) == 3
    # All three were considered: intent, area and budget are known, so bedrooms is asked.
    assert questions(reply) == ["How many bedrooms do you need?"]
    assert len(await stack.sent_to(agent, lead.phone)) == len(reply)


async def test_stop_in_the_middle_of_a_booking_ends_it(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent)
    offer = await lead.says(
        "Looking to buy a 2 bedroom in Punggol for my family, 900k, in 3 months. Can we meet?"
    )
    assert slot_lines(offer)
    confirmation = await lead.says("STOP")
    assert len(confirmation) == 1 and "won't receive any more messages" in confirmation[0]
    await stack.lead_says(agent, lead.phone, "the first one")
    await asyncio.sleep(2)
    assert len(await stack.sent_to(agent, lead.phone)) == lead.seen
    assert await appointments(stack, agent) == []


async def test_a_request_for_a_human_hands_the_thread_to_the_agent(stack: Stack) -> None:
    agent = await stack.onboard()
    # The agent's own phone wrote to the business number today: its window is open.
    own_phone = new_lead()
    await stack.admin(
        "PATCH", f"/v1/agents/{agent.agent.id}", agent.org_key, {"notify_number": "+" + own_phone}
    )
    await stack.lead_says(agent, own_phone, "test", name="Jason Tan")
    await eventually(lambda: stack.sent_to(agent, own_phone), lambda s: len(s) >= 1)

    lead = Lead(stack, agent)
    reply = await lead.says("Can I talk to a real person please?")
    assert "Jason Tan will reply to you here personally" in " ".join(reply)
    handed = await stack.admin("GET", "/v1/threads?state=human", agent.org_key)
    thread = await lead.thread()
    assert thread is not None
    assert [t["thread_id"] for t in handed["items"]] == [thread["_id"]]
    notices = await eventually(
        lambda: stack.sent_to(agent, own_phone),
        lambda s: any("would like to speak with you" in m.get("text", "") for m in s),
    )
    assert any(lead.phone in m.get("text", "") for m in notices)

    # The bot stays silent on the thread while it is the agent's.
    await stack.lead_says(agent, lead.phone, "Hello?")
    await asyncio.sleep(1.5)
    assert len(await stack.sent_to(agent, lead.phone)) == lead.seen


async def test_a_time_picked_from_the_list_message_is_booked(stack: Stack) -> None:
    agent = await stack.onboard()
    lead = Lead(stack, agent)
    await lead.says(
        "Hi, buying a 4 bedroom landed home in Bukit Timah for my family, 5m, this year. "
        "When can I meet Jason?"
    )
    sent = await stack.sent_to(agent, lead.phone)
    offer = sent[-1]
    assert offer["type"] == "list", offer
    rows = offer["message"]["items"][0]["options"]
    assert 2 <= len(rows) <= 3 and rows[1]["postbackText"] == "slot:1"
    before = await lead._replies()
    await stack.control(
        "POST",
        "/sandbox/v1/inbound",
        {
            "app": agent.app,
            "from": lead.phone,
            "name": lead.name,
            "message": {
                "type": "list_reply",
                "payload": {
                    "title": rows[1]["title"],
                    "id": "row-2",
                    "postbackText": rows[1]["postbackText"],
                    "reply": rows[1]["title"],
                },
            },
        },
    )
    booked = await lead.reply_after(before)
    assert rows[1]["title"] in booked[0] and "booked" in booked[0], booked
    [appointment] = await appointments(stack, agent)
    assert appointment["status"] == "booked"
