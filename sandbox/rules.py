"""WhatsApp's rules as the sandbox enforces them for apps with rules set, and send-rate metrics.

Rules are opt-in per app (`POST /sandbox/v1/apps/{app}/rules`), so suites that do not set any
see the sandbox accept and record every well-formed send, as before. A lead is one person
whichever address a send names them by: their number, their BSUID or their parent BSUID,
as far as the sandbox was told they belong together, share one window, opt-out and pair rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sandbox.state import FREE_SERVICE, DeliveryStatus, Failure, Pricing, SandboxState, SentMessage
from shared.whatsapp import SESSION_WINDOW

THROUGHPUT_WINDOW = timedelta(seconds=1)
# Meta allows a short burst to one user (a reply of a few bubbles), not sustained sending.
PAIR_RATE_BURST = 6
PAIR_RATE_WINDOW = timedelta(seconds=60)
OPTED_OUT = Failure(1012, "Message Sending failed as the phone number is opted out.", True)
OUTSIDE_WINDOW = Failure(1005, "Message sent outside the 24 hour session window", True)
PAIR_RATE_HIT = Failure(131056, "pair rate limit hit", False)
# What `--auto-status` posts for apps without their own `status_delays_ms`.
AUTO_STATUS_DELAYS_MS: dict[DeliveryStatus, int] = {"enqueued": 50, "sent": 100, "delivered": 150}
FAILED_AFTER_MS = 50
STATUS_ORDER: tuple[DeliveryStatus, ...] = ("enqueued", "sent", "delivered", "read")

StatusStep = tuple[str, int]


def over_throughput(state: SandboxState, app: str, now: datetime) -> bool:
    """Whether the app's number already accepted its limit of sends in the second up to `now`."""
    rules = state.rules.get(app)
    if rules is None or rules.throughput_per_second is None:
        return False
    recent = 0
    # Sends are recorded in the order of their `at`, so the recent ones are at the end.
    for earlier in reversed(state.sent.get(app, [])):
        if earlier.at <= now - THROUGHPUT_WINDOW:
            break
        recent += 1
    return recent >= rules.throughput_per_second


def failure_of(state: SandboxState, app: str, sent: SentMessage) -> Failure | None:
    """Why this send, about to be recorded, will fail under the app's rules; None if it won't."""
    rules = state.rules.get(app)
    if rules is None:
        return None
    lead = state.addresses_of(app, sent.destination)
    if lead & state.opted_out.get(app, set()):
        return OPTED_OUT
    if rules.enforce_window and sent.template is None and not window_open(state, app, sent):
        return OUTSIDE_WINDOW
    if rules.pair_rate:
        # Only messages that reached the user count: the rejected ones never did.
        reached = sum(
            1
            for earlier in state.sent.get(app, [])
            if earlier.destination in lead
            and earlier.failure is None
            and earlier.at > sent.at - PAIR_RATE_WINDOW
        )
        if reached >= PAIR_RATE_BURST:
            return PAIR_RATE_HIT
    return None


def window_open(state: SandboxState, app: str, sent: SentMessage) -> bool:
    """Whether the lead wrote (through `POST /sandbox/v1/inbound`) in the 24 h before the send,
    under any address the send's destination is known by."""
    wrote = [
        state.last_inbound[(app, address)]
        for address in state.addresses_of(app, sent.destination)
        if (app, address) in state.last_inbound
    ]
    return bool(wrote) and sent.at - max(wrote) < SESSION_WINDOW


def pricing_of(state: SandboxState, app: str, sent: SentMessage) -> Pricing:
    """How WhatsApp prices the send: a template by its category, except that a utility
    template inside the lead's window is free; a free-form message is free service."""
    if sent.template is None:
        return FREE_SERVICE
    template = state.templates.get(app, {}).get(str(sent.template.get("id")))
    category = template.category.lower() if template is not None else "marketing"
    if category == "utility" and window_open(state, app, sent):
        return Pricing(category, billable=False)
    return Pricing(category, billable=True)


def status_schedule(state: SandboxState, app: str, failure: Failure | None) -> list[StatusStep]:
    """The statuses to post after an accepted send, with their delays in ms, earliest first."""
    rules = state.rules.get(app)
    if rules is not None and rules.status_delays_ms is not None:
        delays = rules.status_delays_ms
    elif state.auto_status:
        delays = AUTO_STATUS_DELAYS_MS
    else:
        delays = {}
    if failure is not None:
        # A failure Gupshup finds itself comes before WhatsApp ever has the message.
        enqueued = 0 if failure.by_gupshup else delays.get("enqueued", 0)
        steps = [("enqueued", enqueued)] if enqueued > 0 else []
        return [*steps, ("failed", enqueued + FAILED_AFTER_MS)]
    steps = [(status, delays.get(status, 0)) for status in STATUS_ORDER]
    return sorted(((status, delay) for status, delay in steps if delay > 0), key=lambda s: s[1])


def send_metrics(sends: Sequence[SentMessage]) -> dict[str, Any]:
    """Accepted sends per epoch second, and the most in any sliding one-second window."""
    times = sorted(sent.at for sent in sends)
    per_second = Counter(str(int(moment.timestamp())) for moment in times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - THROUGHPUT_WINDOW:
            start += 1
        most = max(most, end - start + 1)
    return {"per_second": dict(sorted(per_second.items())), "max_in_any_second": most}
