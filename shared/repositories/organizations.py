"""Organizations (agencies) and their admin API keys."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from shared.ids import new_id
from shared.models import utcnow
from shared.quiet_hours import QuietHours
from shared.repositories.api_keys import ApiKeyRepository
from shared.repositories.record import StoredRecord
from shared.store import Store, with_retry


class MessagePrices(BaseModel):
    """What WhatsApp charges the organization per billable message, by pricing category."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    marketing: float = Field(ge=0)
    utility: float = Field(ge=0)
    authentication: float = Field(ge=0)

    def price_of(self, category: str) -> float | None:
        """The price of one billable message of `category`; None when it has none."""
        return {
            "marketing": self.marketing,
            "utility": self.utility,
            "authentication": self.authentication,
        }.get(category)


class OrganizationSettings(BaseModel):
    """Per-organization defaults."""

    region: str = "SG"
    timezone: str = "Asia/Singapore"
    # What an agent sees of the same lead's threads with colleagues: nothing, their metadata
    # (agent, stage, last contact, booked), or also their summary.
    cross_agent_visibility: Literal["none", "metadata", "summary"] = "metadata"
    # For the cost report's estimates; without prices it counts messages only.
    message_prices: MessagePrices | None = None
    # Business-initiated messages wait while it is quiet in the agent's time zone.
    quiet_hours: QuietHours = Field(default_factory=QuietHours)


class Organization(StoredRecord):
    """An agency."""

    name: str
    slug: str
    settings: OrganizationSettings
    status: str = "active"
    created_at: datetime


class OrganizationExists(Exception):
    """An organization with that slug exists already."""


def slugify(name: str) -> str:
    """A URL-friendly form of a name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "org"


class OrganizationRepository:
    """Create and read organizations."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._orgs = store.db["organizations"]

    async def create(self, name: str, settings: OrganizationSettings) -> tuple[Organization, str]:
        """Create an organization and its first admin API key (returned once, stored hashed)."""
        org = Organization(
            id=new_id("org"),
            name=name,
            slug=slugify(name),
            settings=settings,
            created_at=utcnow(),
        )
        try:
            await with_retry(lambda: self._orgs.insert_one(org.model_dump(by_alias=True)))
        except DuplicateKeyError:
            raise OrganizationExists(f"an organization with slug {org.slug!r} exists") from None
        _key, api_key = await ApiKeyRepository(self._store).issue("org", org.id, "first key")
        return org, api_key

    async def update(
        self, org_id: str, fields: dict[str, object]
    ) -> tuple[Organization, Organization] | None:
        """Change an organization; (before, after), or None when it does not exist."""
        before = await self.get(org_id)
        if before is None:
            return None
        if fields:
            await with_retry(lambda: self._orgs.update_one({"_id": org_id}, {"$set": fields}))
        after = await self.get(org_id)
        assert after is not None
        return before, after

    async def get(self, org_id: str) -> Organization | None:
        """An organization by id."""
        doc = await with_retry(lambda: self._orgs.find_one({"_id": org_id}))
        return Organization.model_validate(doc) if doc else None

    async def get_by_slug(self, slug: str) -> Organization | None:
        """An organization by slug."""
        doc = await with_retry(lambda: self._orgs.find_one({"slug": slug}))
        return Organization.model_validate(doc) if doc else None
