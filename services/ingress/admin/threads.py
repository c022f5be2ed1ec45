"""Threads: read (paginated, with their messages), outcomes, and handoff to a human.

Also how the admin API shows a lead (`lead_view`) and finds leads by their identifiers
(`leads_named`), shared with the leads resource: a lead as its organization sees it, with
only the user IDs and usernames that came through that organization.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from shared.identity import (
    InvalidUserId,
    clean_username,
    is_bsuid,
    validate_bsuid,
    whatsapp_number,
)
from shared.models import Bubble, utcnow
from shared.phones import InvalidPhoneNumber, normalize_phone
from shared.replies import human_command
from shared.repositories.conversions import ConversionKind
from shared.repositories.messages import ThreadMessage
from shared.repositories.threads import Thread
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


class ConversionBody(api.Body):
    """An outcome of the thread: an appointment booked, the deal won or lost."""

    kind: ConversionKind


class HumanReply(api.Body):
    """What the agent writes to the lead, sent from the agent's number."""

    text: str = Field(min_length=1, max_length=4096)


class HandoffRequest(api.Body):
    """Why the thread is taken over (optional)."""

    note: str | None = Field(default=None, max_length=500)


class UserIdShown(BaseModel):
    """A business-scoped user ID of the lead and the business portfolio it belongs to."""

    business_portfolio_id: str = Field(
        description="The portfolio (an agent's business_portfolio_id, or agent:<agent_id> "
        "for an agent without one)"
    )
    user_id: str = Field(description="The BSUID, e.g. SG.1349120865530274")


class LeadIdentity(BaseModel):
    """A lead as the caller's organization sees it: only identifiers that came through it."""

    lead_id: str
    phone: str | None = Field(description="E.164; null while WhatsApp withholds the number")
    username: str | None = Field(description="The latest username seen (display only)")
    usernames: list[str] = Field(description="Usernames this organization saw, oldest first")
    user_ids: list[UserIdShown] = Field(
        description="Business-scoped user IDs this organization's agents saw"
    )
    parent_user_id: str | None = Field(
        description="Parent BSUID shared by linked portfolios (SG.ENT.…), if seen here"
    )
    names: list[str] = Field(description="Names this organization saw, oldest first")
    first_touch: dict[str, Any] | None = Field(
        description="How the lead first came (null when it came through another organization)"
    )


class LeadShown(LeadIdentity):
    """A lead of the organization."""

    opted_out: bool = Field(description="The lead opted out of this organization's messages")


class ThreadSummary(BaseModel):
    """A thread of the organization."""

    thread_id: str
    agent_id: str
    lead_id: str
    state: str = Field(description="bot, human or closed")
    stage: str
    profile: dict[str, Any]
    source: dict[str, Any]
    created_at: datetime | None
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    handed_off_at: datetime | None


class ThreadShown(ThreadSummary):
    """A thread of the organization, with its lead's identifiers."""

    lead: LeadIdentity | None = Field(description="The thread's lead as the organization sees it")


class ThreadPage(BaseModel):
    """A page of threads; `next` is the `after` of the next page (null on the last)."""

    items: list[ThreadShown]
    next: str | None


class ThreadDetail(ThreadSummary):
    """A thread with its lead and the lead's threads with colleagues."""

    lead: LeadShown | None = Field(description="The thread's lead as the organization sees it")
    other_threads: list[dict[str, Any]] = Field(
        description="The lead's threads with colleagues (metadata only)"
    )


# How the lead and thread lists are filtered by a lead's identifiers.
IDENTITY_QUERY = (
    api.Query(
        "phone",
        "the lead's number, in any form with the organization's region (e.g. 9888 7777)",
    ),
    api.Query(
        "user_id",
        "a business-scoped user ID (or parent) the organization's agents saw, e.g. "
        "SG.1349120865530274",
    ),
    api.Query("username", "a username the organization saw (@name)"),
)


def public_thread(thread: Thread) -> dict[str, Any]:
    """What the API shows of a thread."""
    return {"thread_id": thread.id, **{f: getattr(thread, f) for f in THREAD_FIELDS}}


