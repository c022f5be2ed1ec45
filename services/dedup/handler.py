"""Dedup: who the lead is, which thread this is, and the message stored exactly once."""

from __future__ import annotations

import re
from typing import Any

from services.dedup.metrics import INBOUND_STORED, NUMBERS_SHARED
from shared.broker import Broker
from shared.consent_phrases import classify_consent
from shared.errors import PermanentError
from shared.identity import (
    InvalidUserId,
    WhatsAppUser,
    clean_username,
    known_number,
    validate_bsuid,
    whatsapp_number,
)
from shared.ids import derived_id
from shared.logs import get_logger
from shared.metrics import LEADS
from shared.models import InboundMessage, ThreadWork, UserEvent
from shared.phones import InvalidPhoneNumber
from shared.repositories.agents import AgentRepository
from shared.repositories.consents import ConsentRepository
from shared.repositories.leads import LeadRecord, LeadRepository, Sighting
from shared.repositories.messages import MessageRepository
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.threads import ThreadRepository
from shared.store import Store

log = get_logger(__name__)


# Campaign codes printed on ads and flyers: "#TAMPINES24", "code: EC2025", "ref PARC88". A
# code has a letter (so a unit number such as "#05-12" is not one); after a keyword without
# a colon it also needs a digit (so "code for the unit" is not one).
CAMPAIGN_CODE = re.compile(
    r"#((?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{2,29})"
    r"|\b(?:code|ref|promo)\b\s*[:=]\s*([A-Za-z0-9][\w-]{2,29})"
    r"|\b(?:code|ref|promo)\b\s+((?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{2,29})",
    re.IGNORECASE,
)


def first_touch_source(message: InboundMessage) -> dict[str, Any]:
    """How the lead found the agent: a click-to-WhatsApp ad, a campaign code, or organic."""
    if message.referral:
        return {"source": "ad", "referral": message.referral}
    if message.text and (match := CAMPAIGN_CODE.search(message.text)):
        code = next(group for group in match.groups() if group)
        return {"source": "campaign", "campaign_code": code.upper()}
    return {"source": "organic"}


def _ignored(message: InboundMessage, thread_id: str, outcome: str, why: str) -> None:
    """Count a message already stored (as `outcome`) and log `why` it is ignored."""
    INBOUND_STORED.labels(outcome).inc()
    log.info(why, thread_id=thread_id, provider_message_id=message.provider_message_id)


