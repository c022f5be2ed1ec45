"""Outbound: the only caller of Gupshup's send API; each bubble is sent at most once."""

from __future__ import annotations

from datetime import timedelta

from shared.broker import Broker
from shared.crypto import KeyRing
from shared.errors import PermanentError, TransientError
from shared.gupshup.client import Ambiguous, GupshupClient, NotReached, Refused, Submitted
from shared.logs import get_logger
from shared.metrics import DELIVERY_STATUSES, SENDS
from shared.models import BillingEvent, DeliveryStatus, SendCommand, TemplateEvent, utcnow
from shared.phones import wa_id
from shared.repositories.agents import AgentDirectory
from shared.repositories.consents import ConsentRepository
from shared.repositories.messages import MessageRepository, message_id
from shared.repositories.sends import SendRepository
from shared.repositories.templates import Template, TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.store import Document, Store, with_retry

log = get_logger(__name__)

# WhatsApp's customer service window: free-form messages only this long after the lead's
# last message (templates, outside it, come with their own issue).
SESSION_WINDOW = timedelta(hours=24)

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
    ) -> None:
        self._broker = broker
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
        """Send the command's bubbles in order; a bubble already claimed is never re-sent."""
        agent = await self._agents.by_id(command.agent_id)
        if agent is None or agent.org_id != command.org_id:
            raise PermanentError(f"no agent {command.agent_id} in organization {command.org_id}")
        if not agent.active:
            await self._skip(command, "agent_suspended")
            return
        skip_reason = await self._rule_blocking(command)
        if skip_reason is not None:
            await self._skip(command, skip_reason)
            return
        api_key = self._key_ring.decrypt(
            agent.credentials["gupshup_api_key"], agent_id=agent.id, field="gupshup_api_key"
        )
        templates = await self._templates_of(command)
        for index, bubble in enumerate(command.bubbles):
            send_id = command.send_id(index)
            existing = await self._claim(command, index)
            if existing is not None:
                SENDS.labels(agent.id, "duplicate").inc()
                if existing["state"] == "sending":
                    log.warning(
                        "bubble claimed earlier without a result: not re-sent",
                        send_id=send_id,
                        thread_id=command.thread_id,
                    )
                continue
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
            if template is not None and isinstance(result, Submitted):
                await self._templates.record_use(
                    template, lead_id=command.lead_id, thread_id=command.thread_id, send_id=send_id
                )
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
                case NotReached(reason=reason):
                    await self._sends.release(send_id)
                    SENDS.labels(agent.id, "retry").inc()
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

    async def _rule_blocking(self, command: SendCommand) -> str | None:
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
            return None  # approved templates may be sent outside the window
        thread = await self._threads.get(command.org_id, command.thread_id)
        last_inbound = thread.get("last_inbound_at") if thread else None
        if last_inbound is None or utcnow() - last_inbound > SESSION_WINDOW:
            return "window_closed"
        return None

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
        await self._sends.record_status(send, status.status, status.at, fields)

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
