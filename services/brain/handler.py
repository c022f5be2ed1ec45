"""Brain: one thread at a time, answer every unanswered message once."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

from services.brain.engine import Conversation, compose_reply
from shared.broker import Broker
from shared.colleagues import ColleagueThreads
from shared.errors import Defer, TransientError
from shared.ids import derived_id
from shared.logs import get_logger
from shared.metrics import REPLIES
from shared.models import Bubble, SendCommand, ThreadWork, utcnow
from shared.replies import ReplyOutbox
from shared.repositories.agents import Agent, AgentDirectory
from shared.repositories.consents import ConsentRepository
from shared.repositories.leases import ThreadLeases
from shared.repositories.messages import MessageRepository
from shared.repositories.templates import TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.store import Document, Store

log = get_logger(__name__)
ENGINE = "rules"
OPT_OUT_CONFIRMATION = (
    "Understood, you won't receive any more messages from {bot}, {agent}'s assistant. "
    "If you change your mind, just reply START."
)


class Brain:
    """Handle thread work items under the thread's lease."""

    def __init__(
        self, broker: Broker, store: Store, agents: AgentDirectory, lease_seconds: float
    ) -> None:
        self._agents = agents
        self._leases = ThreadLeases(store, lease_seconds)
        self._threads = ThreadRepository(store)
        self._messages = MessageRepository(store)
        self._outbox = ReplyOutbox(store, broker)
        self._colleagues = ColleagueThreads(store)
        self._consents = ConsentRepository(store)
        self._templates = TemplateRepository(store)
        self._leads = store.db["leads"]
        self._owner = f"{socket.gethostname()}:{os.getpid()}"

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
        unanswered = await self._messages.unanswered(work.org_id, work.thread_id)
        if not unanswered:
            return
        agent = await self._agents.by_id(work.agent_id)
        thread = await self._threads.get(work.org_id, work.thread_id)
        if agent is None or thread is None:
            raise TransientError(f"thread {work.thread_id} or its agent is not readable yet")
        lead = await self._leads.find_one({"_id": work.lead_id})
        if lead is None:
            raise TransientError(f"lead {work.lead_id} is not readable yet")
        if not agent.active or thread["state"] != "bot":
            log.info(
                "not answering: agent suspended or thread handed off", thread_id=work.thread_id
            )
            return
        if await self._consents.opted_out(work.org_id, work.lead_id):
            await self._confirm_opt_out(agent, thread, lead, unanswered)
            return
        if thread.get("opt_out_confirmed"):  # they opted in again: a fresh confirmation later
            await self._threads.update_state(
                work.org_id, work.thread_id, {"opt_out_confirmed": False}
            )
        conversation = self._conversation(agent, thread, lead, unanswered)
        conversation = replace(conversation, colleague_threads=await self._colleagues.of(thread))
        composed = compose_reply(conversation)
        answers = [m["_id"] for m in unanswered]
        command = SendCommand(
            event_id=derived_id("rpl", work.thread_id, *answers),
            command_id=derived_id("rpl", work.thread_id, *answers),
            org_id=work.org_id,
            agent_id=work.agent_id,
            thread_id=work.thread_id,
            lead_id=work.lead_id,
            destination=lead["phone"],
            bubbles=[Bubble(text=t) for t in composed.bubbles],
            created_at=utcnow(),
            fallback=await self._templates.fallback_for(
                agent.org_id, agent.id, agent.fallback_template_id, conversation.lead_name
            ),
        )
        command = await self._outbox.record(command, answers, ENGINE)
        await self._threads.update_state(
            work.org_id, work.thread_id, {"stage": composed.stage, "profile": composed.profile}
        )
        REPLIES.labels(ENGINE).inc()
        await self._outbox.publish(command)

    async def _confirm_opt_out(
        self, agent: Agent, thread: Document, lead: Document, unanswered: list[Document]
    ) -> None:
        """One confirmation for the lead's opt-out, then silence until they opt in again."""
        answers = [m["_id"] for m in unanswered]
        asked = any(m.get("consent_intent") == "opt_out" for m in unanswered)
        if not asked or thread.get("opt_out_confirmed"):
            await self._messages.mark_answered(thread["org_id"], answers, "opted_out")
            return
        text = OPT_OUT_CONFIRMATION.format(bot=agent.persona.bot_name, agent=agent.name)
        command = SendCommand(
            event_id=derived_id("rpl", thread["_id"], *answers),
            command_id=derived_id("rpl", thread["_id"], *answers),
            org_id=thread["org_id"],
            agent_id=agent.id,
            thread_id=thread["_id"],
            lead_id=lead["_id"],
            destination=lead["phone"],
            bubbles=[Bubble(text=text)],
            created_at=utcnow(),
            purpose="opt_out_confirmation",
        )
        command = await self._outbox.record(command, answers, ENGINE)
        await self._threads.update_state(
            thread["org_id"], thread["_id"], {"opt_out_confirmed": True, "stage": "opted_out"}
        )
        await self._outbox.publish(command)

    def _conversation(
        self, agent: Agent, thread: Document, lead: Document, unanswered: list[Document]
    ) -> Conversation:
        names = [n["name"] for n in lead.get("names", []) if n.get("org_id") == agent.org_id]
        return Conversation(
            persona=agent.persona,
            agent_name=agent.name,
            lead_name=names[-1] if names else None,
            stage=thread.get("stage", "new"),
            profile=thread.get("profile", {}),
            new_texts=[m["text"] for m in unanswered if m.get("text")],
        )
