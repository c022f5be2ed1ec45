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

    async def _portfolio(self, agent_id: str, user: WhatsAppUser | None = None) -> str:
        """The business portfolio the agent's user IDs belong to (read only when needed)."""
        if user is not None and user.user_id is None:
            return f"agent:{agent_id}"  # no user ID to scope: spare the read
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
            portfolio=await self._portfolio(message.agent_id, user),
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
        log.info(
            "inbound message stored",
            phone=user.phone,
            user_id=user.user_id,
            thread_id=thread.id,
            lead_id=lead.id,
            type=message.type,
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
        """Record opt-ins and opt-outs reported by Gupshup; follow a user's identifiers as
        WhatsApp reports they changed (a new number, a new BSUID)."""
        changes_identity = event.type in {"changed-number", "changed-user-id"}
        if not (changes_identity or event.type in {"opted-in", "opted-out"}) or not (
            event.lead_wa_id or event.lead_user_id
        ):
            log.info("user event without consent meaning", type=event.type)
            return
        seen = Sighting(
            org_id=event.org_id,
            agent_id=event.agent_id,
            portfolio=await self._portfolio(event.agent_id),
            at=event.at,
            source={"source": "user-event"},
        )
        if changes_identity:
            await self._identity_changed(event, seen)
            return
        user = whatsapp_user(event.lead_wa_id, event.lead_user_id, None, None)
        lead, _created = await self._leads.resolve(user, seen)
        await self._consents.record(
            org_id=event.org_id,
            lead_id=lead.id,
            agent_id=event.agent_id,
            opted_out=event.type == "opted-out",
            how="gupshup-user-event",
            at=event.at,
        )

    async def _identity_changed(self, event: UserEvent, seen: Sighting) -> None:
        """A user changed number (the lead keeps its history under the new one) or BSUID (the
        new one joins the lead the number names). Nothing is created for a person unknown
        here: their next message makes the lead."""
        if event.type == "changed-number" and event.previous_wa_id and event.lead_wa_id:
            old = reported_number(event.previous_wa_id)
            new = reported_number(event.lead_wa_id)
            lead_id = await self._leads.id_by_phone(old)
            if lead_id is None and event.lead_user_id:
                lead_id = await self._leads.id_by_address(seen.portfolio, event.lead_user_id)
            if lead_id is not None:
                lead = await self._leads.change_phone(lead_id, old, new)
                log.info("lead changed number", lead_id=lead.id)
            return
        if event.lead_wa_id and event.lead_user_id:
            known = await self._leads.id_by_phone(reported_number(event.lead_wa_id))
            if known is not None:
                user = whatsapp_user(event.lead_wa_id, event.lead_user_id, None, None)
                lead, _created = await self._leads.resolve(user, seen)
                log.info("lead's user ID changed", lead_id=lead.id)
                return
        log.info("identity change for a person not known here: ignored", type=event.type)

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


def reported_number(wa_id: str) -> str:
    """A number WhatsApp reported, as E.164; unreadable: a permanent error naming it."""
    phone = whatsapp_user(wa_id, None, None, None).phone
    if phone is None:  # not reached: whatsapp_user refuses a user it cannot identify
        raise PermanentError(f"{wa_id!r} is not a WhatsApp phone number")
    return phone


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
