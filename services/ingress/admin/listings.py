"""Listings (one by one or imported from CSV) and agents' availability."""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web
from pydantic import Field, field_validator, model_validator

from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import (
    ApiError,
    Body,
    Call,
    RouteTable,
    json_response,
    not_found,
)
from services.ingress.admin.organizations import TimeZone
from shared.repositories.agents import Agent
from shared.repositories.listings import (
    CSV_COLUMNS,
    CsvRejected,
    ListingFields,
    ListingRepository,
    ListingUpdate,
    parse_csv,
)
from shared.store import Document

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WorkingPeriod(Body):
    """One period of a day in which the agent takes consultations."""

    day: Day
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not CLOCK.match(value):
            raise ValueError("must be HH:MM (24-hour)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> WorkingPeriod:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Availability(Body):
    """When the agent works, in the agent's time zone, and how long an appointment lasts."""

    timezone: TimeZone
    working_hours: list[WorkingPeriod] = Field(max_length=50)
    # Minutes; absent: unchanged (30 for a new agent).
    slot_minutes: int | None = Field(default=None, ge=15, le=240)


def availability_of(agent: Agent) -> dict[str, object]:
    """What the availability endpoints answer."""
    return {
        "timezone": agent.timezone,
        "working_hours": [p.model_dump() for p in agent.working_hours],
        "slot_minutes": agent.slot_minutes,
    }


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the listing and availability endpoints."""
    listings = ListingRepository(ctx.store)

    async def check_agent(call: Call, agent_id: str | None) -> None:
        if agent_id and await ctx.agents.get_in_org(call.org_id, agent_id) is None:
            raise ApiError(
                422,
                "invalid",
                "the request body is invalid",
                {"agent_id": "no such agent in this organization"},
            )

    @table.add("POST", "/v1/listings", "Add a listing", body=ListingFields, status=201)
    async def create_listing(call: Call) -> web.StreamResponse:
        fields: ListingFields = call.body
        await check_agent(call, fields.agent_id)
        listing = await listings.create(call.org_id, fields)
        await ctx.audited(call, "listing.create", listing.id, after=listing.public())
        return json_response(listing.public(), status=201)

    @table.add(
        "POST",
        "/v1/listings/import",
        f"Import listings from CSV (text/csv; columns: {', '.join(CSV_COLUMNS)}); all rows or none",
        status=201,
        content_type="text/csv",
    )
    async def import_listings(call: Call) -> web.StreamResponse:
        try:
            text = (await call.request.read()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid", "the CSV is not UTF-8 text") from None
        try:
            rows = parse_csv(text)
        except CsvRejected as exc:
            raise ApiError(422, "invalid_rows", "no listing was imported", exc.errors) from None
        agents = {row.agent_id for row in rows if row.agent_id}
        unknown = [a for a in agents if await ctx.agents.get_in_org(call.org_id, a) is None]
        if unknown:
            raise ApiError(
                422,
                "invalid_rows",
                "no listing was imported",
                {"agent_id": f"no such agent in this organization: {unknown[0]}"},
            )
        count = await listings.import_all(call.org_id, rows)
        await ctx.audited(call, "listing.import", call.org_id, after={"imported": count})
        return json_response({"imported": count}, status=201)

    @table.add("GET", "/v1/listings", "Listings, filtered by agent_id, district, status")
    async def list_listings(call: Call) -> web.StreamResponse:
        limit = call.query_int("limit", 50, 1, 200)
        query = call.request.query
        filters: Document = {k: query[k] for k in ("agent_id", "district", "status") if k in query}
        page = await listings.page(
            call.org_id, after=query.get("after"), limit=limit, filters=filters
        )
        return json_response(
            {
                "items": [item.public() for item in page],
                "next": page[-1].id if len(page) == limit else None,
            }
        )

    @table.add("GET", "/v1/listings/{listing_id}", "One listing")
    async def get_listing(call: Call) -> web.StreamResponse:
        listing = await listings.get(call.org_id, call.param("listing_id"))
        if listing is None:
            raise not_found("listing")
        return json_response(listing.public())

    @table.add("PATCH", "/v1/listings/{listing_id}", "Change a listing", body=ListingUpdate)
    async def update_listing(call: Call) -> web.StreamResponse:
        body: ListingUpdate = call.body
        before = await listings.get(call.org_id, call.param("listing_id"))
        if before is None:
            raise not_found("listing")
        after = await listings.update(call.org_id, before.id, body.model_dump(exclude_none=True))
        if after is None:
            raise not_found("listing")
        await ctx.audited(
            call, "listing.update", before.id, before=before.public(), after=after.public()
        )
        return json_response(after.public())

    @table.add("DELETE", "/v1/listings/{listing_id}", "Remove a listing")
    async def delete_listing(call: Call) -> web.StreamResponse:
        before = await listings.get(call.org_id, call.param("listing_id"))
        if before is None or not await listings.delete(call.org_id, before.id):
            raise not_found("listing")
        await ctx.audited(call, "listing.delete", before.id, before=before.public())
        return json_response({"listing_id": before.id, "deleted": True})

    @table.add("GET", "/v1/agents/{agent_id}/availability", "When the agent takes consultations")
    async def get_availability(call: Call) -> web.StreamResponse:
        agent = await ctx.agent_of(call)
        return json_response(availability_of(agent))

    @table.add(
        "PUT",
        "/v1/agents/{agent_id}/availability",
        "Set working hours, time zone and appointment length (slot_minutes, 15 to 240)",
        body=Availability,
    )
    async def set_availability(call: Call) -> web.StreamResponse:
        body: Availability = call.body
        fields: Document = {
            "timezone": body.timezone,
            "working_hours": [p.model_dump() for p in body.working_hours],
        }
        if body.slot_minutes is not None:
            fields["slot_minutes"] = body.slot_minutes
        changed = await ctx.agents.update(call.org_id, call.param("agent_id"), fields)
        if changed is None:
            raise not_found("agent")
        before, after = changed
        await ctx.audited(
            call,
            "agent.availability",
            after.id,
            before={"timezone": before.timezone, "slot_minutes": before.slot_minutes},
            after={
                "timezone": after.timezone,
                "working_hours": len(body.working_hours),
                "slot_minutes": after.slot_minutes,
            },
        )
        await ctx.agent_changed(call.org_id, after.id)
        return json_response(availability_of(after))
