"""Outbound on the platform's clock: the 24-hour window and quiet hours across the agent's
midnight and daylight-saving changes.

The clock is frozen at the instants that matter and moved by absolute time; outbound runs
in-process against the real broker and store and sends to a Gupshup sandbox, where the test
reads what the lead would get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from sandbox import RunningSandbox
from shared.broker import Broker
from shared.clock import Clock
from shared.gupshup.client import GupshupClient
from shared.quiet_hours import QuietHours
from shared.settings import Settings
from shared.store import Store
from tests.services.conftest import API_KEY, RunningService, ServiceRunner, Tenant, Tenants
from tests.services.test_outbound import (
    follow_up,
    reconnect_template,
    sandbox_messages,
    start_conversation,
    start_outbound,
    wait_for_sandbox_count,
)

NEW_YORK, LONDON = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")
MINUTE = timedelta(minutes=1)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def outbound(
    gupshup: GupshupClient, settings: Settings, store: Store, broker: Broker
) -> AsyncIterator[RunningService]:
    """Outbound consuming the test's topology; stopped before the Gupshup client closes."""
    runner = ServiceRunner(settings, store)
    yield await start_outbound(runner, store, settings, gupshup)
    await runner.stop_all()


async def agent_in(store: Store, tenants: Tenants, timezone: str) -> Tenant:
    """An agent working in `timezone` with the default quiet hours (21:00 to 09:00)."""
    tenant = await tenants.agent(api_key=API_KEY)
    await store.db["agents"].update_one(
        {"_id": tenant.agent_id},
        {"$set": {"timezone": timezone, "quiet_hours": QuietHours().model_dump()}},
    )
    return tenant


# The lead writes on Saturday at 10:00; the clocks change that night, so 24 hours later is
# 11:00 on Sunday in New York (spring forward) and 09:00 in London (fall back). The window is
# absolute time: a wall-clock day would close it an hour early in New York and an hour late
# in London.
LEAD_WROTE = {
    "America/New_York": datetime(2026, 3, 7, 10, 0, tzinfo=NEW_YORK),
    "Europe/London": datetime(2026, 10, 24, 10, 0, tzinfo=LONDON),
}


@pytest.mark.parametrize("timezone", LEAD_WROTE)
@pytest.mark.parametrize(
    ("elapsed", "goes_as"),
    [(timedelta(hours=23, minutes=59), "text"), (timedelta(hours=24, minutes=1), "template")],
    ids=["23h59m", "24h01m"],
)
async def test_the_24_hour_window_is_24_hours_across_midnight_and_daylight_saving(
    clock: Clock,
    outbound: RunningService,
    store: Store,
    tenants: Tenants,
    broker: Broker,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    timezone: str,
    elapsed: timedelta,
    goes_as: str,
) -> None:
    tenant = await agent_in(store, tenants, timezone)
    fallback = await reconnect_template(http, sandbox, store, tenant)
    clock.freeze(LEAD_WROTE[timezone])
    conversation = await start_conversation(store, tenant, last_inbound=timedelta(0))

    clock.advance(elapsed)
    reply = conversation.command("Yes, the 3-bedroom unit is still available.")
    reply = reply.model_copy(update={"fallback": [fallback]})
    await broker.publish(reply, message_id=reply.command_id)
    [sent] = await wait_for_sandbox_count(http, sandbox, 1)
    await outbound.wait_for("ok", 1)

    if goes_as == "text":
        assert sent["text"] == "Yes, the 3-bedroom unit is still available."
    else:
        assert sent["template"]["params"] == ["Rachel"]  # the agent's fallback template
        skipped = await store.db["sends"].find_one({"_id": reply.send_id(0)})
        assert skipped is not None
        assert (skipped["state"], skipped["reason"]) == ("skipped", "window_closed_fallback_sent")


# Business-initiated sends wait for 09:00 on the agent's wall clock; each case starts in the
# quiet night (past or before the agent's midnight), is still held a minute before 09:00
# local, and goes at 09:00 local: absolute instants an hour apart on either side of a change.
QUIET_NIGHTS = {
    "new-york-spring-forward": ("America/New_York", utc(3, 8, 6, 30), utc(3, 8, 13, 0)),
    "new-york-fall-back": ("America/New_York", utc(11, 1, 5, 30), utc(11, 1, 14, 0)),
    "london-spring-forward": ("Europe/London", utc(3, 28, 23, 30), utc(3, 29, 8, 0)),
    "london-fall-back": ("Europe/London", utc(10, 24, 22, 30), utc(10, 25, 9, 0)),
}


@pytest.mark.parametrize(
    "settings", [{"quiet_hours_recheck_seconds": 0.3, "agent_cache_seconds": 0}], indirect=True
)
@pytest.mark.parametrize(("timezone", "night", "morning"), QUIET_NIGHTS.values(), ids=QUIET_NIGHTS)
async def test_a_follow_up_is_held_until_nine_on_the_agents_wall_clock_and_replies_never_wait(
    clock: Clock,
    outbound: RunningService,
    broker: Broker,
    store: Store,
    tenants: Tenants,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
    timezone: str,
    night: datetime,
    morning: datetime,
) -> None:
    tenant = await agent_in(store, tenants, timezone)
    clock.freeze(night)
    conversation = await start_conversation(store, tenant, last_inbound=MINUTE)
    nudge = follow_up(conversation, "Any thoughts on the Tampines unit?", night)
    await broker.publish(nudge, message_id=nudge.command_id)
    await outbound.wait_for("deferred", 2)

    # The lead is answered at once, quiet hours or not.
    reply = conversation.command("Sure, 3 pm works.", command_id="rpl_night")
    await broker.publish(reply, message_id=reply.command_id)
    [answered] = await wait_for_sandbox_count(http, sandbox, 1)
    assert answered["text"] == "Sure, 3 pm works."

    # The night goes on past any change of the clocks; a minute before 09:00 local, it waits.
    clock.freeze(morning - MINUTE)
    assert (morning - MINUTE).astimezone(ZoneInfo(timezone)).strftime("%H:%M") == "08:59"
    await outbound.wait_for("deferred", outbound.outcome_count("deferred") + 2)
    assert len(await sandbox_messages(http, sandbox)) == 1

    clock.freeze(morning)
    messages = await wait_for_sandbox_count(http, sandbox, 2)
    assert messages[1]["text"] == "Any thoughts on the Tampines unit?"
