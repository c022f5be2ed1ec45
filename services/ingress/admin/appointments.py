"""Appointments the bot booked: the organization's calendar, cancellation, calendar files."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from aiohttp import web
from pydantic import Field

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from services.ingress.calendar import agent_event, calendar_response
from shared.repositories.appointments import (
    Appointment,
    AppointmentClosed,
    AppointmentStatus,
)

STATUSES: tuple[AppointmentStatus, ...] = get_args(AppointmentStatus)


class CancelRequest(api.Body):
    """Why the appointment is cancelled (optional)."""

    reason: str | None = Field(default=None, max_length=500)


def _cursor(appointment: Appointment) -> str:
    return f"{int(appointment.start.timestamp() * 1000)}.{appointment.id}"


def _after(call: api.Call) -> tuple[datetime, str] | None:
    raw = call.request.query.get("after")
    if raw is None:
        return None
    millis, _, appointment_id = raw.partition(".")
    if not millis.isdigit() or not appointment_id:
        raise api.invalid_query("after", "must be a `next` value")
    return datetime.fromtimestamp(int(millis) / 1000, UTC), appointment_id


def _base_url(call: api.Call) -> str:
    return str(call.app[deps.SETTINGS].public_base_url)


async def appointment_of(call: api.Call) -> Appointment:
    """The appointment named by the path, if it belongs to the caller's organization."""
    appointment = await call.app[deps.APPOINTMENTS].get(call.org_id, call.param("appointment_id"))
    return api.found(appointment, "appointment")


routes = api.RouteTable()


@routes.add("GET", "/v1/appointments")
async def list_appointments(call: api.Call) -> web.StreamResponse:
    """The organization's appointments by start time; agent_id, status, from/to (ISO dates or
    times, bounding the start), limit, after=<next> pages on."""
    query = call.request.query
    limit = call.query_int("limit", 50, 1, 200)
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise api.invalid_query("status", f"must be one of {', '.join(STATUSES)}")
    page = await call.app[deps.APPOINTMENTS].list_for_org(
        call.org_id,
        agent_id=query.get("agent_id"),
        start=call.query_time("from"),
        end=call.query_time("to"),
        status=next((s for s in STATUSES if s == status), None),
        after=_after(call),
        limit=limit,
    )
    base_url = _base_url(call)
    return api.page_response(page, limit, lambda a: a.public(base_url), _cursor)


# Declared before the plain one, which would otherwise take "apt_x.ics" as an id.
@routes.add("GET", "/v1/appointments/{appointment_id}.ics")
async def appointment_calendar(call: api.Call) -> web.StreamResponse:
    """One appointment as an iCalendar file (text/calendar) for the agent's calendar."""
    appointment = await appointment_of(call)
    agent = await call.app[deps.AGENTS].get_in_org(call.org_id, appointment.agent_id)
    agent = api.found(agent, "appointment")
    lead = await call.app[deps.LEADS].view_for_org(call.org_id, appointment.lead_id)
    lead_name = "a lead"
    if lead is not None:
        lead_name = lead.names[-1] if lead.names else (lead.phone or lead.username or "a lead")
    return calendar_response(agent_event(appointment, agent, lead_name))


@routes.add("GET", "/v1/appointments/{appointment_id}")
async def get_appointment(call: api.Call) -> web.StreamResponse:
    """One appointment."""
    return api.json_response((await appointment_of(call)).public(_base_url(call)))


@routes.add("POST", "/v1/appointments/{appointment_id}/cancel")
async def cancel_appointment(call: api.Call, body: CancelRequest) -> web.StreamResponse:
    """Cancel an appointment and free the agent's time (the lead is not messaged)."""
    before = await appointment_of(call)
    try:
        after = await call.app[deps.APPOINTMENTS].cancel(call.org_id, before.id, reason=body.reason)
    except AppointmentClosed:
        raise api.ApiError(
            409, "appointment_done", "a past (done) appointment cannot be cancelled"
        ) from None
    after = api.found(after, "appointment")
    if before.status != after.status:
        await call.audited(
            "appointment.cancel",
            before.id,
            before={"status": before.status},
            after={"status": after.status, "reason": body.reason},
        )
    return api.json_response(after.public(_base_url(call)))
