"""Replies, bot or human: built as send commands, stored with their messages before they are
published.

Storing first means a crash between the two is repaired by publishing what is stored
(`publish_pending`), never by composing a second reply.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from shared.broker import Broker
from shared.errors import Defer
from shared.ids import new_id
from shared.models import Bubble, Purpose, SendCommand, utcnow
from shared.repositories.messages import MessageRepository
from shared.repositories.replies import AnsweredElsewhere, ReplyRepository
from shared.repositories.threads import Thread, ThreadRepository
from shared.store import Document, Store


class ThreadAddress(Protocol):
    """Whose thread a command belongs to: a work item, a reply's context, a schedule."""

    @property
    def org_id(self) -> str: ...

    @property
    def agent_id(self) -> str: ...

    @property
    def thread_id(self) -> str: ...

    @property
    def lead_id(self) -> str: ...


def send_command(
    command_id: str,
    thread: ThreadAddress,
    destination: str,
    bubbles: list[Bubble],
    created_at: datetime,
    purpose: Purpose = "reply",
    fallback: list[Bubble] | None = None,
) -> SendCommand:
    """A command to send `bubbles` to `destination` for the thread, identified by `command_id`.

    The command's id is also its event id: the brain derives it from what the command
    answers, so a re-run after a crash builds the same command and outbound sends it once.
    """
    return SendCommand(
        event_id=command_id,
        command_id=command_id,
        org_id=thread.org_id,
        agent_id=thread.agent_id,
        thread_id=thread.thread_id,
        lead_id=thread.lead_id,
        destination=destination,
        bubbles=bubbles,
        created_at=created_at,
        purpose=purpose,
        fallback=fallback or [],
    )


def human_command(thread: Thread, destination: str, bubbles: list[Bubble]) -> SendCommand:
    """A new send command for messages a person writes into a thread (not the bot)."""
    return send_command(new_id("rpl"), thread, destination, bubbles, utcnow())


class ReplyOutbox:
    """Record replies and hand them to outbound."""

    def __init__(
        self, store: Store, broker: Broker, stale_claims: timedelta = timedelta(minutes=2)
    ) -> None:
        self._broker = broker
        # A claim on messages whose reply was never stored is a dead run's after this long.
        self._stale_claims = stale_claims
        self._replies = ReplyRepository(store)
        self._messages = MessageRepository(store)
        self._threads = ThreadRepository(store)

    async def record(
        self,
        command: SendCommand,
        answers: list[str],
        author: str,
        thread_state: Document | None = None,
    ) -> SendCommand:
        """Store a reply (or find the one stored earlier), its messages, and what it answers.

        The reply's `thread_state` is applied to the thread here and again before a stored
        reply is published after a crash, so the two never part.
        """
        await self.claim_answers(command.org_id, command.command_id, answers)
        stored = await self._replies.create(command, answers, author, thread_state)
        command = stored.command
        if stored.thread_state:
            await self._threads.update_state(command.org_id, command.thread_id, stored.thread_state)
        for index, bubble in enumerate(command.bubbles):
            send_id = command.send_id(index)
            await self._messages.store_outbound(command, send_id, bubble, author)
        if answers:
            await self._messages.mark_answered(command.org_id, answers, command.command_id)
        return command

    async def claim_answers(self, org_id: str, reply_id: str, answers: list[str]) -> None:
        """Make this reply the one to answer these messages (Defer if another run has them).

        Claim before acting on a reply (booking, planning follow-ups): a run that loses the
        claim has changed nothing.
        """
        if not answers:
            return
        try:
            await self._replies.claim_answers(org_id, reply_id, answers, self._stale_claims)
        except AnsweredElsewhere as exc:
            raise Defer(f"not answering: {exc}") from None

    async def publish(self, command: SendCommand) -> None:
        """Hand a stored reply to outbound (confirmed by the broker)."""
        await self._broker.publish(command, message_id=command.command_id)
        await self._replies.mark_published(command.org_id, command.command_id)

    async def publish_pending(self, org_id: str, thread_id: str) -> None:
        """Publish replies an interrupted run stored but did not publish.

        The run may have died anywhere in `record`: recording again (idempotent) applies the
        thread state, stores the messages and marks what the reply answers, so those are
        not answered a second time.
        """
        for stored in await self._replies.unpublished(org_id, thread_id):
            await self.record(stored.command, stored.answers, stored.engine)
            await self.publish(stored.command)
