"""Outbound: the only caller of Gupshup's send API; each bubble is sent at most once."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.broker import Broker
from shared.crypto import KeyRing
from shared.errors import Defer, PermanentError, TransientError
from shared.gupshup.client import (
    Ambiguous,
    GupshupClient,
    NotReached,
    Refused,
    SendResult,
    Submitted,
)
from shared.ids import derived_id
from shared.logs import get_logger
from shared.metrics import (
    DELIVERY_STATUSES,
    QUEUE_WAIT,
    SEND_WAIT,
    SENDS,
    THROTTLED,
    TIER_USAGE,
)
from shared.models import (
    BillingEvent,
    Bubble,
    DeliveryStatus,
    SendCommand,
    TemplateEvent,
    utcnow,
)
from shared.phones import wa_id
from shared.quiet_hours import QuietHours
from shared.replies import ReplyOutbox, outbound_message
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.consents import ConsentRepository
from shared.repositories.messages import MessageRepository, message_id
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.rate_slots import AgentPauses, RateSlots
from shared.repositories.replies import ReplyRepository
from shared.repositories.sends import SendRepository
from shared.repositories.templates import Template, TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Document, Store, with_retry

log = get_logger(__name__)

# WhatsApp's customer service window: free-form messages only this long after the lead's
# last message (templates, outside it, come with their own issue).
SESSION_WINDOW = timedelta(hours=24)
# A send that wakes later than this after its slot takes a fresh slot: with slots spaced by
# SLOT_MARGIN, what is left of the margin absorbs uneven latency to Gupshup (see RateSlots).
MAX_LATENESS_SECONDS = 0.006

OPTED_OUT = 1012
NOT_ON_WHATSAPP = 1002
WINDOW_CLOSED = {1005, 1006, 131047}  # Gupshup's and Meta's "outside the 24-hour window"
AGENT_THROTTLED = {4001, 130429}  # Gupshup's and Meta's "rate limited" for the number
AGENT_BACKOFF_SECONDS = 30.0
# Backoff when Gupshup gives no hint: up to twice as long each time, at most this long.
THROTTLE_MAX_SECONDS = 60.0


def session_message(bubble: Bubble, send_id: str) -> dict[str, object]:
    """Gupshup's `message` for a free-form bubble: text, or a list the lead picks from."""
    if bubble.type != "list":
        return {"type": "text", "text": bubble.text}
    return {
        "type": "list",
        "title": "",
        "body": bubble.text,
        "msgid": send_id,
        "globalButtons": [{"type": "text", "title": bubble.button or "Choose"}],
        "items": [
            {
                "title": "",
                "subtitle": "",
                "options": [
                    {
                        "type": "text",
                        "title": choice.title,
                        "description": choice.description or "",
                        "postbackText": choice.id,
                    }
                    for choice in bubble.choices
                ],
            }
        ],
    }


@dataclass(frozen=True)
class Plan:
    """The bubbles a command sends now, with their send ids and templates."""

    bubbles: list[Bubble]
    send_ids: list[str]
    templates: dict[str, Template]
    business_initiated: bool
    replaces_reply: bool  # the fallback template goes instead of the reply's text


def _come_back_in(wait: float, max_wait: float) -> int:
    """Milliseconds to defer a send whose rate slot is `wait` seconds away.

    It comes back when the slot is at most `max_wait` away (delay tiers round the delay up),
    so the agent's sends keep coming with no gap in its rate.
    """
    return int(max(min(wait - max_wait, 30.0), 0.1) * 1000)


