"""Appointments through the admin API and the lead's public calendar link, on the running stack.

Appointments are booked the way the brain books them (the repository, on the stack's store);
what the agent and the lead see of them comes through the HTTP APIs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.repositories.appointments import Appointment, AppointmentRepository
from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead

LEAD_NAME = "Rachel Lim"


@dataclass
class Booking:
    """An onboarded agent, a lead who wrote to it, and a way to book them appointments."""

    stack: Stack
    agent: OnboardedAgent
    lead_id: str
    thread_id: str
    base: datetime  # a day well ahead, at 00:00 UTC

    async def book(self, hour: int, minute: int = 0, day: int = 0) -> Appointment:
        """Book 30 minutes for the lead at the given time (UTC) of the booking's day."""
        start = self.base + timedelta(days=day, hours=hour, minutes=minute)
        booked = await AppointmentRepository(self.stack.store).book(
            self.agent.org.id,
            self.agent.agent.id,
            self.lead_id,
            self.thread_id,
            start,
            start + timedelta(minutes=30),
            f"apt_{uuid.uuid4().hex}",
        )
        assert booked is not None
        return booked

    async def get(self, path: str, expect: int = 200) -> Any:
        """An admin GET with the agent's organization key."""
        return await self.stack.admin("GET", path, self.agent.org_key, expect=expect)


async def new_booking(stack: Stack) -> Booking:
    """A new organization whose agent has a thread with a lead."""
    agent = await stack.onboard()
    lead = new_lead()
    await stack.lead_says(agent, lead, "Hi, I'd like to know more", name=LEAD_NAME)
    db = stack.store.db

    async def thread() -> dict[str, Any] | None:
        found = await db["leads"].find_one({"phone": f"+{lead}"})
        return await db["threads"].find_one({"lead_id": found["_id"]}) if found else None

    stored = await eventually(thread, lambda t: t is not None)
    assert stored is not None
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Booking(stack, agent, stored["lead_id"], stored["_id"], base + timedelta(days=40))


@pytest.fixture(scope="module")
async def booking(stack: Stack) -> Booking:
    """One organization's booking setup, shared by this file's tests."""
    return await new_booking(stack)


async def test_the_organization_lists_its_appointments_by_time(booking: Booking) -> None:
    later = await booking.book(9, day=1)
    early = await booking.book(3)
    middle = await booking.book(5)
    listed = await booking.get(f"/v1/appointments?agent_id={booking.agent.agent.id}")
    mine = [a for a in listed["items"] if a["appointment_id"] in {later.id, early.id, middle.id}]
    assert [a["appointment_id"] for a in mine] == [early.id, middle.id, later.id]
    shown = mine[0]
    assert shown["agent_id"] == booking.agent.agent.id and shown["lead_id"] == booking.lead_id
    assert shown["thread_id"] == booking.thread_id and shown["status"] == "booked"
    assert datetime.fromisoformat(shown["start"]) == early.start
    assert datetime.fromisoformat(shown["end"]) == early.end
    assert shown["calendar_url"].endswith(f"/v1/calendar/{early.ics_token}.ics")
    assert "ics_token" not in shown

    # from/to bound the start; status filters; limit and next page through.
    day = booking.base.date().isoformat()
    next_day = (booking.base + timedelta(days=1)).date().isoformat()
    bounded = await booking.get(f"/v1/appointments?from={day}&to={next_day}")
    assert {a["appointment_id"] for a in bounded["items"]} >= {early.id, middle.id}
    assert later.id not in {a["appointment_id"] for a in bounded["items"]}
    at_five = (booking.base + timedelta(hours=5)).isoformat().replace("+00:00", "Z")
    from_five = await booking.get(f"/v1/appointments?from={at_five}&to={next_day}")
    assert [a["appointment_id"] for a in from_five["items"]] == [middle.id]
    first = await booking.get(f"/v1/appointments?limit=2&from={day}")
    assert len(first["items"]) == 2 and first["next"]
    rest = await booking.get(f"/v1/appointments?limit=2&from={day}&after={first['next']}")
    paged = [a["appointment_id"] for a in first["items"] + rest["items"]]
    assert paged[:3] == [early.id, middle.id, later.id]
    booked_only = await booking.get("/v1/appointments?status=booked")
    assert {a["status"] for a in booked_only["items"]} == {"booked"}

    for query, field in (
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("status=maybe", "status"),
        ("limit=0", "limit"),
        ("after=garbage", "after"),
    ):
        refused = await booking.get(f"/v1/appointments?{query}", expect=422)
        assert refused["error"]["code"] == "invalid" and field in refused["error"]["fields"]


