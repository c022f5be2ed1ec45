"""WhatsApp's platform rules and constants, defined once for every service (and the sandbox).

These are Meta's rules, not ours: the services, the sandbox that stands in for Gupshup and the
tests all read them from here, so a change of the platform is one edit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# The customer service window: free-form messages only this long after the person's last
# message; outside it only approved templates (business-initiated, tier-limited) may go.
SESSION_WINDOW = timedelta(hours=24)


def window_open(last_inbound: datetime | None, now: datetime) -> bool:
    """Whether free-form messages may go: the person wrote within `SESSION_WINDOW` of `now`."""
    return last_inbound is not None and now - last_inbound <= SESSION_WINDOW
