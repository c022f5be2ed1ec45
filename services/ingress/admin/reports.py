"""Reports on the organization's work: where leads come from and convert, what WhatsApp bills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from shared.models import utcnow
from shared.repositories.costs import GRANULARITIES

DEFAULT_DAYS = 30
MAX_DAYS = 366  # a year, leap day included

routes = api.RouteTable()


@routes.add("GET", "/v1/reports/attribution")
async def attribution_report(call: api.Call) -> web.StreamResponse:
    """Leads, conversions and conversion rate per agent and source; from/to (ISO dates) bound when
    the threads started."""
    query = call.request.query
    try:
        # By default the 30 days up to the end of today (UTC): stable within a day.
        tomorrow = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        end = datetime.fromisoformat(query["to"]) if "to" in query else tomorrow
        start = (
            datetime.fromisoformat(query["from"]) if "from" in query else end - timedelta(days=30)
        )
    except ValueError:
        raise api.invalid_query("from/to", "must be ISO-8601 dates or times") from None
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    rows = await call.app[deps.CONVERSIONS].report(call.org_id, start, end)
    return api.json_response({"from": start.isoformat(), "to": end.isoformat(), "rows": rows})


@routes.add("GET", "/v1/reports/costs")
async def cost_report(call: api.Call) -> web.StreamResponse:
    """Billable and free WhatsApp messages per period, agent and pricing category (estimated costs
    once prices are set); from/to (dates, both included, in the organization's time zone;
    default the last 30 days), period=day|month (default day)."""
    org = api.found(await call.app[deps.ORGS].get(call.org_id), "organization")
    raw_period = call.request.query.get("period", "day")
    period = next((g for g in GRANULARITIES if g == raw_period), None)
    if period is None:
        raise api.invalid_query("period", "must be day or month")
    # Days are the organization's: a message sent at 23:30 in Singapore is that day's.
    zone = ZoneInfo(org.settings.timezone)
    last = call.query_date("to", utcnow().astimezone(zone).date())
    first = call.query_date("from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise api.invalid_query("from", "must not be after to")
    if (last - first).days >= MAX_DAYS:
        raise api.invalid_query("to", f"at most {MAX_DAYS} days from 'from' (both included)")
    report = await call.app[deps.COSTS].report(
        call.org_id, first, last, period, zone, org.settings.message_prices
    )
    return api.json_response(
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "period": period,
            "timezone": org.settings.timezone,
            **report,
        }
    )
