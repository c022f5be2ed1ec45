"""Reports on the organization's WhatsApp messages: what WhatsApp bills for them."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import (
    ApiError,
    Call,
    RouteTable,
    json_response,
    not_found,
)
from shared.models import utcnow
from shared.repositories.costs import GRANULARITIES, CostRepository

DEFAULT_DAYS = 30
MAX_DAYS = 366  # a year, leap day included


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the report endpoints."""
    costs = CostRepository(ctx.store)

    @table.add(
        "GET",
        "/v1/reports/costs",
        "Billable and free WhatsApp messages per period, agent and pricing category (estimated "
        "costs once prices are set); from/to (dates, both included, in the organization's time "
        "zone; default the last 30 days), period=day|month (default day)",
    )
    async def cost_report(call: Call) -> web.StreamResponse:
        org = await ctx.orgs.get(call.org_id)
        if org is None:
            raise not_found("organization")
        raw_period = call.request.query.get("period", "day")
        period = next((g for g in GRANULARITIES if g == raw_period), None)
        if period is None:
            raise ApiError(
                422, "invalid", "invalid query parameter", {"period": "must be day or month"}
            )
        # Days are the organization's: a message sent at 23:30 in Singapore is that day's.
        zone = ZoneInfo(org.settings.timezone)
        last = call.query_date("to", utcnow().astimezone(zone).date())
        first = call.query_date("from", last - timedelta(days=DEFAULT_DAYS - 1))
        if first > last:
            raise ApiError(
                422, "invalid", "invalid query parameter", {"from": "must not be after to"}
            )
        if (last - first).days >= MAX_DAYS:
            raise ApiError(
                422,
                "invalid",
                "invalid query parameter",
                {"to": f"at most {MAX_DAYS} days from 'from' (both included)"},
            )
        report = await costs.report(
            call.org_id, first, last, period, zone, org.settings.message_prices
        )
        return json_response(
            {
                "from": first.isoformat(),
                "to": last.isoformat(),
                "period": period,
                "timezone": org.settings.timezone,
                **report,
            }
        )
