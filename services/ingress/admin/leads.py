"""Leads as their organization sees them: read (through its threads), imported from CSV,
exported in full and erased.

A lead is visible to an organization only through the organization's own threads (or its
own imported data); export and erasure touch only that organization's data.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from services.ingress.admin.agents import foreign_agents
from services.ingress.admin.threads import (
    IDENTITY_QUERY,
    LeadShown,
    ThreadSummary,
    lead_view,
    leads_named,
    public_thread,
)
from shared.metrics import LEADS
from shared.models import utcnow
from shared.repositories.lead_data import (
    IMPORT_COLUMNS,
    MAX_IMPORT_ROWS,
    ImportRejected,
    parse_import_csv,
)

MAX_REPORTED_AGENT_ERRORS = 50


class LeadPage(BaseModel):
    """A page of leads; `next` is the `after` of the next page (null on the last)."""

    items: list[LeadShown]
    next: str | None


class LeadDetail(LeadShown):
    """A lead with its threads with this organization."""

    threads: list[ThreadSummary] = Field(description="The lead's threads with this organization")


routes = api.RouteTable()


@routes.add("GET", "/v1/leads", query=(*api.PAGE_QUERY, *IDENTITY_QUERY), response=LeadPage)
async def list_leads(call: api.Call) -> web.StreamResponse:
    """Leads of the organization (through its threads), paginated; filtered by phone,
    user_id or username."""
    limit = call.query_int("limit", 50, 1, 200)
    ids = await call.app[deps.THREADS].lead_ids(
        call.org_id,
        after=call.request.query.get("after"),
        limit=limit,
        among=await leads_named(call),
    )
    items = [view for lead_id in ids if (view := await lead_view(call, lead_id))]
    return api.json_response({"items": items, "next": ids[-1] if len(ids) == limit else None})


async def survivor_id(call: api.Call) -> str:
    """The lead the path names: a lead merged into another one answers as that one."""
    lead_id = call.param("lead_id")
    lead = await call.app[deps.LEADS].get(lead_id)
    return lead.id if lead is not None else lead_id


@routes.add("GET", "/v1/leads/{lead_id}", response=LeadDetail)
async def get_lead(call: api.Call) -> web.StreamResponse:
    """One lead and its threads with this organization (a merged lead's id answers the lead
    it became)."""
    lead_id = await survivor_id(call)
    own = await call.app[deps.THREADS].page(call.org_id, after=None, limit=200, lead_id=lead_id)
    # A lead is visible only through the organization's own threads.
    view = api.found(await lead_view(call, lead_id) if own else None, "lead")
    return api.json_response({**view, "threads": [public_thread(t) for t in own]})


# The summary names the parser's own columns and limit.
IMPORT_SUMMARY = (
    f"Import leads from CSV (text/csv; columns: {', '.join(IMPORT_COLUMNS)}; at most "
    f"{MAX_IMPORT_ROWS} rows), deduplicated by phone or user_id (a business-scoped user ID "
    "in the business portfolio of the row's agent_id); a report per row"
)


@routes.add("POST", "/v1/leads/import", summary=IMPORT_SUMMARY, content_type="text/csv")
async def import_leads(call: api.Call) -> web.StreamResponse:
    """Import leads from CSV, deduplicated by phone or user ID; a report per row."""
    try:
        rows = parse_import_csv(await call.csv_text())
    except ImportRejected as exc:
        raise api.rows_rejected("lead", exc.errors) from None
    # An agent id names the organization's own configuration: a wrong one is a mistake
    # in the file, not in one lead's data, and it is answered like an unknown id.
    unknown = await foreign_agents(call, {row.agent_id for row in rows if row.agent_id})
    if unknown:
        errors = {
            f"line {row.line}": "agent_id: no such agent in this organization"
            for row in rows
            if row.agent_id in unknown
        }
        shown = dict(list(errors.items())[:MAX_REPORTED_AGENT_ERRORS])
        raise api.rows_rejected("lead", shown)
    org = await call.app[deps.ORGS].get(call.org_id)
    region = org.settings.region if org else call.app[deps.SETTINGS].default_region
    agents = call.app[deps.AGENTS]
    portfolios = {
        agent.id: agent.portfolio
        for agent_id in sorted({row.agent_id for row in rows if row.agent_id and row.user_id})
        if (agent := await agents.get_in_org(call.org_id, agent_id))
    }
    results = await call.app[deps.LEAD_DATA].import_rows(
        call.org_id, rows, region=region, at=utcnow(), portfolios=portfolios
    )
    for result in results:  # what happened to the global registry, for operators
        if result.registry in ("created", "merged") and not result.counted:
            LEADS.labels(result.registry).inc()
    counts = {
        outcome: sum(1 for r in results if r.outcome == outcome)
        for outcome in ("created", "merged", "unchanged", "invalid")
    }
    await call.audited("lead.import", call.org_id, after={"rows": len(results), **counts})
    return api.json_response({"rows": [result.public() for result in results], **counts})


@routes.add("GET", "/v1/leads/{lead_id}/export")
async def export_lead(call: api.Call) -> web.StreamResponse:
    """Everything this organization holds about a lead (a data access request)."""
    lead_id = await survivor_id(call)
    exported = api.found(await call.app[deps.LEAD_DATA].export(call.org_id, lead_id), "lead")
    threads = exported["threads"]
    messages = sum(len(t["messages"]) for t in threads)
    await call.audited(
        "lead.export", lead_id, after={"threads": len(threads), "messages": messages}
    )
    return api.json_response(exported)


@routes.add("DELETE", "/v1/leads/{lead_id}")
async def erase_lead(call: api.Call) -> web.StreamResponse:
    """Erase what this organization holds about a lead (other organizations' data stays)."""
    lead_id = await survivor_id(call)
    counts = api.found(await call.app[deps.LEAD_DATA].erase(call.org_id, lead_id), "lead")
    # Counts and the id only: the audit log must not keep what was erased.
    await call.audited("lead.erase", lead_id, after={"erased": counts})
    return api.json_response({"lead_id": lead_id, "erased": counts})