def _lead_phone(raw: str, region: str) -> str:
    """A phone filter in E.164, or a 422 naming it (a BSUID is never read as a number)."""
    if is_bsuid(raw.strip()):
        raise api.invalid_query("phone", "a business-scoped user ID: filter with user_id")
    try:
        return normalize_phone(raw, region)
    except InvalidPhoneNumber as exc:
        # A number WhatsApp reported is kept as reported even where the phone library does
        # not know its range yet: the API shows it as "+digits", and takes it back so.
        if raw.strip().startswith("+"):
            try:
                return whatsapp_number(raw)
            except InvalidPhoneNumber:
                pass
        raise api.invalid_query("phone", str(exc)) from None


async def leads_named(call: api.Call) -> list[str] | None:
    """The leads named by the query's `phone`, `user_id` and `username` (all of them), as
    the organization may know them; None when the query names none. A 422 names a
    malformed one."""
    query = call.request.query
    filters: dict[str, str] = {}
    if "phone" in query:
        org = await call.app[deps.ORGS].get(call.org_id)
        region = org.settings.region if org else call.app[deps.SETTINGS].default_region
        filters["phone"] = _lead_phone(query["phone"], region)
    if "user_id" in query:
        try:
            filters["user_id"] = validate_bsuid(query["user_id"])
        except InvalidUserId as exc:
            raise api.invalid_query("user_id", str(exc)) from None
    if "username" in query:
        username = clean_username(query["username"])
        if username is None:
            raise api.invalid_query("username", "not a username (letters, digits, . _ -)")
        filters["username"] = username
    if not filters:
        return None
    return await call.app[deps.LEADS].ids_seen_by(call.org_id, **filters)


def public_message(message: ThreadMessage) -> dict[str, Any]:
    """What the API shows of a message."""
    return {"message_id": message.id, **{f: getattr(message, f) for f in MESSAGE_FIELDS}}


async def lead_view(call: api.Call, lead_id: str) -> dict[str, Any] | None:
    """What the caller's organization sees of a lead (a merged id: of the lead it became),
    or None."""
    view = await call.app[deps.LEADS].view_for_org(call.org_id, lead_id)
    if view is None:
        return None
    return {
        **view.as_json(),
        "opted_out": await call.app[deps.CONSENTS].opted_out(call.org_id, view.lead_id),
    }


async def thread_of(call: api.Call) -> Thread:
    """The thread named by the path, if it belongs to the caller's organization."""
    return api.found(
        await call.app[deps.THREADS].get(call.org_id, call.param("thread_id")), "thread"
    )


routes = api.RouteTable()


@routes.add(
    "GET",
    "/v1/threads",
    query=(
        *api.PAGE_QUERY,
        api.Query("agent_id", "only this agent's threads"),
        api.Query("state", "bot, human or closed"),
        *IDENTITY_QUERY,
    ),
    response=ThreadPage,
)
async def list_threads(call: api.Call) -> web.StreamResponse:
    """Threads of the organization, paginated; filtered by agent, state or the lead's phone,
    user_id or username."""
    limit = call.query_int("limit", 50, 1, 200)
    query = call.request.query
    page = await call.app[deps.THREADS].page(
        call.org_id,
        after=query.get("after"),
        limit=limit,
        agent_id=query.get("agent_id"),
        state=query.get("state"),
        lead_ids=await leads_named(call),
    )
    leads = await call.app[deps.LEADS].views_for_org(call.org_id, [t.lead_id for t in page])

    def shown(thread: Thread) -> dict[str, Any]:
        lead = leads.get(thread.lead_id)
        return {**public_thread(thread), "lead": lead.as_json() if lead else None}

    return api.page_response(page, limit, shown, lambda thread: thread.id)


@routes.add("GET", "/v1/threads/{thread_id}", response=ThreadDetail)
async def get_thread(call: api.Call) -> web.StreamResponse:
    """One thread with its lead and the lead's threads with colleagues (metadata)."""
    thread = await thread_of(call)
    return api.json_response(
        {
            **public_thread(thread),
            "lead": await lead_view(call, thread.lead_id),
            "other_threads": await call.app[deps.COLLEAGUES].of(thread),
        }
    )


