"""Brain: one thread at a time, every unanswered message answered once, in the agent's voice.

A work item names a thread. Under the thread's lease the brain waits out the burst quiet
period (a lead often sends three short messages in a row), reads every unanswered message
in the order the lead sent them, runs the five layers, acts on the decision (books,
reschedules, cancels, hands off), and stores the reply with the thread's new state before
publishing it. A message arriving meanwhile stays unanswered and gets the next reply.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta
from typing import Literal

from services.brain.engines.offline import OfflineEngine, summarize
from services.brain.followups.scheduler import Scheduler
from services.brain.metrics import CONTACT_REQUESTS, REPLIES
from services.brain.reply.model import (
    Context,
    Decision,
    LeadMessage,
    Profile,
    Recall,
    SlotOption,
    Stage,
    Turn,
)
from services.brain.reply.pipeline import Engine, Pipeline
from services.brain.reply.recall import Recaller
from services.brain.repositories import ThreadData
from shared.broker import Broker
from shared.colleagues import ColleagueThreads
from shared.errors import Defer, TransientError
from shared.ids import derived_id
from shared.logs import get_logger
from shared.models import Bubble, Choice, ThreadWork, utcnow
from shared.replies import ReplyOutbox, send_command
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.appointments import (
    Appointment,
    AppointmentClosed,
    UnknownAppointment,
)
from shared.repositories.leads import LeadRecord
from shared.repositories.leases import ThreadLeases
from shared.repositories.messages import ThreadMessage
from shared.repositories.threads import Thread
from shared.settings import Settings
from shared.store import Document, Store

log = get_logger(__name__)
OPT_OUT_CONFIRMATION = (
    "Understood, you won't receive any more messages from {bot}, {agent}'s assistant. "
    "If you change your mind, just reply START."
)
HISTORY_MESSAGES = 20
STAGES: tuple[Stage, ...] = (
    "new",
    "qualifying",
    "qualified",
    "booking",
    "booked",
    "nurturing",
    "handed_off",
    "closed",
)


class Brain:
    """Handle thread work items under the thread's lease."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        agents: AgentDirectory,
        settings: Settings,
        engine: Engine | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._settings = settings
        self._scheduler = scheduler or Scheduler(store, settings)
        self._broker = broker
        self._agents = agents
        self._leases = ThreadLeases(store, settings.lease_seconds)
        self._data = ThreadData.open(store)
        stale = timedelta(seconds=settings.answer_claim_stale_seconds)
        self._outbox = ReplyOutbox(store, broker, stale_claims=stale)
        self._colleagues = ColleagueThreads(store)
        self._recaller = Recaller(store)
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self.pipeline = Pipeline(engine or OfflineEngine())

    async def handle(self, work: ThreadWork) -> None:
        """Take the thread's lease, publish pending replies, answer new messages."""
        lease = await self._leases.acquire(work.thread_id, self._owner)
        if lease is None:
            raise Defer("thread lease held by another worker")
        try:
            # A reply stored by an earlier, interrupted run goes out before anything new.
            await self._outbox.publish_pending(work.org_id, work.thread_id)
            await self._answer(work)
        finally:
            await self._leases.release(lease)

    async def _answer(self, work: ThreadWork) -> None:
        unanswered = await self._data.messages.unanswered(work.org_id, work.thread_id)
        if not unanswered:
            return
        quiet = self._settings.burst_quiet_seconds
        latest = max(m.received_at for m in unanswered)
        remaining = quiet - (utcnow() - latest).total_seconds()
        if remaining > 0:
            # The lead may still be typing: answer the whole burst once it has settled.
            raise Defer("waiting for the burst to settle", delay_ms=int(remaining * 1000) + 1)
        agent, thread, lead, opted_out = await asyncio.gather(
            self._agents.by_id(work.agent_id),
            self._data.threads.get(work.org_id, work.thread_id),
            self._data.leads.get(work.lead_id),
            self._data.consents.opted_out(work.org_id, work.lead_id),
        )
        if agent is None or thread is None:
            raise TransientError(f"thread {work.thread_id} or its agent is not readable yet")
        if lead is None:
            raise TransientError(f"lead {work.lead_id} is not readable yet")
        if thread.state == "human":
            # The agent has the thread: what the lead writes now is theirs to answer.
            await self._data.messages.mark_answered(
                work.org_id, [m.id for m in unanswered], "human"
            )
            log.info("not answering: the agent has the thread", thread_id=work.thread_id)
            return
        if not agent.active or thread.state != "bot":
            log.info("not answering: agent suspended or thread closed", thread_id=work.thread_id)
            return
        if opted_out:
            await self._confirm_opt_out(work, agent, thread, lead, unanswered)
            return
        state: Document = {}
        if thread.opt_out_confirmed:  # they opted in again: a fresh confirmation later
            state["opt_out_confirmed"] = False
        answers = [m.id for m in unanswered]
        command_id = derived_id("rpl", work.thread_id, *answers)
        # Before anything is booked or planned: a run that lost its lease to this one while
        # still working must not answer these messages too.
        await self._outbox.claim_answers(work.org_id, command_id, answers)
        context = await self._context(agent, thread, lead, unanswered)
        understanding, understood_by = await self.pipeline.understand(context)
        recall = await self.pipeline.recall(
            lambda: self._recaller.recall(context, understanding, agent), context, understanding
        )
        decision = self.pipeline.decide(context, understanding, recall)
        decision, recall = await self._act(agent, context, recall, decision, command_id)
        draft, composed_by = await self.pipeline.compose(context, recall, decision)
        bubbles, blocked, composed_by = await self.pipeline.finish(
            context, recall, decision, draft, composed_by
        )
        state.update(self._thread_state(context, recall, decision))
        reply_bubbles = self._bubbles(bubbles, decision)
        if wants_number(decision, lead, thread):
            # Once per lead and agent, with the booking the agent may want to call about.
            reply_bubbles.append(Bubble(type="contact_request", text=ask_for_number(agent)))
            state["contact_requested_at"] = utcnow()
            CONTACT_REQUESTS.inc()
        if decision.action == "handoff":
            # Before the reply is stored: a re-run after a crash sends the same notice id.
            await self._notify_agent(agent, context, lead, command_id)
        command = send_command(
            command_id,
            work,
            lead.address_for(agent.portfolio),
            reply_bubbles,
            utcnow(),
            fallback=await self._data.templates.fallback_for(
                agent.org_id, agent.id, agent.fallback_template_id, recall.profile.name
            ),
        )
        engine = composed_by if composed_by == understood_by else f"{understood_by}+{composed_by}"
        # Follow-ups and reminders are planned before the reply is stored: a run that fails
        # before storing it is re-run whole and plans the same ones (their ids derive from it).
        await self._scheduler.after_reply(context, understanding, decision, command_id)
        command = await self._outbox.record(command, answers, engine, state)
        REPLIES.labels(composed_by).inc()
        log.info(
            "reply composed",
            thread_id=work.thread_id,
            action=decision.action,
            stage=decision.stage,
            engine=engine,
            blocked=blocked or None,
            answered=len(answers),
        )
        await self._outbox.publish(command)

    async def _act(
        self,
        agent: Agent,
        context: Context,
        recall: Recall,
        decision: Decision,
        command_id: str,
    ) -> tuple[Decision, Recall]:
        """Carry out what the decision changes in the world: bookings, first of all.

        Every change is idempotent under the reply's id, so a re-run after a crash finds
        the booking it made instead of making another.
        """
        slot = decision.slot
        if decision.action == "confirm_booking" and slot is not None:
            booked = await self._data.appointments.book(
                context.org_id,
                context.agent_id,
                context.lead_id,
                context.thread_id,
                slot.start,
                slot.end,
                derived_id("apt", command_id),
            )
            if booked is None:
                return self._taken(recall, slot), recall
            return decision.model_copy(update={"link": self._link(booked)}), recall
        elif decision.action == "reschedule" and slot is not None and recall.appointment:
            try:
                moved = await self._data.appointments.reschedule(
                    context.org_id, recall.appointment.appointment_id, slot.start, slot.end
                )
            except (AppointmentClosed, UnknownAppointment):
                # The agent cancelled it meanwhile: book the new time instead.
                return await self._act(
                    agent,
                    context,
                    recall.model_copy(update={"appointment": None}),
                    decision.model_copy(update={"action": "confirm_booking"}),
                    command_id,
                )
            if moved is None:
                return self._taken(recall, slot), recall
            return decision.model_copy(update={"link": self._link(moved)}), recall
        elif decision.action == "cancel" and recall.appointment is not None:
            await self._data.appointments.cancel(context.org_id, recall.appointment.appointment_id)
        return decision, recall

    @staticmethod
    def _bubbles(texts: list[str], decision: Decision) -> list[Bubble]:
        """The reply's bubbles; offered times also come as a list the lead can pick from."""
        bubbles = [Bubble(text=text) for text in texts]
        if decision.slots and decision.action in ("offer_slots", "slot_taken"):
            last = bubbles[-1]
            bubbles[-1] = Bubble(
                type="list",
                text=last.text,
                button="See times",
                choices=[
                    Choice(id=f"slot:{n}", title=slot.label[:24])
                    for n, slot in enumerate(decision.slots)
                ],
            )
        return bubbles

    def _link(self, appointment: Appointment) -> str:
        """Where the lead gets the booking as a calendar file."""
        return str(self._settings.public_base_url).rstrip("/") + appointment.calendar_path

    async def _notify_agent(
        self, agent: Agent, context: Context, lead: LeadRecord, reply_id: str
    ) -> None:
        """Tell the agent on their own number that a lead wants them (once per handoff)."""
        if not agent.notify_number:
            return
        name = context.profile.name or "A lead"
        said = " / ".join(t for m in context.new_messages if (t := m.text))[:200]
        text = (
            f'{name} ({lead_contact(lead, agent.org_id)}) would like to speak with you: "{said}". '
            "The bot has paused this chat; answer from the dashboard, then hand it back."
        )
        notice_id = derived_id("ntf", reply_id)
        notice = send_command(
            notice_id,
            context,
            agent.notify_number,
            [Bubble(text=text)],
            utcnow(),
            purpose="agent_notification",
            fallback=await self._data.templates.fallback_for(
                agent.org_id, agent.id, agent.handoff_template_id, context.profile.name
            ),
        )
        await self._broker.publish(notice, message_id=notice_id)

    @staticmethod
    def _taken(recall: Recall, slot: SlotOption) -> Decision:
        others = [s for s in recall.free_slots if s.start != slot.start][:3]
        return Decision(action="slot_taken", stage="booking", slots=others)

    @staticmethod
    def _thread_state(context: Context, recall: Recall, decision: Decision) -> Document:
        """What this reply changes on the thread."""
        asked = list(context.asked)
        if decision.question and decision.question not in asked:
            asked.append(decision.question)
        state: Document = {
            "stage": decision.stage,
            "profile": recall.profile.model_dump(mode="json", exclude_none=True),
            "asked": asked,
            "offered": [s.model_dump(mode="json") for s in decision.slots],
            "last_action": decision.action,
            "summary": summarize(
                recall.profile,
                decision.stage,
                decision.slot.label if decision.slot and decision.stage == "booked" else None,
            ),
        }
        if decision.action == "handoff":
            state.update(state="human", handed_off_at=utcnow(), handoff_reason="lead_asked")
        return state

    async def _confirm_opt_out(
        self,
        work: ThreadWork,
        agent: Agent,
        thread: Thread,
        lead: LeadRecord,
        unanswered: list[ThreadMessage],
    ) -> None:
        """One confirmation for the lead's opt-out, then silence until they opt in again."""
        answers = [m.id for m in unanswered]
        asked = any(m.consent_intent == "opt_out" for m in unanswered)
        if not asked or thread.opt_out_confirmed:
            await self._data.messages.mark_answered(thread.org_id, answers, "opted_out")
            return
        text = OPT_OUT_CONFIRMATION.format(bot=agent.persona.bot_name, agent=agent.name)
        command = send_command(
            derived_id("rpl", work.thread_id, *answers),
            work,
            lead.address_for(agent.portfolio),
            [Bubble(text=text)],
            utcnow(),
            purpose="opt_out_confirmation",
        )
        state = {"opt_out_confirmed": True, "stage": "closed"}
        command = await self._outbox.record(command, answers, "rules", state)
        await self._outbox.publish(command)

    async def _context(
        self,
        agent: Agent,
        thread: Thread,
        lead: LeadRecord,
        unanswered: list[ThreadMessage],
    ) -> Context:
        names = lead.names_in(agent.org_id)
        profile = Profile.stored(thread.profile)
        if profile.name is None and names:
            profile = profile.model_copy(update={"name": names[-1]})
        stage = thread.stage
        answered_ids = {m.id for m in unanswered}
        recent, colleague_threads = await asyncio.gather(
            self._data.messages.page(
                thread.org_id, thread.id, before=None, limit=HISTORY_MESSAGES + len(unanswered)
            ),
            self._colleagues.of(thread),
        )
        history = [
            Turn(who=_who(m), text=m.text, at=m.sent_at)
            for m in reversed(recent)
            if m.id not in answered_ids and m.text
        ][-HISTORY_MESSAGES:]
        return Context(
            org_id=agent.org_id,
            agent_id=agent.id,
            thread_id=thread.id,
            lead_id=lead.id,
            agent_name=agent.name,
            persona=agent.persona,
            timezone=agent.timezone,
            now=utcnow(),
            stage=stage if stage in STAGES else "qualifying",
            profile=profile,
            new_messages=[_lead_message(m) for m in unanswered],
            history=history,
            asked=list(thread.asked),
            offered=[SlotOption.model_validate(s) for s in thread.offered],
            colleague_threads=colleague_threads,
        )