class Dedup:
    """Handle routed messages and user events."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        default_region: str,
        burst_quiet_seconds: float = 0.0,
    ) -> None:
        self._broker = broker
        self._burst_quiet_ms = int(burst_quiet_seconds * 1000)
        self._orgs = OrganizationRepository(store)
        self._agents = AgentRepository(store)
        self._leads = LeadRepository(store)
        self._threads = ThreadRepository(store)
        self._messages = MessageRepository(store)
        self._consents = ConsentRepository(store)
        self._default_region = default_region

    async def _portfolio(self, agent_id: str) -> str:
        agent = await self._agents.get(agent_id)
        return agent.portfolio if agent is not None else f"agent:{agent_id}"

    async def handle_message(self, message: InboundMessage) -> None:
        """Store the message once and tell the brain its thread has work."""
        user = whatsapp_user(
            message.lead_wa_id,
            message.lead_user_id,
            message.lead_parent_user_id,
            message.lead_username,
        )
        source = first_touch_source(message)
        seen = Sighting(
            org_id=message.org_id,
            agent_id=message.agent_id,
            portfolio=await self._portfolio(message.agent_id),
            at=message.sent_at,
            name=message.lead_name,
            source=source,
        )
        lead, lead_created = await self._leads.resolve(user, seen)
        if message.shared_own_number:
            lead = await self._number_shared(lead, message.shared_own_number, seen)
        thread, thread_created = await self._threads.resolve(
            org_id=message.org_id,
            agent_id=message.agent_id,
            lead_id=lead.id,
            at=message.sent_at,
            source=source,
        )
        if thread_created and not lead_created:
            LEADS.labels("merged").inc()  # a known person, new to this agent
        if not await self._messages.claim_fingerprint(message, thread.id):
            _ignored(
                message,
                thread.id,
                "relay_duplicate",
                "same message relayed under another id: ignored",
            )
            return
        stored, created = await self._messages.store_inbound(
            message, thread_id=thread.id, lead_id=lead.id, sender=user.address
        )
        if not created and stored.dispatched:
            _ignored(message, thread.id, "duplicate", "duplicate message ignored")
            return
        intent = classify_consent(message.text) if message.type == "text" and message.text else None
        if intent is not None:
            # Recorded before the brain hears of the message, so it never answers past it.
            await self._consents.record(
                org_id=message.org_id,
                lead_id=lead.id,
                agent_id=message.agent_id,
                opted_out=intent == "opt_out",
                how="lead-message",
                at=message.sent_at,
            )
            await self._messages.set_consent_intent(message.org_id, stored.id, intent)
        INBOUND_STORED.labels("stored" if created else "resumed").inc()
        # The sender's identifiers (shortened by the log redaction) let operators correlate
        # a conversation across services without the lead id at hand.
        log.info(
            "inbound message stored",
            thread_id=thread.id,
            lead_id=lead.id,
            type=message.type,
            phone=user.phone,
            user_id=user.user_id,
        )
        await self._threads.touch_inbound(message.org_id, thread.id, message.sent_at)
        work = ThreadWork(
            event_id=derived_id("wrk", stored.id),
            org_id=message.org_id,
            agent_id=message.agent_id,
            thread_id=thread.id,
            lead_id=lead.id,
        )
        if self._burst_quiet_ms > 0:  # the brain looks once the burst has had time to settle
            await self._broker.publish_after(
                work, stage="brain", delay_ms=self._burst_quiet_ms, message_id=work.event_id
            )
        else:
            await self._broker.publish(work, message_id=work.event_id)
        await self._messages.mark_dispatched(message.org_id, stored.id)

    async def handle_user_event(self, event: UserEvent) -> None:
        """Record opt-ins and opt-outs reported by Gupshup; join identifiers WhatsApp links
        (a user who changed number)."""
        if event.type not in {"opted-in", "opted-out", "changed-number"} or not (
            event.lead_wa_id or event.lead_user_id
        ):
            log.info("user event without consent meaning", type=event.type)
            return
        user = whatsapp_user(event.lead_wa_id, event.lead_user_id, None, None)
        seen = Sighting(
            org_id=event.org_id,
            agent_id=event.agent_id,
            portfolio=await self._portfolio(event.agent_id),
            at=event.at,
            source={"source": "user-event"},
        )
        lead, _created = await self._leads.resolve(user, seen)
        if event.type == "changed-number":
            log.info("lead changed number", lead_id=lead.id)
            return
        await self._consents.record(
            org_id=event.org_id,
            lead_id=lead.id,
            agent_id=event.agent_id,
            opted_out=event.type == "opted-out",
            how="gupshup-user-event",
            at=event.at,
        )

    async def _number_shared(self, lead: LeadRecord, number: str, seen: Sighting) -> LeadRecord:
        """The lead shared their own number (answering a request for it): it joins the lead,
        merging with the lead that number already belonged to."""
        try:
            phone = whatsapp_number(number)
        except InvalidPhoneNumber as exc:
            log.info("shared number unreadable: ignored", reason=str(exc))
            return lead
        if lead.phone == phone:
            return lead
        if lead.phone is not None:
            log.info("lead shared a number other than their own: kept as shared", lead_id=lead.id)
            return lead
        NUMBERS_SHARED.inc()
        return await self._leads.add_shared_phone(lead.id, phone, seen)


def whatsapp_user(
    wa_id: str | None, user_id: str | None, parent_user_id: str | None, username: str | None
) -> WhatsAppUser:
    """The identifiers of a WhatsApp user as an event reported them, each validated for
    what it is: a number WhatsApp reported is kept even when its range is new to the phone
    library; a BSUID is never read as a number. Neither usable: a permanent error."""
    phone = bsuid = parent = None
    problems = []
    if wa_id:
        try:
            phone = whatsapp_number(wa_id)
            if not known_number(phone):
                log.info("lead number in a range the phone library does not know", phone=phone)
        except InvalidPhoneNumber as exc:
            problems.append(str(exc))
    for raw, kind in ((user_id, "user"), (parent_user_id, "parent")):
        if not raw:
            continue
        try:
            value = validate_bsuid(raw)
        except InvalidUserId as exc:
            problems.append(str(exc))
            continue
        if kind == "user":
            bsuid = value
        else:
            parent = value
    if phone is None and bsuid is None and parent is None:
        raise PermanentError("the lead has no usable identifier: " + "; ".join(problems))
    if problems:
        log.info("lead identifier ignored", reasons=problems)
    return WhatsAppUser(
        phone=phone, user_id=bsuid, parent_user_id=parent, username=clean_username(username)
    )
