"""The cost report's repository against the real store: each priced message counted once."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from shared.repositories.costs import CostRepository
from shared.repositories.organizations import MessagePrices
from shared.store import Store

SINGAPORE = ZoneInfo("Asia/Singapore")  # UTC+8, no daylight saving
ORG, OTHER_ORG = "org_costs", "org_other"
JULY = (date(2025, 7, 1), date(2025, 7, 31))


class Messages:
    """Writes what outbound stores for a sent message: its send, its priced `sent` status and
    Gupshup's billing event."""

    def __init__(self, store: Store) -> None:
        self.db = store.db

    async def send(self, org_id: str, agent_id: str) -> str:
        """A send of the agent's that Gupshup accepted; its Gupshup id."""
        gupshup_id = str(uuid.uuid4())
        await self.db["sends"].insert_one(
            {
                "_id": f"snd_{uuid.uuid4().hex}",
                "org_id": org_id,
                "agent_id": agent_id,
                "state": "submitted",
                "gupshup_message_id": gupshup_id,
                "whatsapp_message_id": f"wamid.{gupshup_id}",
            }
        )
        return gupshup_id

    async def sent_status(
        self, gupshup_id: str, at: datetime, category: str, pricing_type: str
    ) -> None:
        """The `sent` status of a send, with WhatsApp's pricing."""
        send = await self.db["sends"].find_one({"gupshup_message_id": gupshup_id})
        assert send is not None
        await self.db["delivery_statuses"].insert_one(
            {
                "_id": f"dst_{uuid.uuid4().hex}",
                "send_id": send["_id"],
                "org_id": send["org_id"],
                "status": "sent",
                "rank": 2,
                "at": at,
                "whatsapp_message_id": send["whatsapp_message_id"],
                "pricing_category": category,
                "pricing_type": pricing_type,
            }
        )

    async def billing_event(
        self,
        org_id: str,
        agent_id: str,
        gupshup_id: str | None,
        at: datetime,
        category: str,
        billable: bool,
        whatsapp_id: str | None = None,
    ) -> None:
        """Gupshup's billing event for a message, as outbound keeps it."""
        event_id = f"evt_{uuid.uuid4().hex}:0"
        await self.db["billing_events"].insert_one(
            {
                "_id": event_id,
                "event_id": event_id,
                "kind": "billing.event.v1",
                "org_id": org_id,
                "agent_id": agent_id,
                "gupshup_message_id": gupshup_id,
                "whatsapp_message_id": whatsapp_id or f"wamid.{gupshup_id}",
                "destination": "6598887777",
                "category": category,
                "billable": billable,
                "model": "PMP",
                "at": at,
            }
        )

    async def priced(
        self,
        org_id: str,
        agent_id: str,
        at: datetime,
        category: str,
        billable: bool,
        *,
        status: bool = True,
        billing: bool = True,
    ) -> str:
        """A sent message priced by its status, its billing event or both; its Gupshup id."""
        gupshup_id = await self.send(org_id, agent_id)
        if status:
            pricing_type = "regular" if billable else "free_customer_service"
            await self.sent_status(gupshup_id, at, category, pricing_type)
        if billing:
            await self.billing_event(org_id, agent_id, gupshup_id, at, category, billable)
        return gupshup_id


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def counts(report: dict[str, Any]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(period, agent, category) -> (billable, free) of a report's rows."""
    return {
        (row["period"], row["agent_id"], row["category"]): (row["billable"], row["free"])
        for row in report["rows"]
    }


async def test_a_message_known_from_its_status_and_its_billing_event_counts_once(
    store: Store,
) -> None:
    messages, costs = Messages(store), CostRepository(store)
    at = utc(2025, 7, 10, 4)
    await messages.priced(ORG, "agt_a", at, "marketing", True)  # both
    await messages.priced(ORG, "agt_a", at, "marketing", True, billing=False)
    await messages.priced(ORG, "agt_a", at, "marketing", True, status=False)
    # They disagree: the billing event (what Gupshup charges) wins.
    disputed = await messages.priced(ORG, "agt_a", at, "service", False, billing=False)
    await messages.billing_event(ORG, "agt_a", disputed, at, "utility", True)
    # Gupshup delivered the billing event twice, under two callback ids.
    twice = await messages.priced(ORG, "agt_a", at, "utility", True, status=False)
    await messages.billing_event(ORG, "agt_a", twice, at, "utility", True)
    # A billing event that names only WhatsApp's id is matched to our send through it.
    by_whatsapp_id = await messages.priced(ORG, "agt_a", at, "authentication", True, billing=False)
    await messages.billing_event(
        ORG,
        "agt_a",
        None,
        at,
        "authentication",
        True,
        whatsapp_id=f"wamid.{by_whatsapp_id}",
    )

    report = await costs.report(ORG, *JULY, "month", SINGAPORE)

    assert counts(report) == {
        ("2025-07", "agt_a", "marketing"): (3, 0),
        ("2025-07", "agt_a", "utility"): (2, 0),
        ("2025-07", "agt_a", "authentication"): (1, 0),
    }
    assert report["totals"] == {"billable": 6, "free": 0}


async def test_days_and_months_are_the_organizations_and_the_range_includes_both_ends(
    store: Store,
) -> None:
    messages, costs = Messages(store), CostRepository(store)
    # 23:30 UTC on 31 July is 07:30 on 1 August in Singapore.
    await messages.priced(ORG, "agt_a", utc(2025, 7, 31, 23, 30), "marketing", True)
    await messages.priced(ORG, "agt_a", utc(2025, 7, 31, 15, 59), "marketing", True)
    await messages.priced(ORG, "agt_a", utc(2025, 7, 1, 3), "service", False)
    await messages.priced(ORG, "agt_a", utc(2025, 6, 30, 16, 30), "service", False)  # 1 July
    await messages.priced(ORG, "agt_a", utc(2025, 6, 30, 15, 59), "service", False)  # 30 June

    by_day = await costs.report(ORG, *JULY, "day", SINGAPORE)
    by_month = await costs.report(ORG, date(2025, 6, 1), date(2025, 8, 31), "month", SINGAPORE)
    in_utc = await costs.report(ORG, *JULY, "day", ZoneInfo("UTC"))

    assert counts(by_day) == {
        ("2025-07-01", "agt_a", "service"): (0, 2),
        ("2025-07-31", "agt_a", "marketing"): (1, 0),
    }
    assert counts(by_month) == {
        ("2025-06", "agt_a", "service"): (0, 1),
        ("2025-07", "agt_a", "service"): (0, 2),
        ("2025-07", "agt_a", "marketing"): (1, 0),
        ("2025-08", "agt_a", "marketing"): (1, 0),
    }
    assert counts(in_utc) == {
        ("2025-07-01", "agt_a", "service"): (0, 1),
        ("2025-07-31", "agt_a", "marketing"): (2, 0),
    }
    assert [row["period"] for row in by_month["rows"]] == [
        "2025-06",
        "2025-07",
        "2025-07",
        "2025-08",
    ]


async def test_a_message_belongs_where_its_billing_event_puts_it(store: Store) -> None:
    messages, costs = Messages(store), CostRepository(store)
    # Sent at 23:59:59 on 31 July (Singapore), billed a few seconds later, on 1 August.
    gupshup_id = await messages.priced(
        ORG, "agt_a", utc(2025, 7, 31, 15, 59, 59), "marketing", True, billing=False
    )
    await messages.billing_event(
        ORG, "agt_a", gupshup_id, utc(2025, 7, 31, 16, 0, 5), "marketing", True
    )

    july = await costs.report(ORG, *JULY, "month", SINGAPORE)
    august = await costs.report(ORG, date(2025, 8, 1), date(2025, 8, 31), "month", SINGAPORE)

    assert counts(july) == {}
    assert counts(august) == {("2025-08", "agt_a", "marketing"): (1, 0)}


async def test_agents_and_categories_are_split(store: Store) -> None:
    messages, costs = Messages(store), CostRepository(store)
    at = utc(2025, 7, 15, 2)
    for agent, category, billable in (
        ("agt_a", "marketing", True),
        ("agt_a", "utility", True),
        ("agt_a", "utility", False),
        ("agt_a", "service", False),
        ("agt_a", "service", False),
        ("agt_b", "marketing", True),
        ("agt_b", "authentication", True),
        ("agt_b", "service", False),
    ):
        await messages.priced(ORG, agent, at, category, billable)

    report = await costs.report(ORG, *JULY, "month", SINGAPORE)

    assert counts(report) == {
        ("2025-07", "agt_a", "marketing"): (1, 0),
        ("2025-07", "agt_a", "service"): (0, 2),
        ("2025-07", "agt_a", "utility"): (1, 1),
        ("2025-07", "agt_b", "authentication"): (1, 0),
        ("2025-07", "agt_b", "marketing"): (1, 0),
        ("2025-07", "agt_b", "service"): (0, 1),
    }
    assert [(row["agent_id"], row["category"]) for row in report["rows"]] == sorted(
        (row["agent_id"], row["category"]) for row in report["rows"]
    )
    assert report["totals"] == {"billable": 4, "free": 4}


async def test_another_organizations_messages_are_never_counted(store: Store) -> None:
    messages, costs = Messages(store), CostRepository(store)
    at = utc(2025, 7, 20, 6)
    ours = await messages.priced(ORG, "agt_a", at, "service", False)
    await messages.priced(OTHER_ORG, "agt_x", at, "marketing", True)
    await messages.priced(OTHER_ORG, "agt_x", at, "utility", True, billing=False)
    await messages.priced(OTHER_ORG, "agt_x", at, "utility", True, status=False)
    # Another organization's billing event naming our message changes nothing of ours.
    await messages.billing_event(OTHER_ORG, "agt_x", ours, at, "marketing", True)

    report = await costs.report(ORG, *JULY, "day", SINGAPORE)
    other = await costs.report(OTHER_ORG, *JULY, "day", SINGAPORE)

    assert counts(report) == {("2025-07-20", "agt_a", "service"): (0, 1)}
    assert {agent for _, agent, _ in counts(other)} == {"agt_x"}
    assert other["totals"] == {"billable": 4, "free": 0}


async def test_prices_give_an_estimated_cost_per_row_and_in_total(store: Store) -> None:
    messages, costs = Messages(store), CostRepository(store)
    at = utc(2025, 7, 5, 1)
    for category, billable in (
        ("marketing", True),
        ("marketing", True),
        ("utility", True),
        ("service", False),
        ("marketing_lite", True),  # a category without a price
    ):
        await messages.priced(ORG, "agt_a", at, category, billable)
    prices = MessagePrices(currency="USD", marketing=0.0107, utility=0.0014, authentication=0.0014)

    report = await costs.report(ORG, *JULY, "month", SINGAPORE, prices)

    estimates = {row["category"]: row["estimated_cost"] for row in report["rows"]}
    assert estimates == {
        "marketing": 0.0214,
        "utility": 0.0014,
        "service": 0.0,
        "marketing_lite": None,
    }
    assert report["totals"] == {
        "billable": 4,
        "free": 1,
        "estimated_cost": 0.0228,
        "currency": "USD",
    }
