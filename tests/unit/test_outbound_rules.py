"""Outbound's rules on their own: what may be sent, as what, and what an earlier claim means.

No broker, no store: each rule is a function of its inputs (the real-server behaviour is in
tests/services/test_outbound.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.outbound import rules
from services.outbound.pacing import THROTTLE_MAX_SECONDS, come_back_in, throttle_ceiling
from services.outbound.payloads import session_message
from services.outbound.rules import Plan
from shared.models import Bubble, Choice, SendCommand
from shared.quiet_hours import QuietHours
from shared.repositories.sends import SendClaim, SendState
from shared.repositories.templates import Template
from shared.whatsapp import SESSION_WINDOW, window_open

NOW = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 13:00 in Singapore
AGENT = "agt_1"
TEMPLATE = Bubble(type="template", text="Hi Rachel", template_id="tpl_1", params=["Rachel"])


def command(*bubbles: Bubble, **fields: Any) -> SendCommand:
    """A command of `bubbles` (one text bubble when none) from the agent to a lead."""
    return SendCommand(
        event_id="rpl_1",
        command_id="rpl_1",
        org_id="org_1",
        agent_id=AGENT,
        thread_id="thr_1",
        lead_id="lead_1",
        destination="+6598887777",
        bubbles=list(bubbles) or [Bubble(text="Hello")],
        created_at=NOW,
        **fields,
    )


def template(**fields: Any) -> Template:
    """The agent's approved one-parameter template `tpl_1`, changed by `fields`."""
    values: dict[str, Any] = {
        "_id": "tpl_1",
        "org_id": "org_1",
        "agent_id": AGENT,
        "name": "reconnect",
        "language": "en",
        "category": "UTILITY",
        "body": "Hi {{1}}",
        "parameters": 1,
        "status": "APPROVED",
        "provider_id": "gs-tpl-1",
        "created_at": NOW,
    }
    return Template.model_validate(values | fields)


def claim(state: SendState, **fields: Any) -> SendClaim:
    """A claim of the command's first bubble in `state`."""
    values: dict[str, Any] = {
        "id": "rpl_1.0",
        "org_id": "org_1",
        "agent_id": AGENT,
        "thread_id": "thr_1",
        "command_id": "rpl_1",
        "destination": "+6598887777",
        "state": state,
        "claimed_at": NOW - timedelta(seconds=1),
    }
    return SendClaim(**(values | fields))


@pytest.mark.parametrize(
    ("last_inbound", "expected"),
    [
        (None, False),
        (NOW - timedelta(hours=23, minutes=59), True),
        (NOW - SESSION_WINDOW, True),
        (NOW - timedelta(hours=24, seconds=1), False),
    ],
    ids=["never-wrote", "23h59m", "exactly-24h", "24h01s"],
)
def test_the_window_is_open_for_24_hours_after_the_last_inbound_message(
    last_inbound: datetime | None, expected: bool
) -> None:
    assert window_open(last_inbound, NOW) is expected


def test_a_follow_up_is_overtaken_by_a_later_message_of_the_lead_a_reminder_is_not() -> None:
    later = NOW + timedelta(minutes=1)
    assert rules.overtaken(command(purpose="follow_up"), later)
    assert not rules.overtaken(command(purpose="follow_up"), NOW - timedelta(minutes=1))
    assert not rules.overtaken(command(purpose="follow_up"), None)
    assert not rules.overtaken(command(purpose="reminder"), later)
    assert not rules.overtaken(command(), later)


@pytest.mark.parametrize(
    ("purpose", "stopped"),
    [
        ("reply", True),
        ("follow_up", True),
        ("reminder", True),
        ("opt_out_confirmation", False),
        ("agent_notification", False),
    ],
)
def test_only_the_opt_out_confirmation_and_agent_notices_reach_an_opted_out_lead(
    purpose: str, stopped: bool
) -> None:
    chosen = rules.choose_bubbles(command(purpose=purpose), window_open=True, opted_out=True)
    assert (chosen == "opted_out") is stopped


