"""The send commands the brain publishes: replies, agent notices, follow-ups and reminders.

A command's id is also its event id, and derives from what it answers (the messages, the
scheduled message), so a re-run after a crash builds the same command and outbound sends it
once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from shared.models import Bubble, SendCommand

# The purposes `SendCommand.purpose` accepts.
Purpose = Literal["reply", "opt_out_confirmation", "follow_up", "reminder", "agent_notification"]


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
    """A command to send `bubbles` to `destination` for the thread, identified by `command_id`."""
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
