"""A lead's data as one organization holds it: imported from CSV, exported, erased.

The registry (`leads`) is global, so everything here works on one organization's share of
it: its threads and what hangs off them, its consents, its import records, the names seen
through it and its first touch. Nothing tells an organization whether another one knows
the same person (tenancy invariant 4): import outcomes and erasure counts are what the
organization itself had and has, never what the registry as a whole had.

A lead is imported by phone, by business-scoped user ID (BSUID, in the business portfolio
of the row's agent) or both; a row with a user ID is looked up as dedup looks up a sender
(`LeadRepository.resolve`), so identifiers that prove two leads one person merge them. The
organization's identifiers (its user IDs, usernames and the claims on them) are exported
and erased with the rest of its share.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.identity import WhatsAppUser, is_bsuid, is_parent_bsuid
from shared.ids import derived_id, new_id
from shared.logs import get_logger
from shared.phones import InvalidPhoneNumber, normalize_phone
from shared.repositories.leads import (
    LeadRecord,
    LeadRepository,
    Sighting,
    parent_key,
    user_id_key,
)
from shared.repositories.threads import ThreadRepository, thread_id_for
from shared.store import Document, Store, insert_if_absent, with_retry

log = get_logger(__name__)

IMPORT_COLUMNS = ("name", "phone", "user_id", "source", "agent_id")
MAX_IMPORT_ROWS = 5000
MAX_NAME_LENGTH = 200
MAX_SOURCE_LENGTH = 100
_CHUNK = 500  # ids per `$in` query

RowOutcome = Literal["created", "merged", "unchanged", "invalid"]
RegistryOutcome = Literal["created", "merged", "unchanged"]


class ImportRejected(Exception):
    """The CSV as a whole cannot be imported (header, size); nothing was done."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ImportRow:
    """One data row of a lead CSV, as written (the phone is normalized later); a phone, a
    business-scoped user ID or both."""

    line: int
    phone: str = ""
    user_id: str | None = None
    name: str | None = None
    source: str | None = None
    agent_id: str | None = None
    problem: str | None = None  # why the row cannot be imported, found while reading it


@dataclass(frozen=True)
class ImportResult:
    """What importing one row did, as the organization may see it.

    `registry` says what happened to the global registry entry (for operators' metrics
    only: showing it would tell the organization whether another one knows the person).
    """

    line: int
    outcome: RowOutcome
    lead_id: str | None = None
    reason: str | None = None
    registry: RegistryOutcome | None = None
    counted: bool = False  # the registry's outcome is already in realtybot_leads_total

    def public(self) -> dict[str, Any]:
        """The row as the import report shows it."""
        shown: dict[str, Any] = {"line": self.line, "outcome": self.outcome}
        if self.lead_id is not None:
            shown["lead_id"] = self.lead_id
        if self.reason is not None:
            shown["reason"] = self.reason
        return shown