def test_inside_the_window_the_reply_goes_as_written() -> None:
    reply = command(Bubble(text="One"), Bubble(text="Two"))
    plan = rules.choose_bubbles(reply, window_open=True, opted_out=False)
    assert isinstance(plan, Plan)
    assert [b.text for b in plan.bubbles] == ["One", "Two"]
    assert plan.send_ids == ["rpl_1.0", "rpl_1.1"]
    assert (plan.replaces_reply, plan.business_initiated) == (False, False)


def test_outside_the_window_free_form_text_is_not_sent_without_a_fallback() -> None:
    assert rules.choose_bubbles(command(), window_open=False, opted_out=False) == "window_closed"


def test_outside_the_window_the_fallback_template_replaces_the_reply() -> None:
    reply = command(Bubble(text="One"), Bubble(text="Two"), fallback=[TEMPLATE])
    plan = rules.choose_bubbles(reply, window_open=False, opted_out=False)
    assert isinstance(plan, Plan)
    assert plan.bubbles == [TEMPLATE]
    assert plan.send_ids == ["rpl_1.f0"]
    assert (plan.replaces_reply, plan.business_initiated) == (True, True)


def test_outside_the_window_a_template_goes_itself_as_business_initiated() -> None:
    plan = rules.choose_bubbles(command(TEMPLATE), window_open=False, opted_out=False)
    assert isinstance(plan, Plan)
    assert (plan.bubbles, plan.replaces_reply, plan.business_initiated) == (
        [TEMPLATE],
        False,
        True,
    )


@pytest.mark.parametrize(
    ("purpose", "is_open", "business_initiated"),
    [
        ("reply", True, False),
        ("follow_up", True, True),
        ("reminder", True, True),
        ("agent_notification", False, False),
    ],
)
def test_follow_ups_and_reminders_are_business_initiated_agent_notices_never(
    purpose: str, is_open: bool, business_initiated: bool
) -> None:
    plan = rules.choose_bubbles(
        command(TEMPLATE, purpose=purpose), window_open=is_open, opted_out=False
    )
    assert isinstance(plan, Plan)
    assert plan.business_initiated is business_initiated


def test_template_ids_are_the_plans_template_bubbles_in_order() -> None:
    plan = rules.choose_bubbles(
        command(Bubble(text="Hi"), TEMPLATE), window_open=True, opted_out=False
    )
    assert isinstance(plan, Plan)
    assert rules.template_ids(plan) == ["tpl_1"]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (None, "template_not_approved"),
        (template(agent_id="agt_other"), "template_not_approved"),
        (template(status="PENDING"), "template_not_approved"),
        (template(provider_id=None), "template_not_approved"),
        (template(parameters=2), "template_parameters"),
    ],
    ids=["missing", "another-agents", "pending", "not-at-gupshup", "wrong-parameters"],
)
def test_a_template_goes_only_approved_of_the_agent_with_its_parameters(
    found: Template | None, expected: str
) -> None:
    plan = rules.choose_bubbles(command(TEMPLATE), window_open=True, opted_out=False)
    assert isinstance(plan, Plan)
    assert rules.check_templates(plan, {"tpl_1": found}, AGENT) == expected


def test_checked_templates_are_kept_with_the_plan() -> None:
    plan = rules.choose_bubbles(command(TEMPLATE), window_open=True, opted_out=False)
    assert isinstance(plan, Plan)
    checked = rules.check_templates(plan, {"tpl_1": template()}, AGENT)
    assert isinstance(checked, Plan)
    assert checked.templates == {"tpl_1": template()}
    assert checked.bubbles == plan.bubbles


def test_the_tier_counts_business_initiated_messages_to_leads_only() -> None:
    assert rules.tier_applies(command(), window_open=False)
    assert not rules.tier_applies(command(), window_open=True)
    assert not rules.tier_applies(command(purpose="agent_notification"), window_open=False)


@pytest.mark.parametrize(
    ("tier", "reached", "fits"),
    [
        (2, set(), True),
        (2, {"lead_9"}, True),
        (2, {"lead_8", "lead_9"}, False),
        (2, {"lead_1", "lead_9"}, True),  # already reached: costs nothing more
        (0, {"lead_7", "lead_8", "lead_9"}, True),  # no tier: no limit
    ],
)
def test_the_messaging_tier_limits_unique_leads_reached(
    tier: int, reached: set[str], fits: bool
) -> None:
    assert rules.within_tier(tier, reached, "lead_1") is fits


