"""Message costs: billable and free WhatsApp messages per agent, pricing category and period.

WhatsApp prices every message (per-message pricing since July 2025) and Gupshup reports
the price twice: as a billing-event and as the pricing of the `sent` status. Either may be
missing, so a message is counted from both, once, by its Gupshup id; where they disagree
the billing event wins (it is what Gupshup charges).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from shared.models import BillingEvent
from shared.repositories.organizations import MessagePrices
from shared.store import Document, Store, with_retry

Granularity = Literal["day", "month"]
GRANULARITIES: tuple[Granularity, ...] = ("day", "month")
PERIOD_FORMATS: dict[Granularity, str] = {"day": "%Y-%m-%d", "month": "%Y-%m"}
UNKNOWN_CATEGORY = "unknown"
BILLED_PRICING_TYPE = "regular"  # the free ones are free_customer_service, free_entry_point
_CHUNK = 500  # ids per `$in` query


@dataclass(frozen=True)
class PricedMessage:
    """One message as WhatsApp priced it: whose, in which category, billed or free, when."""

    agent_id: str
    category: str
    billable: bool
    at: datetime


def local_days(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC bounds [start, end) of the days `first` to `last` (both included) in `zone`."""
    start = datetime.combine(first, time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for index in range(0, len(values), _CHUNK):
        yield list(values[index : index + _CHUNK])


class CostRepository:
    """Count an organization's priced messages from billing events and `sent` statuses."""

    def __init__(self, store: Store) -> None:
        self._billing = store.db["billing_events"]
        self._statuses = store.db["delivery_statuses"]
        self._sends = store.db["sends"]

    async def record_billing(self, event: BillingEvent) -> None:
        """Keep a Gupshup billing event (append-only: a redelivered event is stored once)."""
        await with_retry(
            lambda: self._billing.replace_one(
                {"_id": event.event_id}, {"_id": event.event_id, **event.model_dump()}, upsert=True
            )
        )

    async def report(
        self,
        org_id: str,
        first: date,
        last: date,
        granularity: Granularity,
        zone: ZoneInfo,
        prices: MessagePrices | None = None,
    ) -> dict[str, Any]:
        """Billable and free messages per period (day or month in `zone`), agent and category,
        over the days `first` to `last`, with totals; estimated costs when `prices` are set."""
        start, end = local_days(first, last, zone)
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for message in await self.priced_messages(org_id, start, end):
            period = message.at.astimezone(zone).strftime(PERIOD_FORMATS[granularity])
            row = rows.setdefault(
                (period, message.agent_id, message.category),
                {
                    "period": period,
                    "agent_id": message.agent_id,
                    "category": message.category,
                    "billable": 0,
                    "free": 0,
                },
            )
            row["billable" if message.billable else "free"] += 1
        ordered = [rows[key] for key in sorted(rows)]
        totals: dict[str, Any] = {
            "billable": sum(row["billable"] for row in ordered),
            "free": sum(row["free"] for row in ordered),
        }
        if prices is not None:
            for row in ordered:
                row["estimated_cost"] = _estimate(row, prices)
            # Rows of a category without a price (null) are left out of the total.
            known = [row["estimated_cost"] for row in ordered if row["estimated_cost"] is not None]
            totals["estimated_cost"] = round(sum(known), 6)
            totals["currency"] = prices.currency
        return {"rows": ordered, "totals": totals}

    async def priced_messages(
        self, org_id: str, start: datetime, end: datetime
    ) -> list[PricedMessage]:
        """The organization's messages priced in [start, end), each once.

        A message with a billing event is placed by it, even when the event lies outside the
        range (the message then belongs to another range); else by its `sent` status.
        """
        billed = await self._billed(org_id, {"at": {"$gte": start, "$lt": end}})
        from_statuses = await self._priced_statuses(org_id, start, end)
        unbilled = [key for key in from_statuses if key not in billed]
        billed_elsewhere: set[str] = set()
        for chunk in _chunks(unbilled):
            billed_elsewhere |= set(
                await self._billed(org_id, {"gupshup_message_id": {"$in": chunk}})
            )
        messages = {k: m for k, m in from_statuses.items() if k not in billed_elsewhere}
        messages.update(billed)
        return list(messages.values())

    async def _billed(self, org_id: str, query: Document) -> dict[str, PricedMessage]:
        """Billing events matching `query` by Gupshup id, the earliest of any duplicates."""
        events = [
            doc
            async for doc in self._billing.find(
                {**query, "org_id": org_id},
                {
                    "agent_id": 1,
                    "gupshup_message_id": 1,
                    "whatsapp_message_id": 1,
                    "category": 1,
                    "billable": 1,
                    "at": 1,
                },
            )
        ]
        # An event without Gupshup's id is matched to our send through WhatsApp's id.
        gupshup_ids = await self._gupshup_ids(
            org_id,
            [
                doc["whatsapp_message_id"]
                for doc in events
                if not doc.get("gupshup_message_id") and doc.get("whatsapp_message_id")
            ],
        )
        found: dict[str, PricedMessage] = {}
        for doc in sorted(events, key=lambda d: d["at"]):
            whatsapp_id = doc.get("whatsapp_message_id") or ""
            key = (
                doc.get("gupshup_message_id")
                or gupshup_ids.get(whatsapp_id)
                or whatsapp_id
                or doc["_id"]
            )
            found.setdefault(
                key,
                PricedMessage(
                    agent_id=doc["agent_id"],
                    category=doc.get("category") or UNKNOWN_CATEGORY,
                    billable=doc.get("billable") is True,
                    at=doc["at"],
                ),
            )
        return found

    async def _gupshup_ids(self, org_id: str, whatsapp_ids: list[str]) -> dict[str, str]:
        """Gupshup's ids of our sends with these WhatsApp ids."""
        found: dict[str, str] = {}
        for chunk in _chunks(whatsapp_ids):
            async for send in self._sends.find(
                {"org_id": org_id, "whatsapp_message_id": {"$in": chunk}},
                {"whatsapp_message_id": 1, "gupshup_message_id": 1},
            ):
                if send.get("gupshup_message_id"):
                    found[send["whatsapp_message_id"]] = send["gupshup_message_id"]
        return found

    async def _priced_statuses(
        self, org_id: str, start: datetime, end: datetime
    ) -> dict[str, PricedMessage]:
        """Messages whose `sent` status in [start, end) carries pricing, by Gupshup id."""
        statuses = [
            doc
            async for doc in self._statuses.find(
                {
                    "org_id": org_id,
                    "status": "sent",
                    "pricing_category": {"$exists": True},
                    "at": {"$gte": start, "$lt": end},
                },
                {"send_id": 1, "pricing_category": 1, "pricing_type": 1, "at": 1},
            )
        ]
        sends: dict[str, Document] = {}
        for chunk in _chunks(sorted({doc["send_id"] for doc in statuses})):
            async for send in self._sends.find(
                {"org_id": org_id, "_id": {"$in": chunk}},
                {"agent_id": 1, "gupshup_message_id": 1},
            ):
                sends[send["_id"]] = send
        found: dict[str, PricedMessage] = {}
        for doc in statuses:
            claim = sends.get(doc["send_id"])
            if claim is None:
                continue  # erased with its lead's data: nobody left to attribute it to
            found[claim.get("gupshup_message_id") or claim["_id"]] = PricedMessage(
                agent_id=claim["agent_id"],
                category=doc.get("pricing_category") or UNKNOWN_CATEGORY,
                billable=doc.get("pricing_type") == BILLED_PRICING_TYPE,
                at=doc["at"],
            )
        return found


def _estimate(row: dict[str, Any], prices: MessagePrices) -> float | None:
    """What the row's billable messages cost; None when its category has no price."""
    if row["billable"] == 0:
        return 0.0
    price = prices.price_of(row["category"])
    return None if price is None else round(row["billable"] * price, 6)
