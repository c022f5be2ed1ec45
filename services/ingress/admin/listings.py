"""Listings: added one by one or imported from CSV, read, changed and removed."""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from services.ingress.admin.agents import foreign_agents
from shared.repositories.listings import (
    CSV_COLUMNS,
    CsvRejected,
    ListingFields,
    ListingUpdate,
    parse_csv,
)
from shared.store import Document

routes = api.RouteTable()


@routes.add("POST", "/v1/listings", status=201)
async def create_listing(call: api.Call, fields: ListingFields) -> web.StreamResponse:
    """Add a listing."""
    if fields.agent_id and await foreign_agents(call, {fields.agent_id}):
        raise api.invalid_body("agent_id", "no such agent in this organization")
    listing = await call.app[deps.LISTINGS].create(call.org_id, fields)
    await call.audited("listing.create", listing.id, after=listing.public())
    return api.json_response(listing.public(), status=201)


# The summary names the parser's own columns.
IMPORT_SUMMARY = (
    f"Import listings from CSV (text/csv; columns: {', '.join(CSV_COLUMNS)}); all rows or none"
)


@routes.add(
    "POST", "/v1/listings/import", summary=IMPORT_SUMMARY, status=201, content_type="text/csv"
)
async def import_listings(call: api.Call) -> web.StreamResponse:
    """Import listings from CSV; all rows or none."""
    try:
        rows = parse_csv(await call.csv_text())
    except CsvRejected as exc:
        raise api.rows_rejected("listing", exc.errors) from None
    unknown = await foreign_agents(call, {row.agent_id for row in rows if row.agent_id})
    if unknown:
        reason = f"no such agent in this organization: {unknown[0]}"
        raise api.rows_rejected("listing", {"agent_id": reason})
    count = await call.app[deps.LISTINGS].import_all(call.org_id, rows)
    await call.audited("listing.import", call.org_id, after={"imported": count})
    return api.json_response({"imported": count}, status=201)


@routes.add("GET", "/v1/listings")
async def list_listings(call: api.Call) -> web.StreamResponse:
    """Listings, filtered by agent_id, district, status."""
    limit = call.query_int("limit", 50, 1, 200)
    query = call.request.query
    filters: Document = {k: query[k] for k in ("agent_id", "district", "status") if k in query}
    page = await call.app[deps.LISTINGS].page(
        call.org_id, after=query.get("after"), limit=limit, filters=filters
    )
    return api.page_response(page, limit, lambda item: item.public(), lambda item: item.id)


@routes.add("GET", "/v1/listings/{listing_id}")
async def get_listing(call: api.Call) -> web.StreamResponse:
    """One listing."""
    listing = await call.app[deps.LISTINGS].get(call.org_id, call.param("listing_id"))
    return api.json_response(api.found(listing, "listing").public())


@routes.add("PATCH", "/v1/listings/{listing_id}")
async def update_listing(call: api.Call, body: ListingUpdate) -> web.StreamResponse:
    """Change a listing."""
    listings = call.app[deps.LISTINGS]
    before = api.found(await listings.get(call.org_id, call.param("listing_id")), "listing")
    after = await listings.update(call.org_id, before.id, body.model_dump(exclude_none=True))
    after = api.found(after, "listing")
    await call.audited("listing.update", before.id, before=before.public(), after=after.public())
    return api.json_response(after.public())


@routes.add("DELETE", "/v1/listings/{listing_id}")
async def delete_listing(call: api.Call) -> web.StreamResponse:
    """Remove a listing."""
    listings = call.app[deps.LISTINGS]
    before = await listings.get(call.org_id, call.param("listing_id"))
    if before is None or not await listings.delete(call.org_id, before.id):
        raise api.not_found("listing")
    await call.audited("listing.delete", before.id, before=before.public())
    return api.json_response({"listing_id": before.id, "deleted": True})
