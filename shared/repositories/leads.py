"""The global lead registry: one lead per person, known by phone, by BSUID, or both.

A lead has at most one phone number (unique), any number of business-scoped user IDs, each
unique within its business portfolio, an optional parent BSUID (unique) and the usernames
seen (display only). Identifiers other than the phone are claimed in `lead_keys`, whose
`_id` is the identifier, so two replicas seeing a new person at once agree on one lead. When
identifiers show that two leads are one person, they are merged (`shared.repositories.
lead_merges`): the lead that gives way stays as a pointer (`merged_into`) to the other.

Every read answers a typed `LeadRecord`; what one organization may see of a lead (only what
came through it) is a `LeadView`, never the whole record.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo.errors import DuplicateKeyError

from shared.identity import WhatsAppUser
from shared.ids import new_id
from shared.logs import get_logger
from shared.metrics import LEADS
from shared.repositories.lead_merges import LeadMerges
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, insert_if_absent, with_retry

log = get_logger(__name__)

# How many merge pointers a lookup follows before it gives up (a cycle is a bug).
MAX_POINTERS = 8
_CHUNK = 500  # ids per `$in` query


def user_id_key(portfolio: str, user_id: str) -> str:
    """The claim of a BSUID in `lead_keys`: unique within its business portfolio."""
    return f"bsuid:{portfolio}:{user_id}"


def parent_key(parent_user_id: str) -> str:
    """The claim of a parent BSUID in `lead_keys`: unique across linked portfolios."""
    return f"parent:{parent_user_id}"


class LeadName(BaseModel):
    """A name the lead used with one organization, and when it was first seen."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    org_id: str | None = None
    at: datetime | None = None


class LeadUserId(BaseModel):
    """A business-scoped user ID of the lead, the portfolio it belongs to and the
    organization whose agent saw it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    portfolio: str
    user_id: str
    org_id: str | None = None


class LeadUsername(BaseModel):
    """A username the lead showed an organization (display only: it can change)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    username: str
    org_id: str | None = None


class LeadRecord(StoredRecord):
    """A lead as stored: their identifiers, the names each organization saw (oldest first)
    and how they first came to the platform."""

    model_config = ConfigDict(frozen=True)

    phone: str | None = None
    user_ids: tuple[LeadUserId, ...] = ()
    parent_user_id: str | None = None
    parent_seen_by: tuple[str, ...] = ()  # organizations that saw the parent BSUID
    usernames: tuple[LeadUsername, ...] = ()
    names: tuple[LeadName, ...] = ()
    first_touch: dict[str, Any] | None = None  # org_id, agent_id, at, source ...
    # The first touches of the leads merged into this one, so each organization keeps its own.
    first_touches: tuple[dict[str, Any], ...] = ()
    created_at: datetime | None = None
    merged_into: str | None = None  # set when this lead turned out to be another one
    merge_complete: bool = False

    @property
    def address(self) -> str:
        """Where a reply goes: the number when known, else the newest BSUID."""
        if self.phone:
            return self.phone
        if self.user_ids:
            return self.user_ids[-1].user_id
        return self.parent_user_id or ""

    def address_for(self, portfolio: str) -> str:
        """Where an agent of `portfolio` replies: the number, else that portfolio's BSUID,
        else the parent BSUID shared by linked portfolios."""
        if self.phone:
            return self.phone
        for entry in reversed(self.user_ids):
            if entry.portfolio == portfolio:
                return entry.user_id
        return self.parent_user_id or self.address

    def names_in(self, org_id: str) -> list[str]:
        """The names this organization saw, oldest first (never a name another one saw)."""
        return [n.name for n in self.names if n.org_id == org_id]

    def view_for(self, org_id: str) -> LeadView:
        """What this organization may see of the lead: only what came through it."""
        usernames = [u.username for u in self.usernames if u.org_id == org_id]
        return LeadView(
            lead_id=self.id,
            phone=self.phone,
            username=usernames[-1] if usernames else None,
            usernames=tuple(usernames),
            user_ids=tuple(
                {"business_portfolio_id": u.portfolio, "user_id": u.user_id}
                for u in self.user_ids
                if u.org_id == org_id
            ),
            parent_user_id=self.parent_user_id if org_id in self.parent_seen_by else None,
            names=tuple(self.names_in(org_id)),
            first_touch=self.first_touch_of(org_id),
        )

    def first_touch_of(self, org_id: str) -> dict[str, Any] | None:
        """How the lead first came to this organization, if through it (the earliest of the
        leads merged into this one): never another organization's."""
        own = [
            touch
            for touch in (self.first_touch, *self.first_touches)
            if touch and touch.get("org_id") == org_id
        ]
        return min(own, key=lambda touch: str(touch.get("at") or "")) if own else None