async def test_one_appointment_and_its_calendar_file_for_the_agent(booking: Booking) -> None:
    appointment = await booking.book(7, 15)
    shown = await booking.get(f"/v1/appointments/{appointment.id}")
    assert shown["appointment_id"] == appointment.id and shown["status"] == "booked"
    missing = await booking.get(f"/v1/appointments/apt_{uuid.uuid4().hex}", expect=404)
    assert missing["error"]["code"] == "not_found"

    stack = booking.stack
    async with stack.http.get(
        f"{stack.admin_url}/v1/appointments/{appointment.id}.ics",
        headers={"Authorization": f"Bearer {booking.agent.org_key}"},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/calendar")
        text = await response.text()
    lines = text[:-2].replace("\r\n ", "").split("\r\n")
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    assert f"UID:{appointment.id}@realtybot" in lines
    assert f"DTSTART:{appointment.start:%Y%m%dT%H%M%SZ}" in lines
    assert f"DTEND:{appointment.end:%Y%m%dT%H%M%SZ}" in lines
    assert f"SUMMARY:Appointment with {LEAD_NAME}" in lines
    assert 'ORGANIZER;CN="Jason Tan":tel:' + booking.agent.agent.number in lines
    assert "STATUS:CONFIRMED" in lines
    async with stack.http.get(f"{stack.admin_url}/v1/appointments/{appointment.id}.ics") as r:
        assert r.status == 401  # the agent's copy needs the organization's key


async def test_the_lead_gets_the_calendar_file_by_its_link_alone(booking: Booking) -> None:
    appointment = await booking.book(11)
    shown = await booking.get(f"/v1/appointments/{appointment.id}")
    stack = booking.stack
    assert shown["calendar_url"] == f"{stack.ingress_url}/v1/calendar/{appointment.ics_token}.ics"
    async with stack.http.get(shown["calendar_url"]) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/calendar")
        assert "no-store" in response.headers["Cache-Control"]
        text = await response.text()
    lines = text[:-2].replace("\r\n ", "").split("\r\n")
    assert f"DTSTART:{appointment.start:%Y%m%dT%H%M%SZ}" in lines
    assert "SUMMARY:Appointment with Jason Tan" in lines
    assert booking.thread_id not in text and booking.lead_id not in text
    assert LEAD_NAME not in text  # only what the lead knows: the time and the agent
    for token in (f"cal_{uuid.uuid4().hex}{uuid.uuid4().hex}", appointment.ics_token[:-1]):
        async with stack.http.get(f"{stack.ingress_url}/v1/calendar/{token}.ics") as response:
            assert response.status == 404
    async with stack.http.get(f"{stack.ingress_url}/v1/calendar/x.ics") as response:
        assert response.status == 404
    # The admin listener does not serve the public link, nor ingress the admin routes.
    async with stack.http.get(f"{stack.admin_url}/v1/calendar/{appointment.ics_token}.ics") as r:
        assert r.status == 404
    async with stack.http.get(f"{stack.ingress_url}/v1/appointments/{appointment.id}") as r:
        assert r.status == 404


async def test_the_agent_cancels_and_the_time_is_free_again(booking: Booking) -> None:
    appointment = await booking.book(13)
    path = f"/v1/appointments/{appointment.id}/cancel"
    stack, key = booking.stack, booking.agent.org_key
    cancelled = await stack.admin("POST", path, key, {"reason": "the agent is ill"})
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "the agent is ill"
    audit = await stack.admin("GET", "/v1/audit-log", key)
    entries = [e for e in audit["items"] if e["target"] == appointment.id]
    assert [e["action"] for e in entries] == ["appointment.cancel"]
    assert entries[0]["before"] == {"status": "booked"}
    # Again: the same answer, nothing more written.
    again = await stack.admin("POST", path, key, {})
    assert again["status"] == "cancelled"
    audit = await stack.admin("GET", "/v1/audit-log", key)
    assert len([e for e in audit["items"] if e["target"] == appointment.id]) == 1
    # The lead's calendar now shows it cancelled; the time can be booked again.
    async with stack.http.get(cancelled["calendar_url"]) as response:
        text = await response.text()
    assert "STATUS:CANCELLED" in text and "SEQUENCE:1" in text
    assert (await booking.book(13)).status == "booked"
    refused = await stack.admin("POST", path, key, {"reason": 5}, expect=422)
    assert "reason" in refused["error"]["fields"]


async def test_a_done_appointment_cannot_be_cancelled(booking: Booking) -> None:
    appointment = await booking.book(17)
    await booking.stack.store.db["appointments"].update_one(
        {"_id": appointment.id}, {"$set": {"status": "done"}}
    )
    refused = await booking.stack.admin(
        "POST", f"/v1/appointments/{appointment.id}/cancel", booking.agent.org_key, {}, expect=409
    )
    assert refused["error"]["code"] == "appointment_done"


async def test_another_organization_sees_none_of_them(stack: Stack, booking: Booking) -> None:
    appointment = await booking.book(19)
    other = await new_booking(stack)
    theirs = await other.book(19)  # the same time: another agent's time is its own
    listed = await other.get("/v1/appointments")
    assert [a["appointment_id"] for a in listed["items"]] == [theirs.id]
    filtered = await other.get(f"/v1/appointments?agent_id={booking.agent.agent.id}")
    assert filtered["items"] == []
    for path in (f"/v1/appointments/{appointment.id}", f"/v1/appointments/{appointment.id}.ics"):
        assert (await other.get(path, expect=404))["error"]["code"] == "not_found"
    cancel = f"/v1/appointments/{appointment.id}/cancel"
    await stack.admin("POST", cancel, other.agent.org_key, {}, expect=404)
    assert (await booking.get(f"/v1/appointments/{appointment.id}"))["status"] == "booked"


async def test_the_routes_are_described(stack: Stack) -> None:
    async with stack.http.get(f"{stack.admin_url}/v1/openapi.json") as response:
        spec = await response.json()
    paths = spec["paths"]
    assert set(paths["/v1/appointments"]) == {"get"}
    assert set(paths["/v1/appointments/{appointment_id}"]) == {"get"}
    assert set(paths["/v1/appointments/{appointment_id}/cancel"]) == {"post"}
    calendar = paths["/v1/appointments/{appointment_id}.ics"]["get"]
    assert [p["name"] for p in calendar["parameters"]] == ["appointment_id"]
    agent_availability = paths["/v1/agents/{agent_id}/availability"]["put"]
    body = agent_availability["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert "slot_minutes" in schema["properties"]
