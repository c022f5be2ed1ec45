"""MongoDB access: the client, transient-error retries and the versioned migrations.

Correctness under concurrency rests on unique indexes (insert-if-absent, a duplicate key
meaning "someone else won"), never on read-modify-write, because the local server
(FerretDB) does not make updates atomic. Repositories live in `shared.repositories`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Document = dict[str, Any]


def is_duplicate(exc: BaseException) -> bool:
    """A unique index refused the write (FerretDB reports it differently for updates)."""
    if isinstance(exc, DuplicateKeyError):
        return True
    return isinstance(exc, OperationFailure) and "UNIQUE constraint failed" in str(exc)


def is_transient(exc: BaseException) -> bool:
    """Errors that go away by themselves: SQLite's single writer, a reconnecting driver."""
    if is_duplicate(exc):
        return False
    if isinstance(exc, AutoReconnect):
        return True
    return isinstance(exc, OperationFailure) and "database is locked" in str(exc)


async def with_retry(operation: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """Run a store operation, retrying briefly on transient errors."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.01, max=0.5, jitter=0.02),
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")


async def insert_if_absent(
    collection: AsyncCollection[Document], document: Document, same: Document
) -> Document | None:
    """Insert `document`, or, when a unique index says it is there already, return the stored
    document `same` selects (None when this call inserted it).

    The duplicate key is re-raised when `same` finds nothing: the unique index that refused
    the write is not the one `same` reads by.
    """
    try:
        await with_retry(lambda: collection.insert_one(document))
    except DuplicateKeyError:
        existing = await with_retry(lambda: collection.find_one(same))
        if existing is None:
            raise
        return existing
    return None


async def converge(
    truth: Callable[[], Awaitable[T]],
    current: Callable[[], Awaitable[T]],
    write: Callable[[T], Awaitable[object]],
    rounds: int = 5,
) -> None:
    """Bring a summary field in line with the append-only documents it summarizes.

    Updates are not atomic on the local store, so two writers can interleave and the one that
    read less can write last. Every writer therefore re-reads after writing and corrects until
    the field matches: the last writer to check always leaves the right value.
    """
    for _ in range(rounds):
        expected = await truth()
        if await current() == expected:
            return
        await write(expected)


@dataclass(frozen=True)
class Migration:
    """One versioned step of the schema; `apply` must be idempotent."""

    version: int
    description: str
    apply: Callable[[AsyncDatabase[Document]], Awaitable[None]]


def unique(*keys: str, name: str) -> IndexModel:
    """A unique ascending index on `keys`."""
    return IndexModel([(k, ASCENDING) for k in keys], unique=True, name=name)


def plain(*keys: str, name: str) -> IndexModel:
    """An ascending index on `keys`."""
    return IndexModel([(k, ASCENDING) for k in keys], name=name)


async def create_indexes(db: AsyncDatabase[Document], indexes: dict[str, list[IndexModel]]) -> None:
    """Create each collection's indexes (existing ones with the same definition are kept)."""
    for collection, models in indexes.items():
        await db[collection].create_indexes(models)


async def _initial_indexes(db: AsyncDatabase[Document]) -> None:
    indexes: dict[str, list[IndexModel]] = {
        "organizations": [unique("slug", name="slug_unique")],
        "api_keys": [unique("key_hash", name="key_hash_unique"), plain("org_id", name="org")],
        "audit_log": [plain("org_id", "at", name="org_time")],
        "agents": [
            unique("number", name="number_unique"),
            unique("callback_key_hash", name="callback_key_unique"),
            plain("org_id", name="org"),
            plain("gupshup_app", name="gupshup_app"),
        ],
        "leads": [unique("phone", name="phone_unique")],
        "threads": [
            unique("agent_id", "lead_id", name="agent_lead_unique"),
            plain("org_id", "lead_id", name="org_lead"),
        ],
        "messages": [
            unique("agent_id", "provider_message_id", name="agent_provider_id_unique"),
            plain("thread_id", "answered", "sent_at", name="thread_unanswered"),
        ],
        "replies": [
            plain("thread_id", "published", name="thread_unpublished"),
            plain("org_id", "thread_id", "created_at", name="thread_time"),
        ],
        "sends": [
            plain("gupshup_message_id", name="gupshup_id"),
            plain("whatsapp_message_id", name="whatsapp_id"),
            plain("command_id", name="command"),
        ],
        "delivery_statuses": [plain("send_id", name="send")],
        "consent_events": [plain("org_id", "lead_id", "at", name="org_lead_time")],
        "thread_leases": [plain("thread_id", "generation", name="thread_generation")],
        "templates": [unique("agent_id", "name", "language", name="agent_name_language_unique")],
        "template_usage": [plain("org_id", "agent_id", "at", name="org_agent_time")],
        "listings": [
            plain("org_id", "agent_id", name="org_agent"),
            plain("org_id", "district", name="org_district"),
        ],
        "conversions": [plain("org_id", "thread_id", name="org_thread")],
        "rate_slots": [plain("at", name="at")],
        "agent_pauses": [plain("agent_id", "until", name="agent_until")],
        "billing_events": [plain("org_id", "agent_id", name="org_agent")],
    }
    await create_indexes(db, indexes)


async def _one_agent_per_app(db: AsyncDatabase[Document]) -> None:
    # A Gupshup app (by name, and by id where known) routes to exactly one agent. The id is
    # optional and partial indexes are not available everywhere, so every agent carries an
    # `app_id_claim`: its app id, or a value of its own when it has none.
    async for agent in db["agents"].find({"app_id_claim": {"$exists": False}}):
        claim = agent.get("gupshup_app_id") or f"-{agent['_id']}"
        await db["agents"].update_one({"_id": agent["_id"]}, {"$set": {"app_id_claim": claim}})
    if "gupshup_app" in await db["agents"].index_information():
        await db["agents"].drop_index("gupshup_app")
    await db["agents"].create_indexes(
        [
            unique("gupshup_app", name="gupshup_app_unique"),
            unique("app_id_claim", name="app_id_claim_unique"),
        ]
    )


async def _lead_data_indexes(db: AsyncDatabase[Document]) -> None:
    # A lead's data per organization (import, export, erasure): its import records, and
    # the lookups by lead across organizations that decide whether the registry entry goes.
    indexes: dict[str, list[IndexModel]] = {
        "lead_imports": [
            plain("org_id", "lead_id", name="org_lead"),
            plain("lead_id", name="lead"),
        ],
        "threads": [plain("lead_id", name="lead")],
        "messages": [plain("org_id", "lead_id", name="org_lead")],
        "consents": [plain("lead_id", name="lead")],
        "consent_events": [plain("lead_id", name="lead")],
        "sends": [plain("org_id", "thread_id", name="org_thread")],
        "template_usage": [plain("org_id", "lead_id", name="org_lead")],
    }
    await create_indexes(db, indexes)


async def _unknown_send_index(db: AsyncDatabase[Document]) -> None:
    # A status for an unknown Gupshup id looks for the unknown send to that lead.
    await db["sends"].create_indexes(
        [plain("agent_id", "destination", "state", name="agent_destination_state")]
    )


async def _cost_report_indexes(db: AsyncDatabase[Document]) -> None:
    # The cost report reads an organization's priced messages by time, and billing events
    # by the Gupshup id of a message priced by its `sent` status.
    await db["billing_events"].create_indexes(
        [
            plain("org_id", "at", name="org_time"),
            plain("org_id", "gupshup_message_id", name="org_gupshup_id"),
        ]
    )
    await db["delivery_statuses"].create_indexes(
        [plain("org_id", "status", "at", name="org_status_time")]
    )


async def _appointment_indexes(db: AsyncDatabase[Document]) -> None:
    # A thread's upcoming appointment, an agent's booked times, an organization's calendar,
    # a lead's calendar link; the claims on an agent's time by the appointment holding them.
    await db["appointments"].create_indexes(
        [
            unique("ics_token", name="ics_token_unique"),
            plain("org_id", "thread_id", "status", name="org_thread_status"),
            plain("org_id", "agent_id", "start", name="org_agent_start"),
            plain("org_id", "start", name="org_start"),
        ]
    )
    await db["appointment_slots"].create_indexes([plain("appointment_id", name="appointment")])


async def _schedule_indexes(db: AsyncDatabase[Document]) -> None:
    # The sweeper reads what is due across organizations; a reply or a booking finds the
    # thread's pending follow-ups and reminders.
    await db["scheduled_messages"].create_indexes(
        [
            plain("status", "due_at", name="status_due"),
            plain("org_id", "thread_id", "kind", "status", name="org_thread_kind_status"),
        ]
    )


async def _lead_identity_indexes(db: AsyncDatabase[Document]) -> None:
    # WhatsApp may withhold a lead's number since 2026: the phone is unique only where known
    # (a lead without one has no `phone` field; `sparse` keeps MongoDB from counting the
    # missing field as one shared value). BSUIDs are claimed in `lead_keys` by `_id`.
    info = await db["leads"].index_information()
    if "phone_unique" in info and not info["phone_unique"].get("sparse"):
        await db["leads"].drop_index("phone_unique")
    await db["leads"].create_indexes(
        [
            IndexModel([("phone", ASCENDING)], unique=True, sparse=True, name="phone_unique"),
            plain("user_ids.user_id", name="user_id"),
            plain("merged_into", name="merged_into"),
        ]
    )
    await db["lead_keys"].create_indexes([plain("lead_id", name="lead")])


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "collections and indexes of the pipeline", _initial_indexes),
    Migration(2, "one agent per Gupshup app", _one_agent_per_app),
    Migration(3, "indexes for a lead's data per organization", _lead_data_indexes),
    Migration(4, "sends by agent, lead and state", _unknown_send_index),
    Migration(5, "indexes for the cost report", _cost_report_indexes),
    Migration(6, "appointments and the claims on agents' time", _appointment_indexes),
    Migration(7, "follow-ups and reminders by due time and by thread", _schedule_indexes),
    Migration(
        8, "leads known by phone, by business-scoped user ID, or both", _lead_identity_indexes
    ),
)