def _who(message: ThreadMessage) -> Literal["lead", "bot", "agent"]:
    if message.direction == "in":
        return "lead"
    return "agent" if (message.author or "").startswith("human:") else "bot"


def _lead_message(message: ThreadMessage) -> LeadMessage:
    """An inbound message as Understand reads it."""
    choice, location, media = message.choice, message.location, message.media
    return LeadMessage(
        type=message.type,
        text=message.text,
        at=message.sent_at,
        # Our own list rows come back with the id we gave them as the postback.
        choice_id=(choice.postback or choice.id) if choice else None,
        choice_title=choice.title if choice else None,
        latitude=location.latitude if location else None,
        longitude=location.longitude if location else None,
        place=(location.name or location.address) if location else None,
        media_kind=message.type if media else None,
        caption=media.caption if media else None,
    )


def lead_contact(lead: LeadRecord, org_id: str) -> str:
    """How the agent can tell who the lead is: their number, else the username they showed
    this organization, else that WhatsApp has not shared their number yet."""
    if lead.phone:
        return lead.phone
    view = lead.view_for(org_id)
    return view.username or "number not shared yet"


def wants_number(decision: Decision, lead: LeadRecord, thread: Thread) -> bool:
    """Whether to ask a lead WhatsApp withholds the number of to share it: when a booking
    is made or moved (the agent may need to call), once per lead and agent."""
    return (
        lead.phone is None
        and thread.contact_requested_at is None
        and decision.action in ("confirm_booking", "reschedule")
    )


def ask_for_number(agent: Agent) -> str:
    """The request's text: why the number helps, and that sharing it is the lead's choice."""
    return (
        f"In case {agent.name} needs to call you about it, you can share your number with the "
        "button below. Only if you'd like to: we'll keep chatting here either way."
    )
