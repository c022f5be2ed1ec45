"""Outbound: the only caller of Gupshup's send API; each bubble is sent at most once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

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
from shared.logs import get_logger
from shared.metrics import DELIVERY_STATUSES, SEND_WAIT, SENDS, THROTTLED, TIER_USAGE
from shared.models import BillingEvent, DeliveryStatus, SendCommand, TemplateEvent, utcnow
from shared.phones import wa_id
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.consents import ConsentRepository
from shared.repositories.messages import MessageRepository, message_id
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
# A send that wakes later than this after its slot takes a fresh slot (see RateSlots).
MAX_LATENESS_SECONDS = 0.01

OPTED_OUT = 1012
NOT_ON_WHATSAPP = 1002
AGENT_THROTTLED = {4001, 130429}  # Gupshup's and Meta's "rate limited" for the number
AGENT_BACKOFF_SECONDS = 30.0
# A claim older than a Gupshup call can take (its timeout plus margin) was interrupted.
INTERRUPTED_AFTER_SECONDS = 60.0

OutboundEvent = SendCommand | DeliveryStatus | TemplateEvent | BillingEvent


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

    async def handle(self, event: OutboundEvent) -> None:
        """Dispatch by event type."""
        if isinstance(event, SendCommand):
            await self.send(event)
        elif isinstance(event, DeliveryStatus):
            await self.record_status(event)
        elif isinstance(event, TemplateEvent):
            await self.record_template(event)
        else:
            await self.record_billing(event)

    async def send(self, command: SendCommand) -> None:
        """Send the command's bubbles in order, paced; a bubble already claimed is never re-sent."""
        agent = await self._agents.by_id(command.agent_id)
        if agent is None or agent.org_id != command.org_id:
            raise PermanentError(f"no agent {command.agent_id} in organization {command.org_id}")
        since = command.created_at - timedelta(seconds=self._settings.ordering_wait_seconds)
        if await self._replies.earlier_unfinished(
            command.org_id, command.thread_id, command.created_at, since
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
        window_open = await self._window_open(command)
        skip_reason = await self._rule_blocking(agent, command, window_open)
        if skip_reason is not None:
            await self._skip(command, skip_reason)
            return
        api_key = self._key_ring.decrypt(
            agent.credentials["gupshup_api_key"], agent_id=agent.id, field="gupshup_api_key"
        )
        templates = await self._templates_of(command)
        thread = await self._threads.get(command.org_id, command.thread_id)
        last_sent = thread.get("last_outbound_at") if thread else None
        previous = last_sent.timestamp() if last_sent else 0.0
        for index, bubble in enumerate(command.bubbles):
            send_id = command.send_id(index)
            existing = await self._claim(command, index)
            if existing is not None:
                SENDS.labels(agent.id, "duplicate").inc()
                if existing["state"] == "sending":
                    await self._resolve_interrupted(agent, existing)
                continue
            try:
                # Claimed first, so nothing stands between the slot and the request.
                await self._pace(agent, command, previous)
            except Defer:
                await self._sends.release(send_id)  # no request was made: free to claim again
                raise
            template = templates.get(bubble.template_id or "")
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
                    message={"type": "text", "text": bubble.text},
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

    async def _resolve_interrupted(self, agent: Agent, claim: Document) -> None:
        """A claim still `sending` long after it was made: its process died mid-call.

        Gupshup may or may not have the message and has no idempotency key, so it is never
        resent: it is recorded `unknown` (visible to operators and in the thread's delivery)
        and a delivery status that names it later still attaches by Gupshup's id if known.
        A younger claim may be another replica's call in progress and is left alone.
        """
        age = (utcnow() - claim["claimed_at"]).total_seconds()
        if age < INTERRUPTED_AFTER_SECONDS:
            log.info("bubble being sent by another worker", send_id=claim["_id"])
            return
        await self._sends.finish(
            claim["_id"], "unknown", error="interrupted during the call to Gupshup; not resent"
        )
        SENDS.labels(agent.id, "ambiguous").inc()
        log.warning("interrupted send recorded as unknown, not resent", send_id=claim["_id"])

    async def _pace(self, agent: Agent, command: SendCommand, previous: float) -> None:
        """Wait for the agent's rate slot and the pause after the lead's previous message.

        A wait longer than `send_max_wait_seconds` is not spent holding this consumer: the
        slot is given back and the command deferred, so a throttled agent delays nobody else.
        """
        key = f"agent:{agent.id}"
        interval = RateSlots.interval(agent.rate_per_second)
        not_before = max(
            time.time(),
            previous + self._settings.lead_pause_seconds,
            await self._pauses.until(agent.id),
        )
        for _ in range(3):
            start = await self._slots.claim(key, interval, not_before)
            wait = start - time.time()
            if wait > self._settings.send_max_wait_seconds:
                await self._slots.give_back(key, start, interval)
                THROTTLED.labels(agent.id).inc()
                raise Defer("agent at its send rate", delay_ms=int(min(wait, 30.0) * 1000))
            if wait > 0:
                await asyncio.sleep(wait)
            SEND_WAIT.observe(max(wait, 0.0))
            if time.time() - start <= MAX_LATENESS_SECONDS:
                return
            not_before = time.time()  # woke too late for this slot: take a fresh one
        # Never send outside a slot: a busy process hands the command back instead.
        raise Defer("too busy to keep the send rate", delay_ms=100)

    async def _record_result(
        self, agent: Agent, command: SendCommand, send_id: str, result: SendResult
    ) -> None:
        match result:
            case Submitted(message_id=gupshup_id):
                now = utcnow()
                await self._sends.finish(send_id, "submitted", gupshup_message_id=gupshup_id)
                await self._messages.set_provider_id(
                    command.org_id, message_id(command.agent_id, send_id), gupshup_id, now
                )
                await self._threads.update_state(
                    command.org_id, command.thread_id, {"last_outbound_at": now}
                )
                SENDS.labels(agent.id, "submitted").inc()
            case NotReached(reason=reason, retry_after=retry_after):
                await self._sends.release(send_id)
                SENDS.labels(agent.id, "retry").inc()
                if retry_after is not None:  # Gupshup said when: wait that long, not a failure
                    await self._pauses.pause(agent.id, retry_after)
                    raise Defer(
                        f"Gupshup asked to wait: {reason}",
                        delay_ms=int(min(retry_after, 600) * 1000) or 100,
                    )
                raise TransientError(f"Gupshup not reached: {reason}")
            case Refused(status=status, reason=reason):
                await self._sends.finish(send_id, "failed", error=f"HTTP {status}: {reason}")
                SENDS.labels(agent.id, "refused").inc()
                raise PermanentError(f"Gupshup refused the send (HTTP {status}): {reason}")
            case Ambiguous(reason=reason):
                await self._sends.finish(send_id, "unknown", error=reason)
                SENDS.labels(agent.id, "ambiguous").inc()
                raise PermanentError(f"send may or may not have happened: {reason}")

    async def _claim(self, command: SendCommand, index: int) -> Document | None:
        """Claim one bubble of a command (None: ours to send; else the earlier claim)."""
        return await self._sends.claim(
            command.send_id(index),
            {
                "org_id": command.org_id,
                "agent_id": command.agent_id,
                "thread_id": command.thread_id,
                "command_id": command.command_id,
                "index": index,
                "destination": command.destination,
            },
        )

    async def _templates_of(self, command: SendCommand) -> dict[str, Template]:
        """The templates a command's template bubbles name (all checked usable already)."""
        found: dict[str, Template] = {}
        for bubble in command.bubbles:
            if bubble.type == "template" and bubble.template_id:
                template = await self._templates.get(command.org_id, bubble.template_id)
                if template is not None and template.agent_id == command.agent_id:
                    found[bubble.template_id] = template
        return found

    async def _window_open(self, command: SendCommand) -> bool:
        """Whether the lead wrote within the last 24 hours (free-form allowed)."""
        thread = await self._threads.get(command.org_id, command.thread_id)
        last_inbound = thread.get("last_inbound_at") if thread else None
        return last_inbound is not None and utcnow() - last_inbound <= SESSION_WINDOW

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

    async def _rule_blocking(
        self, agent: Agent, command: SendCommand, window_open: bool
    ) -> str | None:
        """Why WhatsApp's rules forbid this message now, or None."""
        if command.purpose != "opt_out_confirmation" and await self._consents.opted_out(
            command.org_id, command.lead_id
        ):
            return "opted_out"
        templates = await self._templates_of(command)
        for bubble in command.bubbles:
            if bubble.type == "template":
                template = templates.get(bubble.template_id or "")
                if template is None or not template.usable:
                    return "template_not_approved"
                if len(bubble.params) != template.parameters:
                    return "template_parameters"
        if all(b.type == "template" for b in command.bubbles):
            # Approved templates may go outside the window: business-initiated, tier-limited.
            if not window_open and not await self._within_tier(agent, command.lead_id):
                return "tier_limit"
            return None
        return None if window_open else "window_closed"

    async def _skip(self, command: SendCommand, reason: str) -> None:
        """Record every bubble as skipped, with the reason, instead of sending it."""
        for index in range(len(command.bubbles)):
            send_id = command.send_id(index)
            existing = await self._claim(command, index)
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
        elif code in AGENT_THROTTLED:
            await self._pauses.pause(status.agent_id, AGENT_BACKOFF_SECONDS)
            THROTTLED.labels(status.agent_id).inc()
        log.info(
            "delivery failed", code=code, reason=status.error_reason, thread_id=send["thread_id"]
        )

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
