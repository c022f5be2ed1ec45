"""Threads: read (paginated, with their messages), outcomes, and handoff to a human."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from shared.models import Bubble, utcnow
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


def public_thread(thread: Thread) -> dict[str, Any]:
    """What the API shows of a thread."""
    return {"thread_id": thread.id, **{f: getattr(thread, f) for f in THREAD_FIELDS}}


def public_message(message: ThreadMessage) -> dict[str, Any]:
    """What the API shows of a message."""
    return {"message_id": message.id, **{f: getattr(message, f) for f in MESSAGE_FIELDS}}


async def lead_view(call: api.Call, lead_id: str) -> dict[str, Any] | None:
    """What the caller's organization sees of a lead, or None."""
    view = await call.app[deps.LEADS].view_for_org(call.org_id, lead_id)
    if view is None:
        return None
    return {
        **view.as_json(),
        "opted_out": await call.app[deps.CONSENTS].opted_out(call.org_id, lead_id),
    }


async def thread_of(call: api.Call) -> Thread:
    """The thread named by the path, if it belongs to the caller's organization."""
    return api.found(
        await call.app[deps.THREADS].get(call.org_id, call.param("thread_id")), "thread"
    )


routes = api.RouteTable()


@routes.add("GET", "/v1/threads")
async def list_threads(call: api.Call) -> web.StreamResponse:
    """Threads of the organization, paginated."""
    limit = call.query_int("limit", 50, 1, 200)
    query = call.request.query
    page = await call.app[deps.THREADS].page(
        call.org_id,
        after=query.get("after"),
        limit=limit,
        agent_id=query.get("agent_id"),
        state=query.get("state"),
    )
    return api.page_response(page, limit, public_thread, lambda thread: thread.id)


@routes.add("GET", "/v1/threads/{thread_id}")
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
