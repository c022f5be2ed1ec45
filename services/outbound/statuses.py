"""Delivery statuses: attach each to the send it is about, and act on what a failure means.

Guarantees: a send's `status` is the furthest one seen, whatever order statuses arrive in
(see `SendRepository.record_status`); a status naming a Gupshup id we never recorded settles
the unknown send to that lead (Gupshup has it, so it is never sent again); a failure's code
opts the lead out, marks the thread, queues the reply's fallback template once, or pauses
the agent (see `rules.failure_consequence`).
"""

from __future__ import annotations

from datetime import timedelta

from services.outbound import rules
from services.outbound.pacing import AGENT_BACKOFF_SECONDS, Pacer
from shared.errors import Defer, TransientError
from shared.identity import is_bsuid
from shared.ids import derived_id
from shared.logs import get_logger
from shared.metrics import DELIVERY_STATUSES, THROTTLED
from shared.models import DeliveryStatus, utcnow
from shared.replies import ReplyOutbox, send_command
from shared.repositories.consents import ConsentRepository
from shared.repositories.messages import MessageRepository, message_id
from shared.repositories.sends import SendClaim, SendRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store

log = get_logger(__name__)


class DeliveryStatuses:
    """Handle Gupshup's delivery statuses for our sends."""

    def __init__(self, store: Store, outbox: ReplyOutbox, pacer: Pacer, settings: Settings) -> None:
        self._outbox, self._pacer, self._settings = outbox, pacer, settings
        self._sends = SendRepository(store)
        self._messages = MessageRepository(store)
        self._threads = ThreadRepository(store)
        self._consents = ConsentRepository(store)

    async def handle(self, status: DeliveryStatus) -> None:
        """Attach a delivery status to the send it is about."""
        DELIVERY_STATUSES.labels(status.status).inc()
        send = await self._sends.find_by_provider_id(
            status.org_id, status.gupshup_message_id, status.whatsapp_message_id
        )
        if send is None and status.gupshup_message_id and (status.destination or status.user_id):
            send = await self._resolve_unknown(status, status.gupshup_message_id)
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
            await self._act_on_failure(send, status, status.error_code)

    async def _resolve_unknown(self, status: DeliveryStatus, gupshup_id: str) -> SendClaim | None:
        """The unknown send to the status's lead that this status shows Gupshup has, if any."""
        lead = status_addresses(status)
        interrupted_after = rules.interrupted_after_seconds(self._settings.gupshup_timeout_seconds)
        if await self._sends.in_flight(status.org_id, status.agent_id, lead, interrupted_after):
            # The status overtook Gupshup's answer to the request it is about.
            raise Defer("a send to this lead is waiting for Gupshup's answer", delay_ms=500)
        send = await self._sends.resolve_unknown(
            status.org_id,
            status.agent_id,
            lead,
            gupshup_id,
            status.at,
            interrupted_before=utcnow() - timedelta(seconds=interrupted_after),
        )
        if send is not None:
            log.info("unknown send resolved: Gupshup has it", send_id=send.id)
            await self._messages.set_provider_id(
                send.org_id, message_id(send.agent_id, send.id), gupshup_id, status.at
            )
        return send

    async def _act_on_failure(self, send: SendClaim, status: DeliveryStatus, code: int) -> None:
        """What Gupshup's failure codes mean for the lead, the thread and the agent."""
        match rules.failure_consequence(code, has_fallback=bool(send.fallback)):
            case "opt_out":
                await self._consents.record(
                    org_id=status.org_id,
                    lead_id=await self._lead_of(send),
                    agent_id=status.agent_id,
                    opted_out=True,
                    how="gupshup-failed-1012",
                    at=status.at,
                )
            case "not_on_whatsapp":
                # Also reported wrongly during outages: mark, never block on one event.
                await self._threads.update_state(
                    status.org_id, send.thread_id, {"not_on_whatsapp_at": status.at}
                )
            case "send_fallback":
                await self._send_fallback(send)
            case "pause_agent":
                await self._pacer.pause(status.agent_id, AGENT_BACKOFF_SECONDS)
                THROTTLED.labels(status.agent_id).inc()
        log.info("delivery failed", code=code, reason=status.error_reason, thread_id=send.thread_id)

    async def _send_fallback(self, send: SendClaim) -> None:
        """Gupshup found the window closed after all: the reply's fallback template goes instead.

        Every bubble of the reply may fail so; the fallback's id is derived from the reply,
        so it is stored and sent once.
        """
        thread = await self._threads.get(send.org_id, send.thread_id)
        if thread is None:
            return
        command_id = derived_id("fbk", send.command_id)
        command = send_command(command_id, thread, send.destination, list(send.fallback), utcnow())
        stored = await self._outbox.record(command, [], "fallback")
        await self._outbox.publish(stored)
        log.info("window closed at Gupshup: fallback template queued", command_id=command_id)

    async def _lead_of(self, send: SendClaim) -> str:
        thread = await self._threads.get(send.org_id, send.thread_id)
        return thread.lead_id if thread else ""


def status_addresses(status: DeliveryStatus) -> list[str]:
    """The addresses a send to the status's recipient may have used: the number (E.164)
    and the BSUID, whichever the status names."""
    addresses = []
    if status.destination:
        destination = status.destination
        addresses.append(destination if is_bsuid(destination) else "+" + destination.lstrip("+"))
    if status.user_id and status.user_id not in addresses:
        addresses.append(status.user_id)
    return addresses
