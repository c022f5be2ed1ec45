"""Appointments as calendar files: the lead's public link and the agent's copy.

The lead's link, `GET /v1/calendar/{token}.ics` on ingress's public listener, is named by
the appointment's unguessable token and shows only what the lead already knows: the time,
the agent's name and number.
"""

from __future__ import annotations

from aiohttp import web

from shared.ics import MEDIA_TYPE, CalendarEvent, render
from shared.local_time import when_label
from shared.logs import get_logger
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.appointments import CALENDAR_PATH, Appointment, AppointmentRepository

log = get_logger(__name__)
CALENDAR_ROUTE = CALENDAR_PATH.replace("{token}", "{token:[A-Za-z0-9_-]{16,128}}")


def _event(appointment: Appointment, agent: Agent, summary: str, description: str) -> CalendarEvent:
    # The same event (uid, sequence) in both calendars: only its words differ.
    return CalendarEvent(
        uid=f"{appointment.id}@realtybot",
        stamp=appointment.updated_at,
        start=appointment.start,
        end=appointment.end,
        summary=summary,
        description=description,
        organizer_name=agent.name,
        organizer_uri=f"tel:{agent.number}",
        cancelled=appointment.status == "cancelled",
        sequence=appointment.sequence,
    )


def lead_event(appointment: Appointment, agent: Agent) -> CalendarEvent:
    """The appointment as the lead's calendar shows it."""
    description = (
        f"Your appointment with {agent.name}, {when_label(appointment.start, agent.timezone)}"
        f" ({agent.timezone}). To change or cancel it, message {agent.name} on WhatsApp "
        f"at {agent.number}."
    )
    return _event(appointment, agent, f"Appointment with {agent.name}", description)


def agent_event(appointment: Appointment, agent: Agent, lead_name: str) -> CalendarEvent:
    """The appointment as the agent's calendar shows it (`lead_name` as the organization
    knows the lead)."""
    description = (
        f"{lead_name}, {when_label(appointment.start, agent.timezone)} ({agent.timezone}). "
        f"Booked on WhatsApp; thread {appointment.thread_id}."
    )
    return _event(appointment, agent, f"Appointment with {lead_name}", description)


def calendar_response(event: CalendarEvent) -> web.Response:
    """A calendar file as an HTTP answer."""
    return web.Response(
        body=render(event).encode(),
        headers={
            "Content-Type": f"{MEDIA_TYPE}; charset=utf-8",
            "Content-Disposition": 'attachment; filename="appointment.ics"',
            "Cache-Control": "private, no-store",
            "X-Robots-Tag": "noindex",
        },
    )


APPOINTMENTS = web.AppKey("calendar_appointments", AppointmentRepository)
AGENTS = web.AppKey("calendar_agents", AgentDirectory)


async def lead_calendar(request: web.Request) -> web.Response:
    """`GET /v1/calendar/{token}.ics`: the lead's calendar file, 404 for an unknown token."""
    appointments, agents = request.config_dict[APPOINTMENTS], request.config_dict[AGENTS]
    try:
        appointment = await appointments.by_ics_token(request.match_info["token"])
        agent = await agents.by_id(appointment.agent_id) if appointment else None
    except Exception as exc:
        log.warning("cannot read the calendar link: store unavailable", error=str(exc))
        return web.json_response({"error": "temporarily unavailable"}, status=503)
    if appointment is None or agent is None:
        return web.json_response({"error": "not found"}, status=404)
    return calendar_response(lead_event(appointment, agent))


def add_calendar_route(
    app: web.Application, appointments: AppointmentRepository, agents: AgentDirectory
) -> None:
    """Serve the leads' calendar links on a (public) application."""
    app[APPOINTMENTS] = appointments
    app[AGENTS] = agents
    app.router.add_get(CALENDAR_ROUTE, lead_calendar)