@dataclass(frozen=True)
class LeadView:
    """A lead as one organization sees it (the admin API's lead)."""

    lead_id: str
    phone: str | None  # None while WhatsApp withholds the number
    username: str | None
    usernames: tuple[str, ...]
    user_ids: tuple[dict[str, str], ...]  # business_portfolio_id, user_id
    parent_user_id: str | None
    names: tuple[str, ...]  # the names this organization saw, oldest first
    first_touch: dict[str, Any] | None  # None when the lead came through another organization

    def address_for(self, portfolio: str) -> str:
        """Where an agent of `portfolio` writes to the lead: the number, else its BSUID there."""
        if self.phone:
            return self.phone
        for entry in reversed(self.user_ids):
            if entry["business_portfolio_id"] == portfolio:
                return entry["user_id"]
        if self.parent_user_id:
            return self.parent_user_id
        return self.user_ids[-1]["user_id"] if self.user_ids else ""

    def as_json(self) -> dict[str, Any]:
        """The view as the admin API shows it."""
        return {
            "lead_id": self.lead_id,
            "phone": self.phone,
            "names": list(self.names),
            "first_touch": self.first_touch,
            "username": self.username,
            "usernames": list(self.usernames),
            "user_ids": [dict(entry) for entry in self.user_ids],
            "parent_user_id": self.parent_user_id,
        }


@dataclass(frozen=True)
class Sighting:
    """Who saw a lead, when, and how they came: what a lookup records with the identifiers."""

    org_id: str
    agent_id: str
    portfolio: str
    at: datetime
    name: str | None = None
    source: dict[str, Any] | None = None


