"""Listings: an agent's or organization's properties that the brain may cite."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.ids import new_id
from shared.models import utcnow
from shared.store import Document, Store, with_retry

PropertyType = Literal["condo", "hdb", "landed", "executive_condo", "commercial"]
Tenure = Literal["freehold", "999-year", "99-year", "other"]
ListingStatus = Literal["available", "reserved", "sold", "withdrawn"]
CSV_COLUMNS = (
    "project",
    "district",
    "property_type",
    "bedrooms",
    "price",
    "size_sqft",
    "tenure",
    "status",
    "agent_id",
)


class ListingFields(BaseModel):
    """What describes a property; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    project: str = Field(min_length=1, max_length=200)
    district: str = Field(min_length=1, max_length=100)
    property_type: PropertyType
    bedrooms: int = Field(ge=0, le=20)
    price: int = Field(gt=0, le=1_000_000_000)
    size_sqft: int | None = Field(default=None, gt=0, le=1_000_000)
    tenure: Tenure | None = None
    status: ListingStatus = "available"
    agent_id: str | None = None  # None: a listing of the whole organization


class ListingUpdate(BaseModel):
    """Changes to a listing; absent fields stay."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    project: str | None = Field(default=None, min_length=1, max_length=200)
    district: str | None = Field(default=None, min_length=1, max_length=100)
    property_type: PropertyType | None = None
    bedrooms: int | None = Field(default=None, ge=0, le=20)
    price: int | None = Field(default=None, gt=0, le=1_000_000_000)
    size_sqft: int | None = Field(default=None, gt=0, le=1_000_000)
    tenure: Tenure | None = None
    status: ListingStatus | None = None


class Listing(ListingFields):
    """A stored listing."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    org_id: str
    created_at: datetime

    def public(self) -> dict[str, object]:
        """What the API shows of a listing."""
        return {"listing_id": self.id, **self.model_dump(mode="json", exclude={"id"})}


class CsvRejected(Exception):
    """Rows of an import are invalid; nothing was imported. `errors` maps "line N" to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(f"{len(errors)} invalid rows")
        self.errors = errors


def parse_csv(text: str, max_rows: int = 5000) -> list[ListingFields]:
    """Every row of a listings CSV (header first), or CsvRejected naming each bad line."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if not header or unknown:
        raise CsvRejected(
            {
                "line 1": f"unknown or missing columns: {', '.join(unknown) or 'none'}"
                f" (expected some of {', '.join(CSV_COLUMNS)})"
            }
        )
    rows: list[ListingFields] = []
    errors: dict[str, str] = {}
    for row in reader:
        line = f"line {reader.line_num}"
        if len(rows) + len(errors) >= max_rows:
            raise CsvRejected({line: f"more than {max_rows} rows"})
        if None in row:
            errors[line] = "more values than columns"
            continue
        values = {k: v for k, v in row.items() if v not in ("", None)}
        try:
            rows.append(ListingFields.model_validate(values))
        except ValidationError as exc:
            errors[line] = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
    if errors:
        raise CsvRejected(errors)
    return rows


class ListingRepository:
    """Store and search listings of an organization."""

    def __init__(self, store: Store) -> None:
        self._listings = store.db["listings"]

    def _document(self, org_id: str, fields: ListingFields, import_id: str | None) -> Document:
        return {
            "_id": new_id("lst"),
            "org_id": org_id,
            **fields.model_dump(),
            "import_id": import_id,
            "created_at": utcnow(),
        }

    async def create(self, org_id: str, fields: ListingFields) -> Listing:
        """Add one listing."""
        doc = self._document(org_id, fields, None)
        await with_retry(lambda: self._listings.insert_one(doc))
        return Listing.model_validate(doc)

    async def import_all(self, org_id: str, rows: list[ListingFields]) -> int:
        """Add validated rows all together; if the store fails midway, none stays."""
        import_id = new_id("imp")
        docs = [self._document(org_id, row, import_id) for row in rows]
        try:
            for start in range(0, len(docs), 500):
                batch = docs[start : start + 500]
                await with_retry(lambda b=batch: self._listings.insert_many(b))  # type: ignore[misc]
        except Exception:
            await with_retry(
                lambda: self._listings.delete_many({"org_id": org_id, "import_id": import_id})
            )
            raise
        return len(docs)

    async def get(self, org_id: str, listing_id: str) -> Listing | None:
        """A listing of the organization."""
        doc = await with_retry(
            lambda: self._listings.find_one({"_id": listing_id, "org_id": org_id})
        )
        return Listing.model_validate(doc) if doc else None

    async def update(self, org_id: str, listing_id: str, fields: Document) -> Listing | None:
        """Change a listing; None when the organization has no such listing."""
        result = await with_retry(
            lambda: self._listings.update_one(
                {"_id": listing_id, "org_id": org_id}, {"$set": fields}
            )
        )
        if result.matched_count != 1:
            return None
        return await self.get(org_id, listing_id)

    async def delete(self, org_id: str, listing_id: str) -> bool:
        """Remove a listing."""
        result = await with_retry(
            lambda: self._listings.delete_one({"_id": listing_id, "org_id": org_id})
        )
        return result.deleted_count == 1

    async def page(
        self, org_id: str, *, after: str | None, limit: int, filters: Document
    ) -> list[Listing]:
        """Listings of the organization in id order, filtered."""
        query: Document = {"org_id": org_id, **filters}
        if after:
            query["_id"] = {"$gt": after}
        cursor = self._listings.find(query).sort("_id", 1).limit(limit)
        return [Listing.model_validate(doc) async for doc in cursor]

    async def available_to_agent(self, org_id: str, agent_id: str, limit: int) -> list[Listing]:
        """Up to `limit` available listings the agent may cite: their own and the organization's."""
        query = {"org_id": org_id, "status": "available", "agent_id": {"$in": [agent_id, None]}}
        cursor = self._listings.find(query).limit(limit)
        docs = await with_retry(lambda: cursor.to_list())
        return [Listing.model_validate(doc) for doc in docs]