def parse_import_csv(text: str, max_rows: int = MAX_IMPORT_ROWS) -> list[ImportRow]:
    """The data rows of a lead CSV (header first); ImportRejected for a bad header or size.

    A bad value only marks its row (`problem`): the other rows are still imported.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        header = [column.strip().lower() for column in next(reader)]
    except StopIteration:
        raise ImportRejected({"line 1": "the CSV is empty (expected a header)"}) from None
    except csv.Error as exc:
        raise ImportRejected({"line 1": f"unreadable CSV: {exc}"}) from None
    expected = ", ".join(IMPORT_COLUMNS)
    unknown = [c for c in header if c not in IMPORT_COLUMNS]
    if unknown:
        raise ImportRejected(
            {"line 1": f"unknown columns: {', '.join(unknown)} (expected some of {expected})"}
        )
    if len(set(header)) != len(header):
        raise ImportRejected({"line 1": "a column appears twice"})
    if "phone" not in header and "user_id" not in header:
        raise ImportRejected(
            {"line 1": f"a phone or user_id column is needed (columns: {expected})"}
        )
    rows: list[ImportRow] = []
    try:
        for values in reader:
            if not values:
                continue  # a blank line
            line = reader.line_num
            if len(rows) >= max_rows:
                raise ImportRejected({f"line {line}": f"more than {max_rows} rows"})
            rows.append(_row(line, header, values))
    except csv.Error as exc:
        raise ImportRejected({f"line {reader.line_num}": f"unreadable CSV: {exc}"}) from None
    return rows


def _row(line: int, header: list[str], values: list[str]) -> ImportRow:
    if len(values) > len(header):
        return ImportRow(line, problem="more values than columns")
    cells = {column: value.strip() for column, value in zip(header, values, strict=False)}
    name, source = cells.get("name") or None, cells.get("source") or None
    phone, user_id = cells.get("phone", ""), cells.get("user_id") or None
    agent_id = cells.get("agent_id") or None
    problem = None
    if not phone and user_id is None:
        problem = "phone or user_id: missing"
    elif is_bsuid(phone):  # never read as a number: its digits are not one
        problem = "phone: a business-scoped user ID belongs in the user_id column"
    elif user_id is not None and not is_bsuid(user_id):
        problem = "user_id: not a business-scoped user ID (CC.alphanumerics)"
    elif user_id is not None and agent_id is None:
        # A user ID exists only within a business portfolio: the agent's says which.
        problem = "user_id: needs the agent_id of an agent who knows the lead by it"
    elif name is not None and len(name) > MAX_NAME_LENGTH:
        problem = f"name: at most {MAX_NAME_LENGTH} characters"
    elif source is not None and len(source) > MAX_SOURCE_LENGTH:
        problem = f"source: at most {MAX_SOURCE_LENGTH} characters"
    return ImportRow(
        line,
        phone=phone,
        user_id=user_id,
        name=name,
        source=source,
        agent_id=agent_id,
        problem=problem,
    )


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _shown(doc: Document, id_name: str, *hidden: str) -> dict[str, Any]:
    """A stored document as an export shows it: its id named, `org_id` left out."""
    return {
        id_name: doc["_id"],
        **{k: v for k, v in doc.items() if k not in {"_id", "org_id", *hidden}},
    }


@dataclass
class _ImportState:
    """What one import knows so far, so that later rows see what earlier rows did."""

    by_phone: dict[str, Document] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # leads the organization already has
    threads: set[str] = field(default_factory=set)  # the organization's thread ids


class LeadDataRepository:
    """One organization's share of leads: import, export and erasure."""

    def __init__(self, store: Store) -> None:
        db = store.db
        self._leads = db["leads"]
        self._imports = db["lead_imports"]
        self._threads = db["threads"]
        self._messages = db["messages"]
        self._fingerprints = db["message_fingerprints"]
        self._replies = db["replies"]
        self._sends = db["sends"]
        self._statuses = db["delivery_statuses"]
        self._template_usage = db["template_usage"]
        self._consents = db["consents"]
        self._consent_events = db["consent_events"]
        self._appointments = db["appointments"]
        self._conversions = db["conversions"]
        self._schedules = db["scheduled_messages"]
        self._lead_keys = db["lead_keys"]
        self._thread_repository = ThreadRepository(store)
        self._lead_repository = LeadRepository(store)

    # -- import -----------------------------------------------------------------------

    async def import_rows(
        self,
        org_id: str,
        rows: list[ImportRow],
        *,
        region: str,
        at: datetime,
        portfolios: Mapping[str, str] | None = None,
    ) -> list[ImportResult]:
        """Import rows in order (every agent id must be the organization's: checked before;
        `portfolios` maps each to its business portfolio, for rows with a user ID).

        Idempotent: a row already imported adds nothing and reads "unchanged".
        """
        phones: dict[int, str | None] = {}
        results: dict[int, ImportResult] = {}
        for index, row in enumerate(rows):
            if row.problem is not None:
                results[index] = ImportResult(row.line, "invalid", reason=row.problem)
                continue
            if not row.phone:
                phones[index] = None
                continue
            try:
                phones[index] = normalize_phone(row.phone, region)
            except InvalidPhoneNumber as exc:
                results[index] = ImportResult(row.line, "invalid", reason=f"phone: {exc}")
        known_phones = sorted({phone for phone in phones.values() if phone is not None})
        state = await self._preload(org_id, known_phones)
        for index, row in enumerate(rows):
            if index not in phones:
                continue
            phone = phones[index]
            if row.user_id is not None and row.agent_id is not None:
                portfolio = (portfolios or {}).get(row.agent_id, f"agent:{row.agent_id}")
                results[index] = await self._import_identified_row(
                    org_id, row, phone, portfolio, state, at
                )
            elif phone is not None:
                results[index] = await self._import_row(org_id, row, phone, state, at)
        return [results[index] for index in range(len(rows))]

    async def _preload(self, org_id: str, phones: list[str]) -> _ImportState:
        """The registry entries of these phones and what the organization has of them."""
        state = _ImportState()
        for chunk in _chunks(phones):
            async for lead in self._leads.find({"phone": {"$in": chunk}}):
                state.by_phone[lead["phone"]] = lead
        lead_ids = [lead["_id"] for lead in state.by_phone.values()]
        state.known = await self._held_by(org_id, lead_ids)
        state.known |= {
            lead["_id"] for lead in state.by_phone.values() if self._registry_mentions(lead, org_id)
        }
        for chunk in _chunks(lead_ids):
            query = {"org_id": org_id, "lead_id": {"$in": chunk}}
            state.threads |= {t["_id"] async for t in self._threads.find(query, {"_id": 1})}
        return state

    async def _held_by(self, org_id: str, lead_ids: list[str]) -> set[str]:
        """Which of these leads the organization has a thread, consent or import record of."""
        held: set[str] = set()
        for chunk in _chunks(lead_ids):
            query = {"org_id": org_id, "lead_id": {"$in": chunk}}
            for collection in (self._threads, self._consent_events, self._imports):
                held |= {doc["lead_id"] async for doc in collection.find(query, {"lead_id": 1})}
        return held

    @staticmethod
    def _registry_mentions(lead: Document, org_id: str) -> bool:
        """Whether the entry holds a fact that came through the organization (a name, the
        first touch, a user ID, a username, the parent user ID)."""
        first_touch = lead.get("first_touch") or {}
        entries = [
            *(lead.get("names") or []),
            *(lead.get("user_ids") or []),
            *(lead.get("usernames") or []),
        ]
        return (
            first_touch.get("org_id") == org_id
            or any(entry.get("org_id") == org_id for entry in entries)
            or org_id in (lead.get("parent_seen_by") or [])
        )

    async def _known_to(self, org_id: str, lead_ids: list[str]) -> set[str]:
        """Which of these leads the organization already holds (records or registry facts)."""
        known = await self._held_by(org_id, lead_ids)
        for chunk in _chunks(lead_ids):
            async for lead in self._leads.find({"_id": {"$in": chunk}}):
                if self._registry_mentions(lead, org_id):
                    known.add(lead["_id"])
        return known

    async def _import_identified_row(
        self,
        org_id: str,
        row: ImportRow,
        phone: str | None,
        portfolio: str,
        state: _ImportState,
        at: datetime,
    ) -> ImportResult:
        """A row with a user ID (and maybe a phone), looked up as dedup looks up a sender:
        identifiers of two leads merge them."""
        assert row.user_id is not None and row.agent_id is not None
        if is_parent_bsuid(row.user_id):
            user = WhatsAppUser(phone=phone, parent_user_id=row.user_id)
        else:
            user = WhatsAppUser(phone=phone, user_id=row.user_id)
        leads = self._lead_repository
        owners = await leads.owners_of(user, portfolio)
        knew = bool(owners) and bool(await self._known_to(org_id, owners))
        before = [record.view_for(org_id) for owner in owners if (record := await leads.get(owner))]
        seen = Sighting(
            org_id=org_id,
            agent_id=row.agent_id,
            portfolio=portfolio,
            at=at,
            name=row.name,
            source={"source": "import", "import_source": row.source},
        )
        lead, created = await leads.resolve(user, seen)
        thread, new_thread = await self._thread_repository.resolve(
            org_id=org_id,
            agent_id=row.agent_id,
            lead_id=lead.id,
            at=at,
            source={"source": "import", "import_source": row.source},
        )
        state.threads.add(thread.id)
        await self._record_import(org_id, lead.id, row, at)
        state.known.add(lead.id)
        if lead.phone is not None:  # later phone-only rows of this file find it
            found = await with_retry(partial(self._leads.find_one, {"_id": lead.id}))
            if found is not None:
                state.by_phone[lead.phone] = found
        changed = len(owners) > 1 or new_thread or lead.view_for(org_id) not in before
        registry: RegistryOutcome = "created" if created else "merged" if changed else "unchanged"
        outcome: RowOutcome = "created" if not knew else "merged" if changed else "unchanged"
        # resolve() counts the leads it creates itself.
        return ImportResult(row.line, outcome, lead_id=lead.id, registry=registry, counted=created)

    async def _import_row(
        self, org_id: str, row: ImportRow, phone: str, state: _ImportState, at: datetime
    ) -> ImportResult:
        registry: RegistryOutcome = "unchanged"
        lead = state.by_phone.get(phone)
        if lead is None:
            lead, created = await self._insert_lead(org_id, row, phone, at)
            state.by_phone[phone] = lead
            if created:
                registry = "created"
            else:  # another import or a message created it meanwhile
                state.known |= await self._held_by(org_id, [lead["_id"]])
                if self._registry_mentions(lead, org_id):
                    state.known.add(lead["_id"])
        lead_id: str = lead["_id"]
        knew = lead_id in state.known and registry != "created"
        changed = False
        if row.name and not any(
            n.get("name") == row.name and n.get("org_id") == org_id for n in lead.get("names", [])
        ):
            entry = {"name": row.name, "org_id": org_id, "at": at}
            await with_retry(
                lambda: self._leads.update_one({"_id": lead_id}, {"$push": {"names": entry}})
            )
            lead.setdefault("names", []).append(entry)
            changed = True
        if row.agent_id and thread_id_for(row.agent_id, lead_id) not in state.threads:
            await self._thread_repository.resolve(
                org_id=org_id,
                agent_id=row.agent_id,
                lead_id=lead_id,
                at=at,
                source={"source": "import", "import_source": row.source},
            )
            state.threads.add(thread_id_for(row.agent_id, lead_id))
            changed = True
        await self._record_import(org_id, lead_id, row, at)
        state.known.add(lead_id)
        if registry != "created" and changed:
            registry = "merged"
        outcome: RowOutcome = "created" if not knew else "merged" if changed else "unchanged"
        return ImportResult(row.line, outcome, lead_id=lead_id, registry=registry)

    async def _insert_lead(
        self, org_id: str, row: ImportRow, phone: str, at: datetime
    ) -> tuple[Document, bool]:
        """Insert-if-absent by phone (unique): (the lead, whether this call created it)."""
        lead: Document = {
            "_id": new_id("lead"),
            "phone": phone,
            "names": [{"name": row.name, "org_id": org_id, "at": at}] if row.name else [],
            "first_touch": {
                "org_id": org_id,
                "agent_id": row.agent_id,
                "at": at,
                "source": "import",
                "import_source": row.source,
            },
            "created_at": at,
        }
        existing = await insert_if_absent(self._leads, lead, {"phone": phone})
        return (lead, True) if existing is None else (existing, False)

    async def _record_import(self, org_id: str, lead_id: str, row: ImportRow, at: datetime) -> None:
        """The organization's record that it imported the lead (the first import wins).

        It is how a lead imported without an agent belongs to the organization at all.
        """
        record: Document = {
            "_id": derived_id("lim", org_id, lead_id),
            "org_id": org_id,
            "lead_id": lead_id,
            "agent_id": row.agent_id,
            "import_source": row.source,
            "at": at,
        }
        with contextlib.suppress(DuplicateKeyError):
            await with_retry(lambda: self._imports.insert_one(record))

    # -- export -----------------------------------------------------------------------

    async def holds(self, org_id: str, lead_id: str) -> bool:
        """True when the organization has a thread, consent or import record of the lead (or
        a message of it, which a reply in flight during an erasure may have left behind)."""
        query = {"org_id": org_id, "lead_id": lead_id}
        for collection in (
            self._threads,
            self._consent_events,
            self._consents,
            self._imports,
            self._messages,
        ):
            if await with_retry(partial(collection.find_one, query, {"_id": 1})):
                return True
        return False

    async def export(self, org_id: str, lead_id: str) -> Document | None:
        """Everything the organization holds about the lead; None when it holds nothing."""
        if not await self.holds(org_id, lead_id):
            return None
        own = {"org_id": org_id, "lead_id": lead_id}
        lead = await with_retry(lambda: self._leads.find_one({"_id": lead_id})) or {}
        first_touch = lead.get("first_touch") or {}
        threads = await self._all(self._threads, own, sort="created_at")
        thread_ids = [t["_id"] for t in threads]
        messages = await self._by_thread(self._messages, org_id, thread_ids, "sent_at")
        sends = await self._by_thread(self._sends, org_id, thread_ids, "claimed_at")
        statuses: dict[str, list[Document]] = {}
        for chunk in _chunks([s["_id"] for s in sends]):
            query = {"org_id": org_id, "send_id": {"$in": chunk}}
            for status in await self._all(self._statuses, query, sort="at"):
                statuses.setdefault(status["send_id"], []).append(_shown(status, "status_id"))
        usage = await self._all(self._template_usage, own, sort="at")

        def of_thread(docs: list[Document], thread_id: str) -> list[Document]:
            return [d for d in docs if d.get("thread_id") == thread_id]

        consent = await with_retry(
            lambda: self._consents.find_one({"_id": derived_id("cns", org_id, lead_id), **own})
        )
        # The identifiers as the organization sees them: never a user ID or username that
        # came through another organization.
        view = LeadRecord.model_validate({**lead, "_id": lead_id}).view_for(org_id)
        return {
            "lead_id": lead_id,
            "phone": view.phone,
            "username": view.username,
            "usernames": list(view.usernames),
            "user_ids": [dict(entry) for entry in view.user_ids],
            "parent_user_id": view.parent_user_id,
            "names": [
                {"name": n.get("name"), "at": n.get("at")}
                for n in lead.get("names", [])
                if n.get("org_id") == org_id
            ],
            "first_touch": {k: v for k, v in first_touch.items() if k != "org_id"}
            if first_touch.get("org_id") == org_id
            else None,
            "imports": [
                _shown(d, "import_id", "lead_id") for d in await self._all(self._imports, own)
            ],
            "consent": None
            if consent is None
            else _shown(consent, "consent_id", "lead_id", "decision"),
            "consent_events": [
                _shown(d, "event_id", "lead_id")
                for d in await self._all(self._consent_events, own, sort="at")
            ],
            "threads": [
                _shown(thread, "thread_id", "lead_id")
                | {
                    "messages": [
                        _shown(m, "message_id", "lead_id")
                        for m in of_thread(messages, thread["_id"])
                    ],
                    "sends": [
                        _shown(s, "send_id") | {"statuses": statuses.get(s["_id"], [])}
                        for s in of_thread(sends, thread["_id"])
                    ],
                    "template_usage": [
                        _shown(u, "send_id", "lead_id") for u in of_thread(usage, thread["_id"])
                    ],
                }
                for thread in threads
            ],
            "appointments": [
                _shown(d, "appointment_id", "lead_id")
                for d in await self._all(self._appointments, own)
            ],
            "conversions": [
                _shown(d, "conversion_id", "lead_id")
                for d in await self._by_thread(self._conversions, org_id, thread_ids, "at")
            ],
        }

    async def _all(
        self, collection: AsyncCollection[Document], query: Document, sort: str | None = None
    ) -> list[Document]:
        cursor = collection.find(query)
        if sort is not None:
            cursor = cursor.sort([(sort, ASCENDING), ("_id", ASCENDING)])
        return [doc async for doc in cursor]

    async def _by_thread(
        self, collection: AsyncCollection[Document], org_id: str, thread_ids: list[str], sort: str
    ) -> list[Document]:
        found: list[Document] = []
        for chunk in _chunks(thread_ids):
            found += await self._all(
                collection, {"org_id": org_id, "thread_id": {"$in": chunk}}, sort=sort
            )
        return found

    # -- erasure ----------------------------------------------------------------------

    async def erase(self, org_id: str, lead_id: str) -> dict[str, int] | None:
        """Delete what the organization holds of the lead; counts per collection, or None.

        The records that make the organization hold the lead (threads, consents, import
        records) go last, so an erasure interrupted midway is finished by calling it again.
        Whether the registry entry itself went (no other organization holds the lead) is
        logged, not answered: the answer would tell whether another organization knows them.
        """
        if not await self.holds(org_id, lead_id):
            return None
        own = {"org_id": org_id, "lead_id": lead_id}
        thread_ids = sorted(
            {t["_id"] async for t in self._threads.find(own, {"_id": 1})}
            | {m["thread_id"] async for m in self._messages.find(own, {"thread_id": 1})}
        )
        send_ids: list[str] = []
        for chunk in _chunks(thread_ids):
            query = {"org_id": org_id, "thread_id": {"$in": chunk}}
            send_ids += [s["_id"] async for s in self._sends.find(query, {"_id": 1})]
        counts: dict[str, int] = {}

        async def delete(name: str, collection: AsyncCollection[Document], query: Document) -> None:
            result = await with_retry(lambda: collection.delete_many(query))
            counts[name] = counts.get(name, 0) + int(result.deleted_count)

        for chunk in _chunks(send_ids):
            await delete(
                "delivery_statuses",
                self._statuses,
                {"org_id": org_id, "send_id": {"$in": chunk}},
            )
        counts.setdefault("delivery_statuses", 0)
        per_thread = (
            ("sends", self._sends),
            ("replies", self._replies),
            ("messages", self._messages),
            ("message_fingerprints", self._fingerprints),
            ("conversions", self._conversions),
            ("scheduled_messages", self._schedules),
        )
        for name, collection in per_thread:
            counts[name] = 0
            for chunk in _chunks(thread_ids):
                await delete(name, collection, {"org_id": org_id, "thread_id": {"$in": chunk}})
        await delete("messages", self._messages, own)  # any outside the threads
        await delete("template_usage", self._template_usage, own)
        await delete("appointments", self._appointments, own)
        await delete("conversions", self._conversions, own)  # any not tied to a thread
        counts.update(await self._erase_from_registry(org_id, lead_id))
        await delete("consent_events", self._consent_events, own)
        await delete("consents", self._consents, own)
        await delete("lead_imports", self._imports, own)
        await delete("threads", self._threads, own)
        return counts

    async def _erase_from_registry(self, org_id: str, lead_id: str) -> dict[str, int]:
        """Remove the organization's facts from the entry (and from the leads merged into
        it): its names, first touch, user IDs, usernames and sight of the parent user ID,
        with the claims on identifiers nobody else holds; the entry too if nobody else holds
        the lead. Other organizations' facts are left as they are."""
        lead = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        if lead is None:
            return {
                "lead_names": 0,
                "first_touch": 0,
                "user_ids": 0,
                "usernames": 0,
                "parent_user_id": 0,
            }
        absorbed = await self._merged_into(lead_id)
        for pointer in absorbed:  # copies of what the survivor holds, kept as pointers
            await self._pull_org_facts(org_id, pointer)
            await self._clear_first_touch(org_id, pointer["_id"])
        names, user_ids, usernames, parent = await self._pull_org_facts(org_id, lead)
        cleared = await self._clear_first_touch(org_id, lead_id)
        await self._release_claims(lead_id, user_ids, parent)
        if not await self._held_elsewhere(org_id, lead_id):
            # Only an entry with nobody's names and no first touch left is deleted.
            deleted = await with_retry(
                lambda: self._leads.delete_one(
                    {
                        "_id": lead_id,
                        "first_touch": None,
                        "$or": [{"names": {"$size": 0}}, {"names": {"$exists": False}}],
                    }
                )
            )
            if deleted.deleted_count:
                restored = await self._restore_if_claimed(org_id, lead_id, lead)
                if not restored:
                    await self._forget(lead_id, [p["_id"] for p in absorbed])
            log.info(
                "lead erased for an organization",
                lead_id=lead_id,
                org_id=org_id,
                registry_entry="deleted" if deleted.deleted_count else "kept",
            )
        else:
            log.info(
                "lead erased for an organization",
                lead_id=lead_id,
                org_id=org_id,
                registry_entry="kept",
            )
        return {
            "lead_names": len(names),
            "first_touch": cleared,
            "user_ids": len(user_ids),
            "usernames": len(usernames),
            "parent_user_id": int(org_id in (lead.get("parent_seen_by") or [])),
        }

    async def _merged_into(self, lead_id: str) -> list[Document]:
        """The leads merged into this one, directly or through other merged leads."""
        found: dict[str, Document] = {}
        targets = [lead_id]
        while targets:
            docs = await self._all(self._leads, {"merged_into": {"$in": targets}})
            targets = [d["_id"] for d in docs if d["_id"] not in found]
            found |= {d["_id"]: d for d in docs}
        return list(found.values())

    async def _clear_first_touch(self, org_id: str, lead_id: str) -> int:
        """Forget the first touch if it came through the organization; 1 if it did."""
        cleared = await with_retry(
            lambda: self._leads.update_one(
                {"_id": lead_id, "first_touch.org_id": org_id}, {"$set": {"first_touch": None}}
            )
        )
        return int(cleared.modified_count)

    async def _pull_org_facts(
        self, org_id: str, lead: Document
    ) -> tuple[list[Document], list[Document], list[Document], str | None]:
        """Remove the organization's names, user IDs, usernames and sight of the parent user
        ID from one stored lead; what was removed: names, user IDs, usernames, and the parent
        user ID if the lead no longer has it (nobody else saw it)."""
        lead_id = lead["_id"]
        removed: dict[str, list[Document]] = {}
        for name in ("names", "user_ids", "usernames"):
            mine = [e for e in lead.get(name) or [] if e.get("org_id") == org_id]
            removed[name] = mine
            for entry in mine:  # element by element: a concurrent push of another's stays
                await with_retry(
                    partial(self._leads.update_one, {"_id": lead_id}, {"$pull": {name: entry}})
                )
        released = None
        if org_id in (lead.get("parent_seen_by") or []):
            await with_retry(
                partial(
                    self._leads.update_one,
                    {"_id": lead_id},
                    {"$pull": {"parent_seen_by": org_id}},
                )
            )
            unset = await with_retry(
                partial(
                    self._leads.update_one,
                    {"_id": lead_id, "parent_seen_by": {"$size": 0}},
                    {"$set": {"parent_user_id": None}},
                )
            )
            if unset.modified_count:
                released = lead.get("parent_user_id")
        return removed["names"], removed["user_ids"], removed["usernames"], released

    async def _release_claims(
        self, lead_id: str, user_ids: list[Document], parent: str | None
    ) -> None:
        """Drop the lead's claims on the user IDs (and the parent user ID) it no longer
        holds, so that they name nobody rather than an erased person."""
        lead = await with_retry(lambda: self._leads.find_one({"_id": lead_id})) or {}
        kept = {(e.get("portfolio"), e.get("user_id")) for e in lead.get("user_ids") or []}
        keys = {
            user_id_key(str(e["portfolio"]), str(e["user_id"]))
            for e in user_ids
            if (e.get("portfolio"), e.get("user_id")) not in kept
        }
        if parent:
            keys.add(parent_key(parent))
        for key in sorted(keys):
            await with_retry(partial(self._lead_keys.delete_one, {"_id": key, "lead_id": lead_id}))

    async def _forget(self, lead_id: str, absorbed_ids: list[str]) -> None:
        """The entry is gone: so are its remaining claims and the leads merged into it."""
        await with_retry(lambda: self._lead_keys.delete_many({"lead_id": lead_id}))
        if absorbed_ids:
            await with_retry(lambda: self._leads.delete_many({"_id": {"$in": absorbed_ids}}))

    async def _held_elsewhere(self, org_id: str, lead_id: str) -> bool:
        """True when another organization holds the lead (its records or registry facts)."""
        lead = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        if lead is not None:
            first_touch = lead.get("first_touch") or {}
            if first_touch.get("org_id") not in (None, org_id):
                return True
            entries = [
                *(lead.get("names") or []),
                *(lead.get("user_ids") or []),
                *(lead.get("usernames") or []),
            ]
            if any(entry.get("org_id") != org_id for entry in entries):
                return True
            if any(seen != org_id for seen in lead.get("parent_seen_by") or []):
                return True
        query = {"lead_id": lead_id, "org_id": {"$ne": org_id}}
        for collection in (self._threads, self._consent_events, self._consents, self._imports):
            if await with_retry(partial(collection.find_one, query, {"_id": 1})):
                return True
        return False

    async def _restore_if_claimed(self, org_id: str, lead_id: str, lead: Document) -> bool:
        """Put the entry back (without this organization's facts) if another organization
        started a thread with the lead while it was being deleted; whether it did."""
        if not await self._held_elsewhere(org_id, lead_id):
            return False

        def others(field: str) -> list[Document]:
            return [e for e in lead.get(field) or [] if e.get("org_id") != org_id]

        parent_seen_by = [o for o in lead.get("parent_seen_by") or [] if o != org_id]
        restored = {
            **lead,
            "names": others("names"),
            "user_ids": others("user_ids"),
            "usernames": others("usernames"),
            "parent_seen_by": parent_seen_by,
            "parent_user_id": lead.get("parent_user_id") if parent_seen_by else None,
            "first_touch": None
            if (lead.get("first_touch") or {}).get("org_id") == org_id
            else lead.get("first_touch"),
        }
        try:
            await with_retry(lambda: self._leads.insert_one(restored))
        except DuplicateKeyError:
            log.warning("erased lead's number was registered again meanwhile", lead_id=lead_id)
        else:
            log.warning(
                "lead registry entry restored: another organization claimed it", lead_id=lead_id
            )
        return True
