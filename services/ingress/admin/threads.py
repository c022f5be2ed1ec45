"""Leads and threads (read, paginated) and handoff: a human takes a thread over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import Field

from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import (
    ApiError,
    Body,
    Call,
    RouteTable,
    json_response,
    not_found,
)
from shared.colleagues import ColleagueThreads
from shared.models import Bubble, utcnow
from shared.replies import ReplyOutbox, human_command
from shared.repositories.consents import ConsentRepository
from shared.repositories.conversions import ConversionKind, ConversionRepository
from shared.repositories.leads import LeadRepository
from shared.repositories.messages import MessageRepository
from shared.repositories.sends import SendRepository
from shared.repositories.threads import ThreadRepository
from shared.store import Document

THREAD_FIELDS = (
    "agent_id",
    "lead_id",
    "state",
    "stage",
    "profile",
    "source",
    "created_at",
    "last_inbound_at",
    "last_outbound_at",
    "handed_off_at",
)
MESSAGE_FIELDS = ("direction", "type", "text", "author", "payload", "sent_at", "answered")


class ConversionBody(Body):
    """An outcome of the thread: an appointment booked, the deal won or lost."""

    kind: ConversionKind


class HumanReply(Body):
    """What the agent writes to the lead, sent from the agent's number."""

    text: str = Field(min_length=1, max_length=4096)


class HandoffRequest(Body):
    """Why the thread is taken over (optional)."""

    note: str | None = Field(default=None, max_length=500)


def public_thread(thread: Document) -> dict[str, Any]:
    """What the API shows of a thread."""
    return {"thread_id": thread["_id"], **{f: thread.get(f) for f in THREAD_FIELDS}}