class Store:
    """A MongoDB client bound to the configured database."""

    def __init__(self, settings: Settings) -> None:
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongodb_url,
            tz_aware=True,
            serverSelectionTimeoutMS=5_000,
            connectTimeoutMS=5_000,
            appname="realtybot",
        )
        self.db: AsyncDatabase[Document] = self.client[settings.mongodb_db]

    async def ping(self) -> bool:
        """True when the server answers."""
        try:
            await self.client.admin.command("ping")
        except Exception:
            return False
        return True

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded; return the versions applied now."""
        done = {doc["_id"] async for doc in self.db["schema_migrations"].find({}, {"_id": 1})}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await migration.apply(self.db)
            # Another process may apply it at the same time: both runs are idempotent.
            with contextlib.suppress(DuplicateKeyError):
                await self.db["schema_migrations"].insert_one(
                    {"_id": migration.version, "description": migration.description}
                )
            applied.append(migration.version)
            log.info(
                "migration applied", version=migration.version, description=migration.description
            )
        return applied

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()


async def set_fields(
    collection: AsyncCollection[Document], org_id: str, doc_id: str, fields: Document
) -> None:
    """Set fields of one document of an organization (nothing when it is another's)."""
    await with_retry(
        lambda: collection.update_one({"_id": doc_id, "org_id": org_id}, {"$set": fields})
    )