class Outbound:
    """Send replies through Gupshup and record what happens to them."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        agents: AgentDirectory,
        key_ring: KeyRing,
        gupshup: GupshupClient,
        settings: Settings,
    ) -> None:
        self._broker = broker
        self._settings = settings
        # A claim older than a Gupshup call can take (its timeout plus margin) was interrupted.
        self._interrupted_after = settings.gupshup_timeout_seconds * 2 + 5
        self._slots = RateSlots(store)
        self._pauses = AgentPauses(store)
        self._replies = ReplyRepository(store)
        self._agents = agents
        self._key_ring = key_ring
        self._gupshup = gupshup
        self._sends = SendRepository(store)
        self._messages = MessageRepository(store)
        self._threads = ThreadRepository(store)
        self._consents = ConsentRepository(store)
        self._templates = TemplateRepository(store)
        self._billing = store.db["billing_events"]
        self._orgs = OrganizationRepository(store)
        self._leads = store.db["leads"]
        # Consecutive 429s per agent in this process, for the exponential backoff.
        self._throttled: dict[str, int] = {}
        # Per agent, this process's sends take their rate slots one at a time (see _pace).
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting_turn: dict[str, int] = {}
        self._outbox = ReplyOutbox(store, broker)

    async def send(self, command: SendCommand) -> None:
        """Send the command's bubbles in order, paced; a bubble already claimed is never re-sent."""
        agent = await self._agents.by_id(command.agent_id)
        if agent is None or agent.org_id != command.org_id:
            raise PermanentError(f"no agent {command.agent_id} in organization {command.org_id}")
        since = command.created_at - timedelta(seconds=self._settings.ordering_wait_seconds)
        if await self._replies.earlier_unfinished(
            command.org_id, command.thread_id, command.created_at, since, command.command_id
        ):
            raise Defer("an earlier reply of this thread is still on its way", delay_ms=200)
        try:
            await self._send_bubbles(agent, command)
        except PermanentError:
            await self._replies.mark_outbound_done(command.org_id, command.command_id)
            raise
        await self._replies.mark_outbound_done(command.org_id, command.command_id)

    async def _send_bubbles(self, agent: Agent, command: SendCommand) -> None:
        if not agent.active:
            await self._skip(command, "agent_suspended")
            return
        thread = await self._threads.get(command.org_id, command.thread_id)
        last_inbound = thread.get("last_inbound_at") if thread else None
        if command.purpose == "follow_up" and last_inbound and last_inbound > command.created_at:
            # A follow-up the lead overtook; a reminder of their appointment still goes.
            await self._skip(command, "lead_wrote_since")
            return
        if command.purpose == "agent_notification":
            # The window that counts is the agent's own number's with the business number.
            last_inbound = await self._last_inbound_from(agent, command.destination)
        window_open = last_inbound is not None and utcnow() - last_inbound <= SESSION_WINDOW
        plan = await self._plan(agent, command, window_open)
        if isinstance(plan, str):
            await self._skip(command, plan)
            return
        if plan.business_initiated:
            await self._hold_for_quiet_hours(agent)
        if plan.replaces_reply:
            await self._skip(command, "window_closed_fallback_sent")
            await self._store_fallback_messages(command)
        api_key = self._key_ring.decrypt(
            agent.credentials["gupshup_api_key"], agent_id=agent.id, field="gupshup_api_key"
        )
        last_sent = thread.get("last_outbound_at") if thread else None
        # Pacing runs on real time: the last send is placed by how long ago it was.
        previous = time.time() - (utcnow() - last_sent).total_seconds() if last_sent else 0.0
        for index, bubble in enumerate(plan.bubbles):
            send_id = plan.send_ids[index]
            existing = await self._claim(command, send_id, index)
            if existing is not None and await self._settled(agent, existing):
                continue
            try:
                # Claimed first, so nothing stands between the slot and the request.
                await self._pace(agent, command, previous)
            except (Defer, asyncio.CancelledError):
                # No request was made (deferred, or the service stopping): free to claim again.
                await self._sends.release(send_id)
                raise
            if index == 0 and existing is None:
                QUEUE_WAIT.labels(agent.id).observe(
                    max((utcnow() - command.created_at).total_seconds(), 0.0)
                )
            template = plan.templates.get(bubble.template_id or "")
            if template is not None:
                result = await self._gupshup.send_template_message(
                    api_key=api_key,
                    app=agent.gupshup_app,
                    source=wa_id(agent.number),
                    destination=wa_id(command.destination),
                    template_id=template.provider_id or "",
                    params=bubble.params,
                )
            else:
                result = await self._gupshup.send_session_message(
                    api_key=api_key,
                    app=agent.gupshup_app,
                    source=wa_id(agent.number),
                    destination=wa_id(command.destination),
                    message=session_message(bubble, send_id),
                )
            previous = time.time()
            if template is not None and isinstance(result, Submitted):
                await self._templates.record_use(
                    template,
                    lead_id=command.lead_id,
                    thread_id=command.thread_id,
                    send_id=send_id,
                    business_initiated=not window_open,
                )
            await self._record_result(agent, command, send_id, result)

    async def _settled(self, agent: Agent, claim: Document) -> bool:
        """Whether an already claimed bubble is done with (else: ours to send again).

        A `sending` claim younger than a Gupshup call can take is another worker's call in
        progress, and later bubbles wait for it. An older one was interrupted by a crash and,
        like a send Gupshup answered ambiguously, becomes `unknown`: it waits for a status
        callback to show that Gupshup has it, and is sent again only when none came within
        `ambiguous_resolve_seconds` (see shared.repositories.sends).
        """
        if claim["state"] == "sending":
            age = (utcnow() - claim["claimed_at"]).total_seconds()
            if age < self._interrupted_after:
                raise Defer("bubble being sent by another worker", delay_ms=1000)
            await self._sends.mark_unknown(
                claim["_id"], claim["claimed_at"], "interrupted during the call to Gupshup"
            )
            SENDS.labels(agent.id, "ambiguous").inc()
            log.warning("interrupted send is unknown until Gupshup shows it", send_id=claim["_id"])
            claim = await self._sends.get(claim["_id"]) or claim
        if claim["state"] != "unknown" or claim.get("gupshup_message_id"):
            SENDS.labels(agent.id, "duplicate").inc()
            return True
        waited = (utcnow() - claim["unknown_since"]).total_seconds()
        remaining = self._settings.ambiguous_resolve_seconds - waited
        if remaining > 0:
            raise Defer(
                "waiting for a status to show whether Gupshup has the message",
                delay_ms=max(int(remaining * 1000), 100),
            )
        if not await self._sends.claim_resend(claim):
            current = await self._sends.get(claim["_id"])
            if current is not None and current["state"] not in ("sending", "unknown"):
                return True  # resolved by a status meanwhile
            raise Defer("another worker is resending this bubble", delay_ms=1000)
        SENDS.labels(agent.id, "resent").inc()
        log.warning(
            "no status showed Gupshup has the message: sending it again", send_id=claim["_id"]
        )
        return False

    async def _hold_for_quiet_hours(self, agent: Agent) -> None:
        """Business-initiated messages wait while it is quiet in the agent's time zone."""
        quiet = agent.quiet_hours
        if quiet is None:
            org = await self._orgs.get(agent.org_id)
            quiet = org.settings.quiet_hours if org else QuietHours()
        wait = quiet.wait_seconds(utcnow(), agent.timezone)
        if wait > 0:
            SENDS.labels(agent.id, "held_quiet_hours").inc()
            recheck = min(wait, self._settings.quiet_hours_recheck_seconds)
            raise Defer("quiet hours in the agent's time zone", delay_ms=int(recheck * 1000) + 1)

    async def _store_fallback_messages(self, command: SendCommand) -> None:
        """The fallback template replaces the reply in the thread's history."""
        for index, bubble in enumerate(command.fallback):
            send_id = command.fallback_send_id(index)
            await self._messages.store_outbound(
                outbound_message(command, send_id, bubble, "fallback")
            )

    async def _pace(self, agent: Agent, command: SendCommand, previous: float) -> None:
        """Wait for the pause after the lead's previous message, then the agent's rate slot.

        In this process an agent's sends take their slots one at a time, each just before
        it leaves, so a slot is held only by the send about to use it and a late wake-up
        wastes one slot, not a queue of them. A wait longer than `send_max_wait_seconds` is
        not spent holding this consumer: the command is deferred, so a throttled agent
        delays nobody else.
        """
        key = f"agent:{agent.id}"
        interval = RateSlots.interval(agent.rate_per_second)
        max_wait = self._settings.send_max_wait_seconds
        not_before = max(
            previous + self._settings.lead_pause_seconds, await self._pauses.until(agent.id)
        )
        pause = not_before - time.time()
        if pause > max_wait:  # mostly: Gupshup throttled the agent, which is paused
            THROTTLED.labels(agent.id).inc()
            delay_ms = _come_back_in(pause, max_wait)
            raise Defer("agent paused, or pausing after the lead's last message", delay_ms=delay_ms)
        if pause > 0:
            await asyncio.sleep(pause)
        queued = self._waiting_turn.get(key, 0)
        if queued * interval > max_wait:
            THROTTLED.labels(agent.id).inc()
            delay_ms = _come_back_in(queued * interval, max_wait)
            raise Defer("agent at its send rate", delay_ms=delay_ms)
        self._waiting_turn[key] = queued + 1
        try:
            async with self._turns.setdefault(key, asyncio.Lock()):
                await self._take_slot(agent, key, interval)
        finally:
            self._waiting_turn[key] -= 1

    async def _take_slot(self, agent: Agent, key: str, interval: float) -> None:
        for _ in range(3):
            start = await self._slots.claim(key, interval, time.time())
            wait = start - time.time()
            if wait > self._settings.send_max_wait_seconds:
                await self._slots.give_back(key, start, interval)
                THROTTLED.labels(agent.id).inc()
                delay_ms = _come_back_in(wait, self._settings.send_max_wait_seconds)
                raise Defer("agent at its send rate", delay_ms=delay_ms)
            if wait > 0:
                await asyncio.sleep(wait)
            SEND_WAIT.observe(max(wait, 0.0))
            if time.time() - start <= MAX_LATENESS_SECONDS:
                return
        # Never send outside a slot: a busy process hands the command back instead.
        raise Defer("too busy to keep the send rate", delay_ms=100)

    async def _record_result(
        self, agent: Agent, command: SendCommand, send_id: str, result: SendResult
    ) -> None:
        match result:
            case Submitted(message_id=gupshup_id):
                self._throttled.pop(agent.id, None)
                now = utcnow()
                await self._sends.finish(send_id, "submitted", gupshup_message_id=gupshup_id)
                await self._messages.set_provider_id(
                    command.org_id, message_id(command.agent_id, send_id), gupshup_id, now
                )
                if command.purpose != "agent_notification":
                    await self._threads.update_state(
                        command.org_id, command.thread_id, {"last_outbound_at": now}
                    )
                SENDS.labels(agent.id, "submitted").inc()
            case NotReached(reason=reason, retry_after=retry_after, throttled=throttled):
                await self._sends.release(send_id)
                SENDS.labels(agent.id, "retry").inc()
                if throttled:
                    THROTTLED.labels(agent.id).inc()
                waited = (utcnow() - command.created_at).total_seconds()
                if waited > self._settings.gupshup_outage_max_seconds:
                    # Surely not sent, and waiting longer would not help: an operator replays it.
                    raise PermanentError(f"Gupshup not reached for {waited:.0f} s: {reason}")
                if retry_after is None and not throttled:
                    # 502, 503, a refused connection: the retry tiers (about 12 minutes by
                    # default) wait out an outage.
                    raise TransientError(f"Gupshup not reached: {reason}")
                if retry_after is None:
                    # A 429 without a hint: back off exponentially, with jitter, per agent;
                    # throttling is waited out, not spent as failed attempts.
                    self._throttled[agent.id] = streak = self._throttled.get(agent.id, 0) + 1
                    base = self._settings.gupshup_backoff_base_seconds
                    ceiling = min(base * 2 ** (streak - 1), THROTTLE_MAX_SECONDS)
                    retry_after = random.uniform(ceiling / 2, ceiling)
                await self._pauses.pause(agent.id, retry_after)
                raise Defer(
                    f"Gupshup not reached, waiting {retry_after:.1f} s: {reason}",
                    delay_ms=int(min(retry_after, 600) * 1000) or 100,
                )
            case Refused(status=status, reason=reason):
                await self._sends.finish(send_id, "failed", error=f"HTTP {status}: {reason}")
                SENDS.labels(agent.id, "refused").inc()
                raise PermanentError(f"Gupshup refused the send (HTTP {status}): {reason}")
            case Ambiguous(reason=reason):
                await self._sends.mark_unknown(send_id, utcnow(), reason)
                SENDS.labels(agent.id, "ambiguous").inc()
                # Not an error to retry: the next bubbles wait until a status resolves it.
                raise Defer(
                    f"send may or may not have reached Gupshup: {reason}",
                    delay_ms=int(self._settings.ambiguous_resolve_seconds * 1000),
                )

    async def _claim(self, command: SendCommand, send_id: str, index: int) -> Document | None:
        """Claim one bubble of a command (None: ours to send; else the earlier claim)."""
        fields: Document = {
            "org_id": command.org_id,
            "agent_id": command.agent_id,
            "thread_id": command.thread_id,
            "lead_id": command.lead_id,
            "command_id": command.command_id,
            "index": index,
            "destination": command.destination,
        }
        if command.fallback and send_id == command.send_id(index):
            # Kept for a window-closed failure reported after Gupshup accepted the bubble.
            fields["fallback"] = [bubble.model_dump() for bubble in command.fallback]
        return await self._sends.claim(send_id, fields)

    async def _plan(self, agent: Agent, command: SendCommand, window_open: bool) -> Plan | str:
        """What to send under WhatsApp's rules, or why nothing may be sent now."""
        notification = command.purpose == "agent_notification"
        if (
            command.purpose != "opt_out_confirmation"
            and not notification
            and await self._consents.opted_out(command.org_id, command.lead_id)
        ):
            return "opted_out"
        bubbles, send_ids = (
            command.bubbles,
            [command.send_id(i) for i in range(len(command.bubbles))],
        )
        replaces_reply = False
        if not window_open and any(b.type != "template" for b in bubbles):
            # Free-form text needs the window; an approved template may stand in for it.
            if not command.fallback:
                return "window_closed"
            bubbles = command.fallback
            send_ids = [command.fallback_send_id(i) for i in range(len(bubbles))]
            replaces_reply = True
        templates: dict[str, Template] = {}
        for bubble in bubbles:
            if bubble.type != "template":
                continue
            template = await self._templates.get(command.org_id, bubble.template_id or "")
            if template is None or template.agent_id != agent.id or not template.usable:
                return "template_not_approved"
            if len(bubble.params) != template.parameters:
                return "template_parameters"
            templates[template.id] = template
        # Outside the window a template is business-initiated: tier-limited, held at night.
        # A notification goes to the agent, not a lead: neither applies to it.
        if (
            not window_open
            and not notification
            and not await self._within_tier(agent, command.lead_id)
        ):
            return "tier_limit"
        return Plan(
            bubbles=bubbles,
            send_ids=send_ids,
            templates=templates,
            business_initiated=(command.business_initiated or not window_open) and not notification,
            replaces_reply=replaces_reply,
        )

    async def _last_inbound_from(self, agent: Agent, number: str) -> datetime | None:
        """When this number last wrote to the agent's business number (its window)."""
        person = await self._leads.find_one({"phone": number}, {"_id": 1})
        if person is None:
            return None
        thread = await self._threads.find_for(agent.org_id, agent.id, person["_id"])
        return thread.get("last_inbound_at") if thread else None

    async def _within_tier(self, agent: Agent, lead_id: str) -> bool:
        """Whether one more business-initiated message to this lead fits the messaging tier.

        The tier counts unique leads reached by business-initiated messages in a rolling
        24 hours; a lead already reached in that time costs nothing more.
        """
        reached = await self._templates.leads_reached(agent.id, utcnow() - SESSION_WINDOW)
        if agent.messaging_tier:
            TIER_USAGE.labels(agent.id).set(len(reached) / agent.messaging_tier)
        return (
            not agent.messaging_tier or lead_id in reached or (len(reached) < agent.messaging_tier)
        )

    async def _skip(self, command: SendCommand, reason: str) -> None:
        """Record every bubble as skipped, with the reason, instead of sending it."""
        for index in range(len(command.bubbles)):
            send_id = command.send_id(index)
            existing = await self._claim(command, send_id, index)
            if existing is None:
                await self._sends.finish(send_id, "skipped", reason=reason)
        SENDS.labels(command.agent_id, f"skipped_{reason}").inc()
        log.info(
            "reply not sent",
            reason=reason,
            thread_id=command.thread_id,
            command_id=command.command_id,
        )

    async def record_status(self, status: DeliveryStatus) -> None:
        """Attach a delivery status to the send it is about."""
        DELIVERY_STATUSES.labels(status.status).inc()
        send = await self._sends.find_by_provider_id(
            status.org_id, status.gupshup_message_id, status.whatsapp_message_id
        )
        if send is None and status.gupshup_message_id and status.destination:
            lead = "+" + status.destination.lstrip("+")
            if await self._sends.in_flight(
                status.org_id, status.agent_id, lead, self._interrupted_after
            ):
                # The status overtook Gupshup's answer to the request it is about.
                raise Defer("a send to this lead is waiting for Gupshup's answer", delay_ms=500)
            send = await self._sends.resolve_unknown(
                status.org_id,
                status.agent_id,
                lead,
                status.gupshup_message_id,
                status.at,
                interrupted_before=utcnow() - timedelta(seconds=self._interrupted_after),
            )
            if send is not None:
                log.info("unknown send resolved: Gupshup has it", send_id=send["_id"])
                await self._messages.set_provider_id(
                    send["org_id"],
                    message_id(send["agent_id"], send["_id"]),
                    status.gupshup_message_id,
                    status.at,
                )
        if send is None:
            # The status may overtake our own record of Gupshup's id: retry a few times.
            raise TransientError("delivery status for a send not (yet) known")
        fields: dict[str, object] = {"whatsapp_message_id": status.whatsapp_message_id}
        if status.error_code is not None:
            fields.update(error_code=status.error_code, error_reason=status.error_reason)
        if status.pricing_category is not None:
            fields.update(
                pricing_category=status.pricing_category, pricing_type=status.pricing_type
            )
        await self._sends.record_status(send, status.status, status.at, fields)
        if status.status == "failed" and status.error_code is not None:
            await self._act_on_failure(send, status)

    async def _act_on_failure(self, send: Document, status: DeliveryStatus) -> None:
        """What Gupshup's failure codes mean for the lead, the thread and the agent."""
        code = status.error_code
        if code == OPTED_OUT:
            await self._consents.record(
                org_id=status.org_id,
                lead_id=await self._lead_of(send),
                agent_id=status.agent_id,
                opted_out=True,
                how="gupshup-failed-1012",
                at=status.at,
            )
        elif code == NOT_ON_WHATSAPP:
            # Also reported wrongly during outages: mark, never block on one event.
            await self._threads.update_state(
                status.org_id, send["thread_id"], {"not_on_whatsapp_at": status.at}
            )
        elif code in WINDOW_CLOSED and send.get("fallback"):
            await self._send_fallback(send)
        elif code in AGENT_THROTTLED:
            await self._pauses.pause(status.agent_id, AGENT_BACKOFF_SECONDS)
            THROTTLED.labels(status.agent_id).inc()
        log.info(
            "delivery failed", code=code, reason=status.error_reason, thread_id=send["thread_id"]
        )

    async def _send_fallback(self, send: Document) -> None:
        """Gupshup found the window closed after all: the reply's fallback template goes instead.

        Every bubble of the reply may fail so; the fallback's id is derived from the reply,
        so it is stored and sent once.
        """
        thread = await self._threads.get(send["org_id"], send["thread_id"])
        if thread is None:
            return
        command_id = derived_id("fbk", send["command_id"])
        command = SendCommand(
            event_id=command_id,
            command_id=command_id,
            org_id=send["org_id"],
            agent_id=send["agent_id"],
            thread_id=send["thread_id"],
            lead_id=str(thread["lead_id"]),
            destination=send["destination"],
            bubbles=[Bubble.model_validate(b) for b in send["fallback"]],
            created_at=utcnow(),
        )
        stored = await self._outbox.record(command, [], "fallback")
        await self._outbox.publish(stored)
        log.info("window closed at Gupshup: fallback template queued", command_id=command_id)

    async def _lead_of(self, send: Document) -> str:
        thread = await self._threads.get(send["org_id"], send["thread_id"])
        return str(thread["lead_id"]) if thread else ""

    async def record_template(self, event: TemplateEvent) -> None:
        """Keep the agent's template status current (Meta approved, rejected, paused it)."""
        if not event.name or not event.language:
            log.warning("template event without name or language", template_id=event.template_id)
            return
        await self._templates.set_status(
            event.org_id,
            event.agent_id,
            event.name,
            event.language,
            status=event.status,
            provider_id=event.template_id,
            reason=event.reason,
            at=event.at,
        )

    async def record_billing(self, event: BillingEvent) -> None:
        """Keep Gupshup's per-message pricing (append-only, once per event)."""
        await with_retry(
            lambda: self._billing.replace_one(
                {"_id": event.event_id}, {"_id": event.event_id, **event.model_dump()}, upsert=True
            )
        )