def public_message(message: Document) -> dict[str, Any]:
    """What the API shows of a message."""
    return {"message_id": message["_id"], **{f: message.get(f) for f in MESSAGE_FIELDS}}


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the lead and thread endpoints."""
    threads = ThreadRepository(ctx.store)
    messages = MessageRepository(ctx.store)
    leads = LeadRepository(ctx.store)
    consents = ConsentRepository(ctx.store)
    outbox = ReplyOutbox(ctx.store, ctx.broker)
    colleagues = ColleagueThreads(ctx.store)
    sends = SendRepository(ctx.store)
    conversions = ConversionRepository(ctx.store)

    async def thread_of(call: Call) -> Document:
        thread = await threads.get(call.org_id, call.param("thread_id"))
        if thread is None:
            raise not_found("thread")
        return thread

    async def lead_view(org_id: str, lead_id: str) -> dict[str, Any] | None:
        view = await leads.view_for_org(org_id, lead_id)
        if view is None:
            return None
        return {**view, "opted_out": await consents.opted_out(org_id, lead_id)}

    @table.add("GET", "/v1/leads", "Leads of the organization (through its threads), paginated")
    async def list_leads(call: Call) -> web.StreamResponse:
        limit = call.query_int("limit", 50, 1, 200)
        ids = await threads.lead_ids(
            call.org_id, after=call.request.query.get("after"), limit=limit
        )
        items = [view for lead_id in ids if (view := await lead_view(call.org_id, lead_id))]
        return json_response({"items": items, "next": ids[-1] if len(ids) == limit else None})

    @table.add("GET", "/v1/leads/{lead_id}", "One lead and its threads with this organization")
    async def get_lead(call: Call) -> web.StreamResponse:
        lead_id = call.param("lead_id")
        own = await threads.page(call.org_id, after=None, limit=200, lead_id=lead_id)
        view = await lead_view(call.org_id, lead_id) if own else None
        if view is None:
            raise not_found("lead")  # a lead is visible only through the org's own threads
        return json_response({**view, "threads": [public_thread(t) for t in own]})

    @table.add("GET", "/v1/threads", "Threads of the organization, paginated")
    async def list_threads(call: Call) -> web.StreamResponse:
        limit = call.query_int("limit", 50, 1, 200)
        query = call.request.query
        page = await threads.page(
            call.org_id,
            after=query.get("after"),
            limit=limit,
            agent_id=query.get("agent_id"),
            state=query.get("state"),
        )
        return json_response(
            {
                "items": [public_thread(t) for t in page],
                "next": page[-1]["_id"] if len(page) == limit else None,
            }
        )

    @table.add(
        "GET",
        "/v1/threads/{thread_id}",
        "One thread with its lead and the lead's threads with colleagues (metadata)",
    )
    async def get_thread(call: Call) -> web.StreamResponse:
        thread = await thread_of(call)
        return json_response(
            {
                **public_thread(thread),
                "lead": await lead_view(call.org_id, thread["lead_id"]),
                "other_threads": await colleagues.of(thread),
            }
        )

    @table.add(
        "POST",
        "/v1/threads/{thread_id}/conversion",
        "Record an outcome: appointment booked, deal won or lost",
        body=ConversionBody,
        status=201,
    )
    async def record_conversion(call: Call) -> web.StreamResponse:
        thread = await thread_of(call)
        body: ConversionBody = call.body
        new = await conversions.record(thread, body.kind, utcnow(), call.actor)
        if new:
            await ctx.audited(
                call,
                f"conversion.{body.kind}",
                thread["_id"],
                before={"stage": thread.get("stage")},
                after={"conversion": body.kind},
            )
        return json_response(
            {"thread_id": thread["_id"], "kind": body.kind, "recorded": new}, status=201
        )

    @table.add(
        "GET",
        "/v1/reports/attribution",
        "Leads, conversions and conversion rate per agent and source; from/to (ISO "
        "dates) bound when the threads started",
    )
    async def attribution_report(call: Call) -> web.StreamResponse:
        query = call.request.query
        try:
            # By default the 30 days up to the end of today (UTC): stable within a day.
            tomorrow = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
                days=1
            )
            end = datetime.fromisoformat(query["to"]) if "to" in query else tomorrow
            start = (
                datetime.fromisoformat(query["from"])
                if "from" in query
                else end - timedelta(days=30)
            )
        except ValueError:
            raise ApiError(
                422,
                "invalid",
                "invalid query parameter",
                {"from/to": "must be ISO-8601 dates or times"},
            ) from None
        start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        rows = await conversions.report(call.org_id, start, end)
        return json_response({"from": start.isoformat(), "to": end.isoformat(), "rows": rows})

    @table.add(
        "GET",
        "/v1/threads/{thread_id}/messages",
        "A thread's messages, newest first (before=<ISO time> pages back)",
    )
    async def list_messages(call: Call) -> web.StreamResponse:
        thread = await thread_of(call)
        limit = call.query_int("limit", 50, 1, 200)
        before_raw = call.request.query.get("before")
        try:
            before = datetime.fromisoformat(before_raw) if before_raw else None
        except ValueError:
            raise ApiError(
                422, "invalid", "invalid query parameter", {"before": "must be an ISO-8601 time"}
            ) from None
        page = await messages.page(call.org_id, thread["_id"], before=before, limit=limit)
        delivery = await sends.delivery_of(
            call.org_id, [m["send_id"] for m in page if m.get("send_id")]
        )
        return json_response(
            {
                "items": [
                    {**public_message(m), "delivery": delivery.get(m.get("send_id", ""))}
                    for m in page
                ],
                "next": page[-1]["sent_at"] if len(page) == limit else None,
            }
        )

    @table.add(
        "POST",
        "/v1/threads/{thread_id}/handoff",
        "A human takes the thread over: the bot stops answering it",
        body=HandoffRequest,
    )
    async def handoff(call: Call) -> web.StreamResponse:
        return await set_state(
            call, "human", {"handed_off_at": utcnow(), "handoff_note": call.body.note}
        )

    @table.add("POST", "/v1/threads/{thread_id}/handback", "Give the thread back to the bot")
    async def handback(call: Call) -> web.StreamResponse:
        thread = await thread_of(call)
        # What the lead wrote meanwhile was the human's to answer: the bot starts afresh.
        pending = [m["_id"] for m in await messages.unanswered(call.org_id, thread["_id"])]
        if pending:
            await messages.mark_answered(call.org_id, pending, "human")
        return await set_state(call, "bot", {"handed_off_at": None})

    async def set_state(call: Call, state: str, extra: Document) -> web.StreamResponse:
        before = await thread_of(call)
        await threads.update_state(call.org_id, before["_id"], {"state": state, **extra})
        after = await thread_of(call)
        await ctx.audited(
            call,
            f"thread.{state}",
            before["_id"],
            before={"state": before.get("state")},
            after={"state": state},
        )
        return json_response(public_thread(after))

    @table.add(
        "POST",
        "/v1/threads/{thread_id}/messages",
        "The agent writes to the lead; it leaves through outbound under all its rules",
        body=HumanReply,
        status=202,
    )
    async def reply(call: Call) -> web.StreamResponse:
        thread = await thread_of(call)
        body: HumanReply = call.body
        lead = await leads.view_for_org(call.org_id, thread["lead_id"])
        if lead is None:
            raise not_found("lead")
        answers = [m["_id"] for m in await messages.unanswered(call.org_id, thread["_id"])]
        command = human_command(thread, lead["phone"], [Bubble(text=body.text)])
        command_id = command.command_id
        author = f"human:{call.key.id if call.key else 'unknown'}"
        command = await outbox.record(command, answers, author)
        await outbox.publish(command)
        await ctx.audited(call, "thread.reply", thread["_id"], after={"command_id": command_id})
        return json_response({"command_id": command_id, "thread_id": thread["_id"]}, status=202)
