"""A lead's data for its organization: import from CSV, export everything, erase it."""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import ApiError, Call, RouteTable, json_response, not_found
from shared.metrics import LEADS
from shared.models import utcnow
from shared.repositories.lead_data import (
    IMPORT_COLUMNS,
    MAX_IMPORT_ROWS,
    ImportRejected,
    LeadDataRepository,
    parse_import_csv,
)

MAX_REPORTED_AGENT_ERRORS = 50


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the lead import, export and erasure endpoints."""
    lead_data = LeadDataRepository(ctx.store)

    @table.add(
        "POST",
        "/v1/leads/import",
        f"Import leads from CSV (text/csv; columns: {', '.join(IMPORT_COLUMNS)}; at most "
        f"{MAX_IMPORT_ROWS} rows), deduplicated by phone; a report per row",
        content_type="text/csv",
    )
    async def import_leads(call: Call) -> web.StreamResponse:
        try:
            text = (await call.request.read()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid", "the CSV is not UTF-8 text") from None
        try:
            rows = parse_import_csv(text)
        except ImportRejected as exc:
            raise ApiError(422, "invalid_rows", "no lead was imported", exc.errors) from None
        # An agent id names the organization's own configuration: a wrong one is a mistake
        # in the file, not in one lead's data, and it is answered like an unknown id.
        agents = {row.agent_id for row in rows if row.agent_id}
        unknown = {a for a in agents if await ctx.agents.get_in_org(call.org_id, a) is None}
        if unknown:
            errors = {
                f"line {row.line}": "agent_id: no such agent in this organization"
                for row in rows
                if row.agent_id in unknown
            }
            shown = dict(list(errors.items())[:MAX_REPORTED_AGENT_ERRORS])
            raise ApiError(422, "invalid_rows", "no lead was imported", shown)
        org = await ctx.orgs.get(call.org_id)
        region = org.settings.region if org else ctx.settings.default_region
        results = await lead_data.import_rows(call.org_id, rows, region=region, at=utcnow())
        for result in results:  # what happened to the global registry, for operators
            if result.registry in ("created", "merged"):
                LEADS.labels(result.registry).inc()
        report = {
            "rows": [result.public() for result in results],
            **{
                outcome: sum(1 for r in results if r.outcome == outcome)
                for outcome in ("created", "merged", "unchanged", "invalid")
            },
        }
        await ctx.audited(
            call,
            "lead.import",
            call.org_id,
            after={"rows": len(results), **{k: v for k, v in report.items() if k != "rows"}},
        )
        return json_response(report)

    @table.add(
        "GET",
        "/v1/leads/{lead_id}/export",
        "Everything this organization holds about a lead (a data access request)",
    )
    async def export_lead(call: Call) -> web.StreamResponse:
        lead_id = call.param("lead_id")
        exported = await lead_data.export(call.org_id, lead_id)
        if exported is None:
            raise not_found("lead")
        await ctx.audited(
            call,
            "lead.export",
            lead_id,
            after={
                "threads": len(exported["threads"]),
                "messages": sum(len(t["messages"]) for t in exported["threads"]),
            },
        )
        return json_response(exported)

    @table.add(
        "DELETE",
        "/v1/leads/{lead_id}",
        "Erase what this organization holds about a lead (other organizations' data stays)",
    )
    async def erase_lead(call: Call) -> web.StreamResponse:
        lead_id = call.param("lead_id")
        counts = await lead_data.erase(call.org_id, lead_id)
        if counts is None:
            raise not_found("lead")
        # Counts and the id only: the audit log must not keep what was erased.
        await ctx.audited(call, "lead.erase", lead_id, after={"erased": counts})
        return json_response({"lead_id": lead_id, "erased": counts})