@routes.add("POST", "/v1/threads/{thread_id}/conversion", status=201)
async def record_conversion(call: api.Call, body: ConversionBody) -> web.StreamResponse:
    """Record an outcome: appointment booked, deal won or lost."""
    thread = await thread_of(call)
    new = await call.app[deps.CONVERSIONS].record(thread, body.kind, utcnow(), call.actor)
    if new:
        await call.audited(
            f"conversion.{body.kind}",
            thread.id,
            before={"stage": thread.stage},
            after={"conversion": body.kind},
        )
    return api.json_response(
        {"thread_id": thread.id, "kind": body.kind, "recorded": new}, status=201
    )


@routes.add("GET", "/v1/threads/{thread_id}/messages")
async def list_messages(call: api.Call) -> web.StreamResponse:
    """A thread's messages, newest first (before=<ISO time> pages back)."""
    thread = await thread_of(call)
    limit = call.query_int("limit", 50, 1, 200)
    before_raw = call.request.query.get("before")
    try:
        before = datetime.fromisoformat(before_raw) if before_raw else None
    except ValueError:
        raise api.invalid_query("before", "must be an ISO-8601 time") from None
    page = await call.app[deps.MESSAGES].page(call.org_id, thread.id, before=before, limit=limit)
    delivery = await call.app[deps.SENDS].delivery_of(
        call.org_id, [m.send_id for m in page if m.send_id]
    )
    return api.page_response(
        page,
        limit,
        lambda m: {**public_message(m), "delivery": delivery.get(m.send_id or "")},
        lambda m: m.sent_at,
    )


@routes.add("POST", "/v1/threads/{thread_id}/handoff")
async def handoff(call: api.Call, body: HandoffRequest) -> web.StreamResponse:
    """A human takes the thread over: the bot stops answering it."""
    return await _set_state(call, "human", {"handed_off_at": utcnow(), "handoff_note": body.note})


@routes.add("POST", "/v1/threads/{thread_id}/handback")
async def handback(call: api.Call) -> web.StreamResponse:
    """Give the thread back to the bot."""
    thread = await thread_of(call)
    messages = call.app[deps.MESSAGES]
    # What the lead wrote meanwhile was the human's to answer: the bot starts afresh.
    pending = [m.id for m in await messages.unanswered(call.org_id, thread.id)]
    if pending:
        await messages.mark_answered(call.org_id, pending, "human")
    return await _set_state(call, "bot", {"handed_off_at": None})


async def _set_state(call: api.Call, state: str, extra: Document) -> web.StreamResponse:
    before = await thread_of(call)
    await call.app[deps.THREADS].update_state(call.org_id, before.id, {"state": state, **extra})
    after = await thread_of(call)
    await call.audited(
        f"thread.{state}",
        before.id,
        before={"state": before.state},
        after={"state": state},
    )
    return api.json_response(public_thread(after))


@routes.add("POST", "/v1/threads/{thread_id}/messages", status=202)
async def reply(call: api.Call, body: HumanReply) -> web.StreamResponse:
    """The agent writes to the lead; it leaves through outbound under all its rules."""
    thread = await thread_of(call)
    lead = api.found(await call.app[deps.LEADS].view_for_org(call.org_id, thread.lead_id), "lead")
    unanswered = await call.app[deps.MESSAGES].unanswered(call.org_id, thread.id)
    agent = await call.app[deps.AGENTS].get_in_org(call.org_id, thread.agent_id)
    portfolio = agent.portfolio if agent else f"agent:{thread.agent_id}"
    command = human_command(thread, lead.address_for(portfolio), [Bubble(text=body.text)])
    command_id = command.command_id
    author = f"human:{call.key.id if call.key else 'unknown'}"
    outbox = call.app[deps.OUTBOX]
    command = await outbox.record(command, [m.id for m in unanswered], author)
    await outbox.publish(command)
    await call.audited("thread.reply", thread.id, after={"command_id": command_id})
    return api.json_response({"command_id": command_id, "thread_id": thread.id}, status=202)
