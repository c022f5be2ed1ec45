"""Listings: added one by one or imported from CSV, read, changed and removed."""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin.dependencies import AGENTS, LISTINGS
from services.ingress.admin.framework import (
    ApiError,
    Call,
    RouteTable,
    found,
    invalid_body,
    json_response,
    not_found,
    page_response,
)
from shared.repositories.listings import (
    CSV_COLUMNS,
    CsvRejected,
    ListingFields,
    ListingUpdate,
    parse_csv,
)
from shared.store import Document

routes = RouteTable()


@routes.add("POST", "/v1/listings", "Add a listing", status=201)
async def create_listing(call: Call, fields: ListingFields) -> web.StreamResponse:
    if fields.agent_id and await call.app[AGENTS].get_in_org(call.org_id, fields.agent_id) is None:
        raise invalid_body("agent_id", "no such agent in this organization")
    listing = await call.app[LISTINGS].create(call.org_id, fields)
    await call.audited("listing.create", listing.id, after=listing.public())
    return json_response(listing.public(), status=201)


@routes.add(
    "POST",
    "/v1/listings/import",
    f"Import listings from CSV (text/csv; columns: {', '.join(CSV_COLUMNS)}); all rows or none",
    status=201,
    content_type="text/csv",
)
async def import_listings(call: Call) -> web.StreamResponse:
    try:
        rows = parse_csv(await call.csv_text())
    except CsvRejected as exc:
        raise ApiError(422, "invalid_rows", "no listing was imported", exc.errors) from None
    agents = {row.agent_id for row in rows if row.agent_id}
    unknown = [a for a in agents if await call.app[AGENTS].get_in_org(call.org_id, a) is None]
    if unknown:
        raise ApiError(
            422,
            "invalid_rows",
            "no listing was imported",
            {"agent_id": f"no such agent in this organization: {unknown[0]}"},
        )
    count = await call.app[LISTINGS].import_all(call.org_id, rows)
    await call.audited("listing.import", call.org_id, after={"imported": count})
    return json_response({"imported": count}, status=201)


@routes.add("GET", "/v1/listings", "Listings, filtered by agent_id, district, status")
async def list_listings(call: Call) -> web.StreamResponse:
    limit = call.query_int("limit", 50, 1, 200)
    query = call.request.query
    filters: Document = {k: query[k] for k in ("agent_id", "district", "status") if k in query}
    page = await call.app[LISTINGS].page(
        call.org_id, after=query.get("after"), limit=limit, filters=filters
    )
    return page_response(page, limit, lambda item: item.public(), lambda item: item.id)


@routes.add("GET", "/v1/listings/{listing_id}", "One listing")
async def get_listing(call: Call) -> web.StreamResponse:
    listing = await call.app[LISTINGS].get(call.org_id, call.param("listing_id"))
    return json_response(found(listing, "listing").public())


@routes.add("PATCH", "/v1/listings/{listing_id}", "Change a listing")
async def update_listing(call: Call, body: ListingUpdate) -> web.StreamResponse:
    listings = call.app[LISTINGS]
    before = found(await listings.get(call.org_id, call.param("listing_id")), "listing")
    after = await listings.update(call.org_id, before.id, body.model_dump(exclude_none=True))
    after = found(after, "listing")
    await call.audited("listing.update", before.id, before=before.public(), after=after.public())
    return json_response(after.public())


@routes.add("DELETE", "/v1/listings/{listing_id}", "Remove a listing")
async def delete_listing(call: Call) -> web.StreamResponse:
    listings = call.app[LISTINGS]
    before = await listings.get(call.org_id, call.param("listing_id"))
    if before is None or not await listings.delete(call.org_id, before.id):
        raise not_found("listing")
    await call.audited("listing.delete", before.id, before=before.public())
    return json_response({"listing_id": before.id, "deleted": True})
