"""Agents: their WhatsApp number, Gupshup app, encrypted credentials and persona."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.crypto import KeyRing, hash_token, new_token
from shared.ids import new_id
from shared.logs import get_logger
from shared.models import AgentChanged, utcnow
from shared.quiet_hours import QuietHours
from shared.repositories.record import StoredRecord
from shared.settings import Settings
from shared.store import Store, is_duplicate, with_retry

log = get_logger(__name__)

CREDENTIAL_FIELDS = ("gupshup_api_key", "partner_app_token", "app_secret")
# What the admin API never shows of an agent (its id is shown as `agent_id`).
HIDDEN_FIELDS = frozenset({"credentials", "callback_key_hash", "id"})


class Persona(BaseModel):
    """How the bot speaks for the agent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    bot_name: str = Field(default="Ava", min_length=1, max_length=40)
    tone: Literal["friendly", "professional", "casual"] = "friendly"
    language: str = Field(default="en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    # Other languages the bot may answer in when the lead writes in them (e.g. "zh", "ms").
    languages: list[str] = Field(default_factory=list, max_length=10)
    greeting: str | None = Field(default=None, max_length=300)
    signature: str | None = Field(default=None, max_length=100)
    instructions: str | None = Field(default=None, max_length=2000)


class WorkingPeriod(BaseModel):
    """A period of a weekday in which the agent takes consultations (agent's time zone)."""

    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: str  # HH:MM
    end: str


DEFAULT_HOURS = tuple(
    WorkingPeriod(day=day, start="09:00", end="18:00")
    for day in ("mon", "tue", "wed", "thu", "fri")
)


class Agent(StoredRecord):
    """An agent as the services see it (credentials stay sealed until used)."""

    org_id: str
    name: str
    number: str  # E.164
    gupshup_app: str
    gupshup_app_id: str | None = None
    # The Meta business portfolio the agent's WhatsApp number belongs to: a lead's
    # business-scoped user ID is the same for every agent of one portfolio. Unset: the agent
    # is a portfolio of its own.
    business_portfolio_id: str | None = Field(
        default=None,
        description="Meta business portfolio of the agent's number: its agents share each "
        "lead's business-scoped user ID (null: the agent is a portfolio of its own)",
    )
    # Whether Gupshup was told to put business-scoped user IDs in the app's webhooks, and
    # why not when it was not (tried at onboarding, again on updates until it works).
    bsuid_enabled: bool = Field(
        default=False,
        description="Gupshup sends the app's webhooks with business-scoped user IDs",
    )
    bsuid_reason: str | None = Field(
        default=None, description="Why BSUIDs are not enabled yet (null once they are)"
    )
    bsuid_checked_at: datetime | None = Field(
        default=None, description="When enabling BSUIDs at Gupshup was last tried"
    )
    callback_key_hash: str
    credentials: dict[str, dict[str, str]] = Field(default_factory=dict)
    persona: Persona = Field(default_factory=Persona)
    rate_per_second: float = 20.0
    # Unique leads reachable by business-initiated messages in a rolling 24 h (0: unlimited).
    messaging_tier: int = 250
    notify_number: str | None = None
    timezone: str = "Asia/Singapore"
    working_hours: list[WorkingPeriod] = Field(default_factory=lambda: list(DEFAULT_HOURS))
    # How long a consultation or viewing with the agent lasts, in minutes.
    slot_minutes: int = Field(default=30, ge=15, le=240)
    # The agent's own quiet hours (None: the organization's).
    quiet_hours: QuietHours | None = None
    # An APPROVED template (no parameters, or one: the lead's name) that replaces a reply
    # when WhatsApp's 24-hour window closed before it could be sent.
    fallback_template_id: str | None = None
    # An APPROVED template (no parameters, or one: the lead's name) that tells the agent on
    # `notify_number` that a lead wants them, when that number has no open window.
    handoff_template_id: str | None = None
    # An APPROVED template (no parameters, or one: the lead's name) sent as a follow-up to a
    # lead who went quiet when WhatsApp's window has closed.
    follow_up_template_id: str | None = None
    # An APPROVED template (up to two parameters: the lead's name, then the appointment's time)
    # sent as an appointment reminder when WhatsApp's window has closed.
    reminder_template_id: str | None = None
    status: Literal["active", "suspended"] = "active"
    created_at: datetime

    @property
    def active(self) -> bool:
        """True unless the agent is suspended."""
        return self.status == "active"

    @property
    def portfolio(self) -> str:
        """The scope of the user IDs its leads arrive with (its own when no portfolio is set)."""
        return self.business_portfolio_id or f"agent:{self.id}"

    def public(self) -> dict[str, object]:
        """What the admin API shows of an agent: never credentials or the callback key."""
        shown = self.model_dump(mode="json", exclude=set(HIDDEN_FIELDS))
        return {"agent_id": self.id, **shown, "credentials_set": sorted(self.credentials)}


def public_agent_model(name: str = "Agent", **extra: Any) -> type[BaseModel]:
    """A model of `Agent.public()` (plus `extra` fields, as pydantic field definitions) that
    describes the admin API's agent: made from Agent's own fields, so it follows them."""
    fields: dict[str, Any] = {
        field: (info.annotation, info)
        for field, info in Agent.model_fields.items()
        if field not in HIDDEN_FIELDS
    }
    shown: type[BaseModel] = create_model(
        name,
        agent_id=(str, ...),
        **fields,
        credentials_set=(
            list[str],
            Field(description="Which credentials are stored (never their values)"),
        ),
        **extra,
    )
    return shown


class AgentConflict(Exception):
    """Another agent already holds a number or Gupshup app that must be unique."""


class AgentNumberTaken(AgentConflict):
    """Another agent already has that WhatsApp number."""


class AgentAppTaken(AgentConflict):
    """Another agent already uses that Gupshup app (name or id)."""


class AgentRepository:
    """Create and read agents."""

    def __init__(self, store: Store, key_ring: KeyRing | None = None) -> None:
        self._agents = store.db["agents"]
        self._key_ring = key_ring

    async def create(
        self,
        *,
        org_id: str,
        name: str,
        number: str,
        gupshup_app: str,
        gupshup_api_key: str,
        gupshup_app_id: str | None = None,
        business_portfolio_id: str | None = None,
        persona: Persona | None = None,
        rate_per_second: float = 20.0,
        notify_number: str | None = None,
        timezone: str = "Asia/Singapore",
        extra_credentials: dict[str, str] | None = None,
    ) -> tuple[Agent, str]:
        """Create an agent; return it and its callback key (shown once, stored hashed)."""
        if self._key_ring is None:
            raise RuntimeError("creating an agent needs the credentials key ring")
        agent_id = new_id("agt")
        callback_key = new_token("cbk")
        agent = Agent(
            id=agent_id,
            org_id=org_id,
            name=name,
            number=number,
            gupshup_app=gupshup_app,
            gupshup_app_id=gupshup_app_id,
            business_portfolio_id=business_portfolio_id,
            callback_key_hash=hash_token(callback_key),
            credentials={
                name: self._key_ring.encrypt(value, agent_id=agent_id, field=name)
                for name, value in {
                    "gupshup_api_key": gupshup_api_key,
                    **(extra_credentials or {}),
                }.items()
            },
            persona=persona or Persona(),
            rate_per_second=rate_per_second,
            notify_number=notify_number,
            timezone=timezone,
            created_at=utcnow(),
        )
        doc = {**agent.model_dump(by_alias=True), "app_id_claim": gupshup_app_id or f"-{agent_id}"}
        try:
            await with_retry(lambda: self._agents.insert_one(doc))
        except Exception as exc:
            if is_duplicate(exc):
                raise await self._clash(agent_id, number, gupshup_app, gupshup_app_id) from None
            raise
        return agent, callback_key

    async def _clash(
        self, agent_id: str, number: str | None, app: str | None, app_id: str | None
    ) -> AgentConflict:
        """Which unique field another agent holds already."""
        checks = (
            ("number", number, AgentNumberTaken, "number"),
            ("gupshup_app", app, AgentAppTaken, "Gupshup app"),
            ("app_id_claim", app_id, AgentAppTaken, "Gupshup app id"),
        )
        for field, value, error, label in checks:
            if value and await self._agents.find_one({field: value, "_id": {"$ne": agent_id}}):
                return error(f"that {label} belongs to another agent")
        return AgentConflict("another agent has the same number or Gupshup app")

    async def update(
        self, org_id: str, agent_id: str, fields: dict[str, object]
    ) -> tuple[Agent, Agent] | None:
        """Change an agent's settings; (before, after), or None when the org has no such agent."""
        before = await self.get_in_org(org_id, agent_id)
        if before is None:
            return None
        if "gupshup_app_id" in fields:
            fields = {**fields, "app_id_claim": fields["gupshup_app_id"] or f"-{agent_id}"}
        if fields:
            try:
                await with_retry(
                    lambda: self._agents.update_one(
                        {"_id": agent_id, "org_id": org_id}, {"$set": fields}
                    )
                )
            except Exception as exc:
                if is_duplicate(exc):
                    text = {k: v for k, v in fields.items() if isinstance(v, str)}
                    raise await self._clash(
                        agent_id,
                        text.get("number"),
                        text.get("gupshup_app"),
                        text.get("gupshup_app_id"),
                    ) from None
                raise
        after = await self.get_in_org(org_id, agent_id)
        assert after is not None
        return before, after

    async def record_bsuid(
        self, org_id: str, agent_id: str, *, enabled: bool, reason: str | None, at: datetime
    ) -> Agent | None:
        """Record whether Gupshup sends the agent's webhooks with BSUIDs; the agent after."""
        fields = {"bsuid_enabled": enabled, "bsuid_reason": reason, "bsuid_checked_at": at}
        await with_retry(
            lambda: self._agents.update_one({"_id": agent_id, "org_id": org_id}, {"$set": fields})
        )
        return await self.get_in_org(org_id, agent_id)

    async def set_credentials(self, org_id: str, agent_id: str, secrets: dict[str, str]) -> bool:
        """Encrypt and store credentials (write-only); False when the org has no such agent."""
        if self._key_ring is None:
            raise RuntimeError("storing credentials needs the credentials key ring")
        ring = self._key_ring
        sealed = {
            f"credentials.{name}": ring.encrypt(value, agent_id=agent_id, field=name)
            for name, value in secrets.items()
        }
        result = await with_retry(
            lambda: self._agents.update_one({"_id": agent_id, "org_id": org_id}, {"$set": sealed})
        )
        return result.matched_count == 1

    async def reencrypt_all(self) -> tuple[int, int]:
        """Re-encrypt every credential not under the active key; (agents, credentials) changed.

        Each credential is decrypted with whichever ring key made it, so services holding the
        same ring keep working throughout.
        """
        if self._key_ring is None:
            raise RuntimeError("re-encrypting needs the credentials key ring")
        ring = self._key_ring
        agents = credentials = 0
        async for doc in self._agents.find({}, {"credentials": 1}):
            stale = {
                name: sealed
                for name, sealed in (doc.get("credentials") or {}).items()
                if sealed.get("kid") != ring.active_id
            }
            if not stale:
                continue
            fresh = {
                f"credentials.{name}": ring.encrypt(
                    ring.decrypt(sealed, agent_id=doc["_id"], field=name),
                    agent_id=doc["_id"],
                    field=name,
                )
                for name, sealed in stale.items()
            }
            await with_retry(
                lambda f=fresh, i=doc["_id"]: self._agents.update_one(  # type: ignore[misc]
                    {"_id": i}, {"$set": f}
                )
            )
            agents += 1
            credentials += len(stale)
        return agents, credentials

    async def get(self, agent_id: str) -> Agent | None:
        """An agent by id."""
        doc = await with_retry(lambda: self._agents.find_one({"_id": agent_id}))
        return Agent.model_validate(doc) if doc else None

    async def get_in_org(self, org_id: str, agent_id: str) -> Agent | None:
        """An agent by id, only if it belongs to the organization."""
        doc = await with_retry(lambda: self._agents.find_one({"_id": agent_id, "org_id": org_id}))
        return Agent.model_validate(doc) if doc else None

    async def find_by_callback_key(self, callback_key: str) -> Agent | None:
        """The agent whose callback URL carries this key."""
        key_hash = hash_token(callback_key)
        doc = await with_retry(lambda: self._agents.find_one({"callback_key_hash": key_hash}))
        return Agent.model_validate(doc) if doc else None

    async def find_by_number(self, number: str) -> Agent | None:
        """The agent with this E.164 number."""
        doc = await with_retry(lambda: self._agents.find_one({"number": number}))
        return Agent.model_validate(doc) if doc else None

    async def rotate_callback_key(self, org_id: str, agent_id: str) -> str:
        """Issue a new callback key; the old callback URL stops working."""
        callback_key = new_token("cbk")
        result = await with_retry(
            lambda: self._agents.update_one(
                {"_id": agent_id, "org_id": org_id},
                {"$set": {"callback_key_hash": hash_token(callback_key)}},
            )
        )
        if result.matched_count != 1:
            raise LookupError(f"no agent {agent_id} in organization {org_id}")
        return callback_key

    async def list_in_org(self, org_id: str) -> list[Agent]:
        """Every agent of an organization."""
        return [Agent.model_validate(d) async for d in self._agents.find({"org_id": org_id})]


class AgentDirectory:
    """A read-through cache of agents: hits stay for `ttl` seconds, misses for `negative_ttl`.

    Ingress keeps authenticating known agents from it while the store is down, without
    waiting for the store (see `by_callback_key`).
    """

    def __init__(self, repository: AgentRepository, ttl: float, negative_ttl: float) -> None:
        self._repository = repository
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._by_key: dict[str, tuple[float, Agent | None]] = {}
        self._by_id: dict[str, tuple[float, Agent | None]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def for_store(cls, store: Store, settings: Settings) -> AgentDirectory:
        """The directory every service uses, with the configured cache lifetimes."""
        return cls(
            AgentRepository(store),
            settings.agent_cache_seconds,
            settings.agent_negative_cache_seconds,
        )

    def forget(self, change: AgentChanged) -> None:
        """Drop everything cached about an agent (its configuration changed somewhere)."""
        self._by_id.pop(change.agent_id, None)
        for key_hash, (_at, agent) in list(self._by_key.items()):
            if agent is not None and agent.id == change.agent_id:
                del self._by_key[key_hash]

    async def by_callback_key(self, callback_key: str) -> Agent | None:
        """The agent for a callback key (store errors propagate when nothing is cached).

        A known agent whose entry is past its lifetime is answered from the cache at once
        while the entry is refreshed in the background: a webhook never waits for the store,
        which keeps ingress answering through a store outage. Unknown keys are looked up.
        """
        key_hash = hash_token(callback_key)
        entry = self._by_key.get(key_hash)
        if entry is not None and entry[1] is not None:
            if self._fresh(entry) is None:
                self._refresh_in_background(key_hash, callback_key)
            return entry[1]
        if self._fresh(entry) is not None:
            return None
        agent = await self._repository.find_by_callback_key(callback_key)
        self._remember(self._by_key, key_hash, agent)
        return agent

    def _refresh_in_background(self, key_hash: str, callback_key: str) -> None:
        if key_hash in self._refreshing:
            return

        async def refresh() -> None:
            try:
                agent = await self._repository.find_by_callback_key(callback_key)
            except Exception as exc:  # the store is away: keep serving what we know
                log.info("agent lookup failed, cached entry kept", error=str(exc))
            else:
                self._remember(self._by_key, key_hash, agent)
            finally:
                del self._refreshing[key_hash]

        self._refreshing[key_hash] = asyncio.get_running_loop().create_task(refresh())

    async def by_id(self, agent_id: str) -> Agent | None:
        """The agent with this id."""
        cached = self._fresh(self._by_id.get(agent_id))
        if cached is not None:
            return cached[1]
        agent = await self._repository.get(agent_id)
        self._remember(self._by_id, agent_id, agent)
        return agent

    def _fresh(self, entry: tuple[float, Agent | None] | None) -> tuple[float, Agent | None] | None:
        if entry is None:
            return None
        ttl = self._ttl if entry[1] is not None else self._negative_ttl
        return entry if time.monotonic() - entry[0] < ttl else None

    def _remember(
        self, cache: dict[str, tuple[float, Agent | None]], key: str, agent: Agent | None
    ) -> None:
        cache[key] = (time.monotonic(), agent)