class LeadRepository:
    """Find-or-create leads by any identifier, safe when many replicas see a new person at
    once, merging leads the identifiers prove to be one person."""

    def __init__(self, store: Store) -> None:
        self._leads = store.db["leads"]
        self._keys = store.db["lead_keys"]
        self._merges = LeadMerges(store)

    async def view_for_org(self, org_id: str, lead_id: str) -> LeadView | None:
        """The lead as one organization may see it: only what came through it."""
        lead = await self.get(lead_id)
        return None if lead is None else lead.view_for(org_id)

    async def views_for_org(self, org_id: str, lead_ids: list[str]) -> dict[str, LeadView]:
        """Many leads as one organization may see them, by the ids asked for (a merged id
        answers its survivor's view); ids of no lead are left out."""
        views: dict[str, LeadView] = {}
        wanted = sorted(set(lead_ids))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            docs = await self._find({"_id": {"$in": chunk}})
            for doc in docs:
                if doc.get("merged_into"):
                    record = await self._current(str(doc["_id"]))
                else:
                    record = LeadRecord.model_validate(doc)
                if record is not None:
                    views[str(doc["_id"])] = record.view_for(org_id)
        return views

    async def ids_seen_by(
        self,
        org_id: str,
        *,
        phone: str | None = None,
        user_id: str | None = None,
        username: str | None = None,
    ) -> list[str]:
        """The leads (merges followed) that have every identifier given, in id order: a
        phone (E.164), or a user ID or username as this organization saw them; never an
        identifier another organization saw. The caller still scopes them to its threads."""
        found: set[str] | None = None

        def narrow(ids: set[str]) -> None:
            nonlocal found
            found = ids if found is None else found & ids

        if phone is not None:
            owner = await self.id_by_phone(phone)
            narrow({owner} if owner else set())
        if user_id is not None:
            docs = await self._find(
                {"$or": [{"user_ids.user_id": user_id}, {"parent_user_id": user_id}]}
            )
            narrow(
                {
                    await self._follow(doc)
                    for doc in docs
                    if _saw_user_id(LeadRecord.model_validate(doc), org_id, user_id)
                }
            )
        if username is not None:
            docs = await self._find({"usernames.username": username})
            narrow(
                {
                    await self._follow(doc)
                    for doc in docs
                    if any(
                        u.username == username and u.org_id == org_id
                        for u in LeadRecord.model_validate(doc).usernames
                    )
                }
            )
        return sorted(found or ())

    async def owners_of(self, user: WhatsAppUser, portfolio: str) -> list[str]:
        """The distinct leads these identifiers already belong to (none is created)."""
        phone_doc = None
        if user.phone:
            phone = user.phone
            phone_doc = await with_retry(lambda: self._leads.find_one({"phone": phone}))
        found = await self._owners(phone_doc, self._claims(user, portfolio))
        return [str(doc["_id"]) for doc in found]

    async def carry_user_ids(
        self,
        lead_ids: list[str],
        *,
        org_id: str,
        agent_id: str,
        old_portfolio: str,
        new_portfolio: str,
        at: datetime,
    ) -> int:
        """An agent moved to another business portfolio: the user IDs these leads have in
        the old one, as the organization saw them, are claimed in the new one too (merging
        with a lead the new portfolio already knows by one). Answers how many were claimed."""
        carried = 0
        for start in range(0, len(lead_ids), _CHUNK):
            chunk = lead_ids[start : start + _CHUNK]
            query = {"_id": {"$in": chunk}, "user_ids.portfolio": old_portfolio}
            docs = await self._find(query)
            for doc in docs:
                record = LeadRecord.model_validate(doc)
                seen = Sighting(org_id=org_id, agent_id=agent_id, portfolio=new_portfolio, at=at)
                lead_id = record.id
                for entry in record.user_ids:
                    if entry.portfolio != old_portfolio or entry.org_id != org_id:
                        continue
                    user = WhatsAppUser(user_id=entry.user_id)
                    lead_id = await self._attach(
                        lead_id, user, self._claims(user, new_portfolio), seen
                    )
                    carried += 1
        if carried:
            log.info(
                "user ids carried to a new portfolio",
                agent_id=agent_id,
                org_id=org_id,
                user_ids=carried,
            )
        return carried

    async def resolve(self, user: WhatsAppUser, seen: Sighting) -> tuple[LeadRecord, bool]:
        """The lead these identifiers name and whether this call created it (with its first
        touch). Identifiers and a name not seen before are added; identifiers that belong to
        another lead merge the two."""
        keys = self._claims(user, seen.portfolio)
        phone_doc: Document | None = None
        if user.phone:
            # The usual case: a known number whose lead already holds everything this
            # sighting brings is answered from that one read.
            phone = user.phone
            phone_doc = await with_retry(lambda: self._leads.find_one({"phone": phone}))
            if phone_doc is not None and not phone_doc.get("merged_into"):
                known = LeadRecord.model_validate(phone_doc)
                if _holds(known, user, seen):
                    return known, False
        found = await self._owners(phone_doc, keys)
        if len(found) == 1 and _holds(LeadRecord.model_validate(found[0]), user, seen):
            return LeadRecord.model_validate(found[0]), False
        owners = [str(doc["_id"]) for doc in found]
        created = False
        if not owners:
            lead_id, created = await self._create(user, keys, seen)
        else:
            lead_id = owners[0]
            for other in owners[1:]:
                lead_id = await self._merges.merge(lead_id, other)
        lead_id = await self._attach(lead_id, user, keys, seen)
        record = await self._current(lead_id)
        if record is None:  # merged away while we looked: the survivor has everything
            raise LookupError(f"lead {lead_id} vanished during a lookup")
        return record, created

    async def get(self, lead_id: str) -> LeadRecord | None:
        """The lead with this id (following merges), with every name organizations saw
        (filter with `view_for`)."""
        return await self._current(lead_id)

    async def id_by_phone(self, phone: str) -> str | None:
        """The id of the lead with this E.164 number, if any (none is created)."""
        found = await with_retry(lambda: self._leads.find_one({"phone": phone}))
        if found is None:
            return None
        return await self._follow(found)

    async def id_by_address(self, portfolio: str, address: str) -> str | None:
        """The lead a send address names: a number, a BSUID of `portfolio` or a parent."""
        if address.startswith("+"):
            return await self.id_by_phone(address)
        for key in (user_id_key(portfolio, address), parent_key(address)):
            claim = await with_retry(partial(self._keys.find_one, {"_id": key}))
            if claim is not None:
                return await self._follow_id(str(claim["lead_id"]))
        return None

    async def change_phone(self, lead_id: str, old: str | None, new: str) -> LeadRecord:
        """The lead changed number: the new one replaces the old (kept as a former number);
        if another lead already had the new number, the two are one person."""
        survivor = await self._follow_id(lead_id)
        with contextlib.suppress(DuplicateKeyError):
            await with_retry(
                partial(
                    self._leads.update_one,
                    {"_id": survivor, "phone": old},
                    {"$set": {"phone": new}, "$addToSet": {"former_phones": old}},
                )
            )
        survivor = await self._attach_phone(survivor, new)
        record = await self._current(survivor)
        if record is None:
            raise LookupError(f"lead {survivor} vanished")
        return record

    async def add_shared_phone(self, lead_id: str, phone: str, seen: Sighting) -> LeadRecord:
        """The lead shared their own number with an agent: it becomes the lead's number (the
        purpose recorded), merging with the lead that already had it."""
        survivor = await self._attach_phone(lead_id, phone)
        shared = {
            "how": "shared-contact",
            "purpose": "to let the agent call about the lead's enquiry",
            "org_id": seen.org_id,
            "agent_id": seen.agent_id,
            "at": seen.at,
        }
        await with_retry(
            lambda: self._leads.update_one(
                {"_id": survivor, "phone": phone, "phone_shared": None},
                {"$set": {"phone_shared": shared}},
            )
        )
        record = await self._current(survivor)
        if record is None:
            raise LookupError(f"lead {survivor} vanished")
        return record

    # --- internals -----------------------------------------------------------------------

    async def _find(self, query: Document) -> list[Document]:
        return await with_retry(lambda: self._leads.find(query).to_list(None))

    @staticmethod
    def _claims(user: WhatsAppUser, portfolio: str) -> list[str]:
        keys = []
        if user.user_id:
            keys.append(user_id_key(portfolio, user.user_id))
        if user.parent_user_id:
            keys.append(parent_key(user.parent_user_id))
        return keys

    async def _owners(self, phone_doc: Document | None, keys: list[str]) -> list[Document]:
        """The distinct leads (as stored, merges followed) the identifiers already belong
        to: the phone's owner (`phone_doc`, as read) first, then the claims' owners."""
        owners: list[Document] = []
        if phone_doc is not None:
            owners.append(await self._latest(phone_doc))
        if keys:
            cursor = self._keys.find({"_id": {"$in": keys}})
            claims = await with_retry(lambda: cursor.to_list(None))
            for claim in sorted(claims, key=lambda c: keys.index(c["_id"])):
                claimed = await with_retry(
                    partial(self._leads.find_one, {"_id": str(claim["lead_id"])})
                )
                if claimed is None:  # its claimant died before inserting it: a merge target
                    claimed = {"_id": str(claim["lead_id"])}
                owner = await self._latest(claimed)
                if all(owner["_id"] != other["_id"] for other in owners):
                    owners.append(owner)
        return owners

    async def _create(
        self, user: WhatsAppUser, keys: list[str], seen: Sighting
    ) -> tuple[str, bool]:
        """A new lead for identifiers nobody holds yet; the first to claim them wins."""
        lead_id = new_id("lead")
        doc: Document = {
            "_id": lead_id,
            "names": [{"name": seen.name, "org_id": seen.org_id, "at": seen.at}]
            if seen.name
            else [],
            "user_ids": [],
            "usernames": [],
            "first_touch": {
                "org_id": seen.org_id,
                "agent_id": seen.agent_id,
                "at": seen.at,
                **(seen.source or {}),
            },
            "created_at": seen.at,
        }
        if user.phone:
            doc["phone"] = user.phone
            existing = await insert_if_absent(self._leads, doc, {"phone": user.phone})
            if existing is not None:
                return await self._follow(existing), False
        else:
            owner = await self._claim(keys[0], lead_id, seen.at)
            # The winner inserts the lead; a winner that died before doing so is covered by
            # whoever finds its claim next.
            doc["_id"] = owner
            existing = await insert_if_absent(self._leads, doc, {"_id": owner})
            if existing is not None or owner != lead_id:
                return (await self._follow(existing) if existing else owner), False
        LEADS.labels("created").inc()
        return str(doc["_id"]), True

    async def _claim(self, key: str, lead_id: str, at: datetime) -> str:
        """The lead that holds `key`: `lead_id` if this call claimed it first."""
        claim = {"_id": key, "lead_id": lead_id, "at": at}
        existing = await insert_if_absent(self._keys, claim, {"_id": key})
        return lead_id if existing is None else await self._follow_id(str(existing["lead_id"]))

    async def _attach(
        self, lead_id: str, user: WhatsAppUser, keys: list[str], seen: Sighting
    ) -> str:
        """Add the identifiers and name this sighting brings; merge where one is taken."""
        for key in keys:
            owner = await self._claim(key, lead_id, seen.at)
            if owner != lead_id:
                lead_id = await self._merges.merge(lead_id, owner)
        if user.phone:
            lead_id = await self._attach_phone(lead_id, user.phone)
        current = await self._current(lead_id)
        if current is None:
            return lead_id
        additions = _additions(current, user, seen)
        update: Document = {}
        if additions:
            update["$addToSet"] = additions
        if user.parent_user_id and current.parent_user_id is None:
            update["$set"] = {"parent_user_id": user.parent_user_id}
        if update:
            await with_retry(lambda: self._leads.update_one({"_id": lead_id}, update))
        return lead_id

    async def _attach_phone(self, lead_id: str, phone: str) -> str:
        """Give a number-less lead its number; if another lead has it, the two are one."""
        with contextlib.suppress(DuplicateKeyError):
            await with_retry(
                lambda: self._leads.update_one(
                    {"_id": lead_id, "phone": None}, {"$set": {"phone": phone}}
                )
            )
        owner_doc = await with_retry(lambda: self._leads.find_one({"phone": phone}))
        if owner_doc is None:
            return lead_id
        owner = await self._follow(owner_doc)
        return lead_id if owner == lead_id else await self._merges.merge(lead_id, owner)

    async def _current(self, lead_id: str) -> LeadRecord | None:
        """The lead itself, or the one it was merged into (one read unless it was merged)."""
        doc = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        if doc is None:
            return None
        latest = await self._latest(doc)
        if set(latest) == {"_id"}:  # merged into a lead not stored (yet)
            return None
        return LeadRecord.model_validate(latest)

    async def _follow_id(self, lead_id: str) -> str:
        doc = await with_retry(lambda: self._leads.find_one({"_id": lead_id}))
        return lead_id if doc is None else await self._follow(doc)

    async def _follow(self, doc: Document) -> str:
        """The id of the lead `doc` is, or was merged into; an unfinished merge is finished."""
        return str((await self._latest(doc))["_id"])

    async def _latest(self, doc: Document) -> Document:
        """The lead `doc` is, or was merged into, as stored; an unfinished merge is finished."""
        for _ in range(MAX_POINTERS):
            target = doc.get("merged_into")
            if not target:
                return doc
            if not doc.get("merge_complete"):
                await self._merges.complete(str(doc["_id"]), str(target))
            found = await with_retry(partial(self._leads.find_one, {"_id": target}))
            if found is None:
                return {"_id": str(target)}
            doc = found
        raise RuntimeError(f"lead {doc['_id']}: more than {MAX_POINTERS} merge pointers")