def test_quiet_hours_hold_a_send_and_look_again_at_most_every_recheck() -> None:
    sg = "Asia/Singapore"
    night = QuietHours(start="12:00", end="14:00")  # it is 13:00 in Singapore
    assert rules.quiet_hours_recheck(night, NOW, sg, 300) == 300
    assert rules.quiet_hours_recheck(night, NOW, sg, 7200) == 3600
    assert rules.quiet_hours_recheck(QuietHours(), NOW, sg, 300) == 0


def test_a_claim_younger_than_a_call_is_another_workers_send_in_progress() -> None:
    verdict = rules.judge_claim(claim("sending"), NOW, interrupted_after=25, resolve_seconds=60)
    assert verdict == "being_sent"


def test_a_claim_older_than_a_call_was_interrupted() -> None:
    old = claim("sending", claimed_at=NOW - timedelta(seconds=26))
    assert rules.judge_claim(old, NOW, interrupted_after=25, resolve_seconds=60) == "interrupted"
    assert rules.interrupted_after_seconds(10) == 25


@pytest.mark.parametrize(
    ("state", "gupshup_id"),
    [("submitted", "gs-1"), ("failed", None), ("skipped", None), ("unknown", "gs-1")],
)
def test_a_send_gupshup_answered_or_we_skipped_is_done(
    state: SendState, gupshup_id: str | None
) -> None:
    settled = claim(state, gupshup_message_id=gupshup_id, unknown_since=NOW)
    assert rules.judge_claim(settled, NOW, interrupted_after=25, resolve_seconds=60) == "done"


def test_an_unknown_send_waits_for_a_status_then_goes_once_more() -> None:
    unknown = claim("unknown", unknown_since=NOW - timedelta(seconds=20))
    assert rules.status_wait_seconds(unknown, NOW, 60) == 40
    assert (
        rules.judge_claim(unknown, NOW, interrupted_after=25, resolve_seconds=60)
        == "awaiting_status"
    )
    assert rules.judge_claim(unknown, NOW, interrupted_after=25, resolve_seconds=20) == "resend"


@pytest.mark.parametrize(
    ("code", "has_fallback", "consequence"),
    [
        (1012, False, "opt_out"),
        (1002, False, "not_on_whatsapp"),
        (131047, True, "send_fallback"),
        (1005, True, "send_fallback"),
        (1006, False, None),  # window closed, but no fallback to send
        (4001, False, "pause_agent"),
        (130429, True, "pause_agent"),
        (131026, True, None),
    ],
)
def test_a_failure_code_decides_what_happens_next(
    code: int, has_fallback: bool, consequence: str | None
) -> None:
    assert rules.failure_consequence(code, has_fallback=has_fallback) == consequence


def test_a_deferred_send_comes_back_when_its_slot_is_near() -> None:
    assert come_back_in(5.0, 2.0) == 3000
    assert come_back_in(2.01, 2.0) == 100  # never sooner than 0.1 s
    assert come_back_in(100.0, 2.0) == 30000  # never later than 30 s


def test_throttling_backoff_doubles_up_to_its_ceiling() -> None:
    assert [throttle_ceiling(streak, 1.0) for streak in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert throttle_ceiling(20, 1.0) == THROTTLE_MAX_SECONDS


def test_a_text_bubble_goes_as_text_a_list_bubble_as_a_list_to_pick_from() -> None:
    assert session_message(Bubble(text="Hi"), "rpl_1.0") == {"type": "text", "text": "Hi"}
    listed = Bubble(
        type="list",
        text="Which area?",
        button="Areas",
        choices=[Choice(id="east", title="East"), Choice(id="west", title="West", description="W")],
    )
    message = session_message(listed, "rpl_1.0")
    assert (message["type"], message["body"], message["msgid"]) == (
        "list",
        "Which area?",
        "rpl_1.0",
    )
    assert message["globalButtons"] == [{"type": "text", "title": "Areas"}]
    items: Any = message["items"]
    [section] = items
    assert [(o["postbackText"], o["description"]) for o in section["options"]] == [
        ("east", ""),
        ("west", "W"),
    ]
