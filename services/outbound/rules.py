"""What outbound may send, decided from its inputs alone: WhatsApp's rules and our own.

Every function here is pure (no broker, no store, no clock of its own): the handlers read
what a rule needs and act on its answer, and tests/unit/test_outbound_rules.py checks each
rule directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.models import Bubble, SendCommand
from shared.quiet_hours import QuietHours
from shared.repositories.sends import SendClaim
from shared.repositories.templates import Template

# Why a command's bubbles were recorded as skipped (the `reason` of the send, and a metric).
SkipReason = Literal[
    "agent_suspended",
    "lead_wrote_since",
    "opted_out",
    "window_closed",
    "template_not_approved",
    "template_parameters",
    "tier_limit",
]

# Gupshup's failure codes in delivery statuses.
OPTED_OUT = 1012
NOT_ON_WHATSAPP = 1002
WINDOW_CLOSED = {1005, 1006, 131047}  # Gupshup's and Meta's "outside the 24-hour window"
AGENT_THROTTLED = {4001, 130429}  # Gupshup's and Meta's "rate limited" for the number


@dataclass(frozen=True)
class Plan:
    """The bubbles a command sends now, with their send ids and templates."""

    bubbles: list[Bubble]
    send_ids: list[str]
    templates: dict[str, Template]
    business_initiated: bool
    replaces_reply: bool  # the fallback template goes instead of the reply's text


def interrupted_after_seconds(gupshup_timeout_seconds: float) -> float:
    """Age after which a `sending` claim was interrupted: longer than a Gupshup call can take."""
    return gupshup_timeout_seconds * 2 + 5


def overtaken(command: SendCommand, last_inbound: datetime | None) -> bool:
    """A follow-up the lead overtook by writing since; a reminder of an appointment still goes."""
    return (
        command.purpose == "follow_up"
        and last_inbound is not None
        and last_inbound > command.created_at
    )


def respects_opt_out(command: SendCommand) -> bool:
    """Whether the lead's opt-out stops this command (its confirmation and notices to the
    agent's own number go regardless)."""
    return command.purpose not in ("opt_out_confirmation", "agent_notification")


def choose_bubbles(
    command: SendCommand, *, window_open: bool, opted_out: bool
) -> Plan | SkipReason:
    """The bubbles to send (the reply's, or its fallback template outside the window), or why none.

    Templates are not looked at yet: `check_templates` fills them in.
    """
    if opted_out and respects_opt_out(command):
        return "opted_out"
    bubbles = command.bubbles
    send_ids = [command.send_id(i) for i in range(len(bubbles))]
    replaces_reply = False
    if not window_open and any(b.type != "template" for b in bubbles):
        # Free-form text needs the window; an approved template may stand in for it.
        if not command.fallback:
            return "window_closed"
        bubbles = command.fallback
        send_ids = [command.fallback_send_id(i) for i in range(len(bubbles))]
        replaces_reply = True
    notification = command.purpose == "agent_notification"
    return Plan(
        bubbles=bubbles,
        send_ids=send_ids,
        templates={},
        business_initiated=(command.business_initiated or not window_open) and not notification,
        replaces_reply=replaces_reply,
    )


def template_ids(plan: Plan) -> list[str]:
    """The ids of the templates the plan's bubbles use, each once, in order."""
    return list(dict.fromkeys(b.template_id or "" for b in plan.bubbles if b.type == "template"))


def check_templates(
    plan: Plan, found: Mapping[str, Template | None], agent_id: str
) -> Plan | SkipReason:
    """The plan with its templates, or why one may not be sent (missing, not the agent's,
    not approved, or given the wrong number of parameters)."""
    templates: dict[str, Template] = {}
    for bubble in plan.bubbles:
        if bubble.type != "template":
            continue
        template = found.get(bubble.template_id or "")
        if template is None or template.agent_id != agent_id or not template.usable:
            return "template_not_approved"
        if len(bubble.params) != template.parameters:
            return "template_parameters"
        templates[template.id] = template
    return dataclasses.replace(plan, templates=templates)


def tier_applies(command: SendCommand, *, window_open: bool) -> bool:
    """Outside the window a message is business-initiated and counts against the tier;
    a notification goes to the agent, not a lead, and never does."""
    return not window_open and command.purpose != "agent_notification"


def within_tier(tier: int, reached: Collection[str], lead_id: str) -> bool:
    """Whether one more business-initiated message to this lead fits the messaging tier.

    The tier counts unique leads reached in a rolling 24 hours (`reached`); a lead already
    reached costs nothing more; a tier of 0 is no limit.
    """
    return not tier or lead_id in reached or len(reached) < tier


def quiet_hours_recheck(
    quiet: QuietHours, now: datetime, timezone: str, recheck_seconds: float
) -> float:
    """Seconds to hold a business-initiated send for quiet hours (0: it goes now); a long
    night is looked at again every `recheck_seconds`, in case the hours change."""
    wait = quiet.wait_seconds(now, timezone)
    return min(wait, recheck_seconds) if wait > 0 else 0.0


ClaimVerdict = Literal["being_sent", "interrupted", "done", "awaiting_status", "resend"]


def judge_claim(
    claim: SendClaim, now: datetime, *, interrupted_after: float, resolve_seconds: float
) -> ClaimVerdict:
    """What an earlier claim of a bubble means for a command sending it again.

    `being_sent`: another worker's call is in progress. `interrupted`: a `sending` claim too
    old for a call, left by a crash (it becomes unknown). `done`: Gupshup has it, or it
    was refused or skipped. `awaiting_status`: unknown, and a status may still show Gupshup
    has it. `resend`: unknown for longer than `resolve_seconds`: it goes once more.
    """
    if claim.state == "sending":
        age = (now - claim.claimed_at).total_seconds()
        return "being_sent" if age < interrupted_after else "interrupted"
    if claim.state != "unknown" or claim.gupshup_message_id:
        return "done"
    return "awaiting_status" if status_wait_seconds(claim, now, resolve_seconds) > 0 else "resend"


def status_wait_seconds(claim: SendClaim, now: datetime, resolve_seconds: float) -> float:
    """How much longer an unknown send waits for a status before it is sent again."""
    since = claim.unknown_since or now
    return resolve_seconds - (now - since).total_seconds()


FailureConsequence = Literal["opt_out", "not_on_whatsapp", "send_fallback", "pause_agent"]


def failure_consequence(code: int, *, has_fallback: bool) -> FailureConsequence | None:
    """What a failed delivery's error code means for the lead, the thread or the agent."""
    if code == OPTED_OUT:
        return "opt_out"
    if code == NOT_ON_WHATSAPP:
        return "not_on_whatsapp"
    if code in WINDOW_CLOSED and has_fallback:
        return "send_fallback"
    if code in AGENT_THROTTLED:
        return "pause_agent"
    return None