def _saw_user_id(record: LeadRecord, org_id: str, user_id: str) -> bool:
    """Whether the organization saw this user ID (or parent user ID) of the lead."""
    if record.parent_user_id == user_id and org_id in record.parent_seen_by:
        return True
    return any(u.user_id == user_id and u.org_id == org_id for u in record.user_ids)


def _additions(lead: LeadRecord, user: WhatsAppUser, seen: Sighting) -> dict[str, Any]:
    """What this sighting brings that the lead does not hold yet, as `$addToSet` entries:
    the user ID in its portfolio, the username, sight of the parent BSUID, the name."""
    wanted: dict[str, Any] = {}
    if user.user_id:
        wanted["user_ids"] = LeadUserId(
            portfolio=seen.portfolio, user_id=user.user_id, org_id=seen.org_id
        )
    if user.username:
        wanted["usernames"] = LeadUsername(username=user.username, org_id=seen.org_id)
    held: dict[str, tuple[Any, ...]] = {"user_ids": lead.user_ids, "usernames": lead.usernames}
    additions = {
        field: value.model_dump() for field, value in wanted.items() if value not in held[field]
    }
    if user.parent_user_id and seen.org_id not in lead.parent_seen_by:
        additions["parent_seen_by"] = seen.org_id
    if seen.name and not any(n.name == seen.name and n.org_id == seen.org_id for n in lead.names):
        additions["names"] = {"name": seen.name, "org_id": seen.org_id, "at": seen.at}
    return additions


def _holds(lead: LeadRecord, user: WhatsAppUser, seen: Sighting) -> bool:
    """Whether the lead already holds every identifier and name of this sighting (whose user
    ID, once held, was claimed for it: nothing to add, nothing to merge)."""
    if user.phone and lead.phone != user.phone:
        return False
    if user.parent_user_id and lead.parent_user_id != user.parent_user_id:
        return False
    return not _additions(lead, user, seen)
