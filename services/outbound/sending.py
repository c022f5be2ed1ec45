"""Sending a `SendCommand`: plan under WhatsApp's rules, claim each bubble, pace it, send it.

Guarantees: a reply's bubbles leave in order and after the thread's earlier replies; each
bubble reaches Gupshup at most once (its send is claimed in the store before the call, and
a call whose outcome is unknown is resolved by a status, never blindly repeated, see
`shared.repositories.sends`); what may not be sent is recorded as skipped with its reason.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from services.outbound import rules
from services.outbound.pacing import Pacer
from services.outbound.payloads import submit
from services.outbound.rules import Plan, SkipReason
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
from shared.metrics import QUEUE_WAIT, SENDS, THROTTLED, TIER_USAGE
from shared.models import SendCommand, utcnow
from shared.quiet_hours import QuietHours
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.consents import ConsentRepository
from shared.repositories.leads import LeadRepository
from shared.repositories.messages import MessageRepository, message_id
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.replies import ReplyRepository
from shared.repositories.sends import SendClaim, SendRepository
from shared.repositories.templates import Template, TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Document, Store
from shared.whatsapp import SESSION_WINDOW, window_open

log = get_logger(__name__)


class Sending:
    """Handle send commands: the only caller of Gupshup's send API."""

    def __init__(
        self,
        store: Store,
        agents: AgentDirectory,
        pacer: Pacer,
        key_ring: KeyRing,
        gupshup: GupshupClient,
        settings: Settings,
    ) -> None:
        self._agents, self._pacer, self._settings = agents, pacer, settings
        self._key_ring, self._gupshup = key_ring, gupshup
        self._replies = ReplyRepository(store)
        self._threads = ThreadRepository(store)
        self._leads = LeadRepository(store)
        self._consents = ConsentRepository(store)
        self._templates = TemplateRepository(store)
        self._orgs = OrganizationRepository(store)
        self._messages = MessageRepository(store)
        self._sends = SendRepository(store)

    async def handle(self, command: SendCommand) -> None:
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
        last_inbound = thread.last_inbound_at if thread else None
        if rules.overtaken(command, last_inbound):
            await self._skip(command, "lead_wrote_since")
            return
        if command.purpose == "agent_notification":
            # The window that counts is the agent's own number's with the business number.
            last_inbound = await self._last_inbound_from(agent, command.destination)
        is_open = window_open(last_inbound, utcnow())
        plan = await self._plan(agent, command, is_open)
        if isinstance(plan, str):
            await self._skip(command, plan)
            return
        if plan.business_initiated:
            await self._hold_for_quiet_hours(agent)
        if plan.replaces_reply:
            await self._skip(command, "window_closed_fallback_sent")
            await self._store_fallback_messages(command)
        last_sent = thread.last_outbound_at if thread else None
        await self._deliver(agent, command, plan, last_sent, business_initiated=not is_open)

    async def _deliver(
        self,
        agent: Agent,
        command: SendCommand,
        plan: Plan,
        last_sent: datetime | None,
        *,
        business_initiated: bool,
    ) -> None:
        """Claim, pace and send each planned bubble in order, recording each outcome."""
        api_key = self._key_ring.decrypt(
            agent.credentials["gupshup_api_key"], agent_id=agent.id, field="gupshup_api_key"
        )
        # Pacing runs on real time: the last send is placed by how long ago it was.
        previous = time.time() - (utcnow() - last_sent).total_seconds() if last_sent else 0.0
        for index, bubble in enumerate(plan.bubbles):
            send_id = plan.send_ids[index]
            existing = await self._claim(command, send_id, index)
            if existing is not None and await self._settled(agent, existing):
                continue
            try:
                # Claimed first, so nothing stands between the slot and the request.
                await self._pacer.pace(agent, previous)
            except (Defer, asyncio.CancelledError):
                # No request was made (deferred, or the service stopping): free to claim again.
                await self._sends.release(send_id)
                raise
            if index == 0 and existing is None:
                QUEUE_WAIT.labels(agent.id).observe(
                    max((utcnow() - command.created_at).total_seconds(), 0.0)
                )
            template = plan.templates.get(bubble.template_id or "")
            result = await submit(
                self._gupshup,
                agent=agent,
                api_key=api_key,
                destination=command.destination,
                bubble=bubble,
                send_id=send_id,
                template=template,
            )
            previous = time.time()
            if template is not None and isinstance(result, Submitted):
                await self._templates.record_use(
                    template,
                    lead_id=command.lead_id,
                    thread_id=command.thread_id,
                    send_id=send_id,
                    business_initiated=business_initiated,
                )
            await self._record_result(agent, command, send_id, result)

    @property
    def _interrupted_after(self) -> float:
        return rules.interrupted_after_seconds(self._settings.gupshup_timeout_seconds)

    async def _settled(self, agent: Agent, claim: SendClaim) -> bool:
        """Whether an already claimed bubble is done with (else: ours to send again).

        A `sending` claim younger than a Gupshup call can take is another worker's call in
        progress, and later bubbles wait for it. An older one was interrupted by a crash and,
        like a send Gupshup answered ambiguously, becomes `unknown`: it waits for a status
        callback to show that Gupshup has it, and is sent again only when none came within
        `ambiguous_resolve_seconds` (see shared.repositories.sends).
        """
        resolve_seconds = self._settings.ambiguous_resolve_seconds
        verdict = rules.judge_claim(
            claim,
            utcnow(),
            interrupted_after=self._interrupted_after,
            resolve_seconds=resolve_seconds,
        )
        if verdict == "being_sent":
            raise Defer("bubble being sent by another worker", delay_ms=1000)
        if verdict == "interrupted":
            await self._sends.mark_unknown(
                claim.id, claim.claimed_at, "interrupted during the call to Gupshup"
            )
            SENDS.labels(agent.id, "ambiguous").inc()
            log.warning("interrupted send is unknown until Gupshup shows it", send_id=claim.id)
            claim = await self._sends.get(claim.id) or claim
            verdict = rules.judge_claim(
                claim, utcnow(), interrupted_after=0, resolve_seconds=resolve_seconds
            )
        # Anything but unknown now is done with; still `sending` after marking it unknown
        # means another worker took it over meanwhile (whatever its clock says).
        if verdict not in ("awaiting_status", "resend"):
            SENDS.labels(agent.id, "duplicate").inc()
            return True
        if verdict == "awaiting_status":
            remaining = rules.status_wait_seconds(claim, utcnow(), resolve_seconds)
            raise Defer(
                "waiting for a status to show whether Gupshup has the message",
                delay_ms=max(int(remaining * 1000), 100),
            )
        if not await self._sends.claim_resend(claim):
            current = await self._sends.get(claim.id)
            if current is not None and current.state not in ("sending", "unknown"):
                return True  # resolved by a status meanwhile
            raise Defer("another worker is resending this bubble", delay_ms=1000)
        SENDS.labels(agent.id, "resent").inc()
        log.warning("no status showed Gupshup has the message: sending it again", send_id=claim.id)
        return False

    async def _hold_for_quiet_hours(self, agent: Agent) -> None:
        """Business-initiated messages wait while it is quiet in the agent's time zone."""
        quiet = agent.quiet_hours
        if quiet is None:
            org = await self._orgs.get(agent.org_id)
            quiet = org.settings.quiet_hours if org else QuietHours()
        recheck = rules.quiet_hours_recheck(
            quiet, utcnow(), agent.timezone, self._settings.quiet_hours_recheck_seconds
        )
        if recheck > 0:
            SENDS.labels(agent.id, "held_quiet_hours").inc()
            raise Defer("quiet hours in the agent's time zone", delay_ms=int(recheck * 1000) + 1)

    async def _store_fallback_messages(self, command: SendCommand) -> None:
        """The fallback template replaces the reply in the thread's history."""
        for index, bubble in enumerate(command.fallback):
            send_id = command.fallback_send_id(index)
            await self._messages.store_outbound(command, send_id, bubble, "fallback")

    async def _record_result(
        self, agent: Agent, command: SendCommand, send_id: str, result: SendResult
    ) -> None:
        match result:
            case Submitted(message_id=gupshup_id):
                self._pacer.reached(agent.id)
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
                    # A 429 without a hint: throttling is waited out, not spent as failed
                    # attempts.
                    retry_after = self._pacer.backoff_seconds(agent.id)
                await self._pacer.pause(agent.id, retry_after)
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

    async def _claim(self, command: SendCommand, send_id: str, index: int) -> SendClaim | None:
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

    async def _plan(self, agent: Agent, command: SendCommand, is_open: bool) -> Plan | SkipReason:
        """What to send under WhatsApp's rules, or why nothing may be sent now."""
        opted_out = rules.respects_opt_out(command) and await self._consents.opted_out(
            command.org_id, command.lead_id
        )
        plan = rules.choose_bubbles(command, window_open=is_open, opted_out=opted_out)
        if isinstance(plan, str):
            return plan
        found: dict[str, Template | None] = {}
        for template_id in rules.template_ids(plan):
            found[template_id] = await self._templates.get(command.org_id, template_id)
        checked = rules.check_templates(plan, found, agent.id)
        if isinstance(checked, str):
            return checked
        if rules.tier_applies(command, window_open=is_open) and not await self._within_tier(
            agent, command.lead_id
        ):
            return "tier_limit"
        return checked

    async def _last_inbound_from(self, agent: Agent, number: str) -> datetime | None:
        """When this number last wrote to the agent's business number (its window)."""
        person_id = await self._leads.id_by_phone(number)
        if person_id is None:
            return None
        thread = await self._threads.find_for(agent.org_id, agent.id, person_id)
        return thread.last_inbound_at if thread else None

    async def _within_tier(self, agent: Agent, lead_id: str) -> bool:
        """Whether one more business-initiated message to this lead fits the messaging tier."""
        reached = await self._templates.leads_reached(agent.id, utcnow() - SESSION_WINDOW)
        if agent.messaging_tier:
            TIER_USAGE.labels(agent.id).set(len(reached) / agent.messaging_tier)
        return rules.within_tier(agent.messaging_tier, reached, lead_id)

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
