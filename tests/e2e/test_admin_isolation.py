"""Tenant isolation of the admin API and the CLI, over every route the API describes.

The routes come from the running server's `GET /v1/openapi.json`, so an endpoint is checked
as soon as it is registered. What this file needs to know about a route is kept in tables
below (`SAMPLE_BODIES`, `PLATFORM_OPERATIONS`); a route missing from them fails the test by
its operationId instead of slipping by.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cli.local_stack import stack_env
from shared.phones import wa_id
from shared.repositories.appointments import AppointmentRepository
from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply

# Routes that take the platform operator's key; every other authenticated route takes an
# organization's key. A new platform route fails `test_keys_work_only_in_their_own_scope`
# until it is listed here.
PLATFORM_OPERATIONS = frozenset({"create_organization"})


@dataclass(frozen=True)
class Ref:
    """A placeholder in a sample body for an id of the kind `kind` (filled per tenant)."""

    kind: str


@dataclass(frozen=True)
class Raw:
    """A sample body that is not JSON; `{kind}` in its text marks an id of that kind."""

    content_type: str
    text: str
    refs: tuple[str, ...] = ()


def fresh_sg_mobile() -> str:
    """A Singapore mobile number nobody has yet, written nationally."""
    return f"9{1_000_000 + uuid.uuid4().int % 8_000_000:07d}"


# A valid request body for every operation that takes one, by operationId. Each is a
# function of the calling tenant; `Ref(kind)` marks an id carried in the body (it is
# swapped for another organization's id in the isolation sweep, like path parameters).
SAMPLE_BODIES: dict[str, Callable[[Tenant], dict[str, Any] | Raw]] = {
    "create_organization": lambda t: {"name": f"Sample Agency {uuid.uuid4().hex[:8]}"},
    "update_organization": lambda t: {"timezone": "Asia/Singapore"},
    "create_key": lambda t: {"name": "sample key"},
    "create_agent": lambda t: {
        "name": "Sample Agent",
        "number": fresh_sg_mobile(),
        "gupshup_app": f"Sample{uuid.uuid4().hex[:10]}",
        "gupshup_api_key": f"gs-{uuid.uuid4().hex}",
    },
    "update_agent": lambda t: {"name": "Renamed By Sample"},
    "set_persona": lambda t: {"bot_name": "Zed", "tone": "professional"},
    # The agent's real Gupshup key again, so that its sends keep working afterwards.
    "set_credentials": lambda t: {"gupshup_api_key": t.onboarded.api_key},
    "handoff": lambda t: {"note": "sample handoff"},
    "reply": lambda t: {"text": "A sample reply from the agent."},
    "create_template": lambda t: {
        "name": f"sample_{uuid.uuid4().hex[:10]}",
        "category": "UTILITY",
        "body": "Hello {{1}}, your viewing is confirmed.",
        "examples": ["Rachel"],
    },
    "send_template": lambda t: {"template_id": Ref("template_id"), "params": ["Rachel"]},
    "record_conversion": lambda t: {"kind": "booked"},
    "create_listing": lambda t: {
        "project": "Sample Residences",
        "district": "D15 Marine Parade",
        "property_type": "condo",
        "bedrooms": 3,
        "price": 1_500_000,
        "agent_id": Ref("agent_id"),
    },
    "import_listings": lambda t: Raw(
        "text/csv",
        "project,district,property_type,bedrooms,price,agent_id\r\n"
        "Sample Heights,D19 Serangoon,condo,2,980000,{agent_id}\r\n",
        refs=("agent_id",),
    ),
    "update_listing": lambda t: {"price": 1_450_000},
    "import_leads": lambda t: Raw(
        "text/csv",
        f"name,phone,source,agent_id\r\nSample Lead,{fresh_sg_mobile()},sample,{{agent_id}}\r\n",
        refs=("agent_id",),
    ),
    "set_availability": lambda t: {
        "timezone": "Asia/Singapore",
        "working_hours": [{"day": "mon", "start": "09:00", "end": "18:00"}],
        "slot_minutes": 45,
    },
    "cancel_appointment": lambda t: {"reason": "sample cancellation"},
}


class MissingSample(Exception):
    """An operation takes a body and this file has no sample for it."""


class MissingId(Exception):
    """This file cannot make an id of some kind for a tenant."""


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI document."""

    method: str
    path: str
    operation_id: str
    takes_body: bool
    public: bool
    body_fields: frozenset[str]  # of a JSON body
    content_type: str | None  # of the request body

    @property
    def takes_json(self) -> bool:
        """True when the request body is JSON."""
        return self.content_type == "application/json"

    @property
    def name(self) -> str:
        """How failures name the operation."""
        return f"{self.operation_id} ({self.method} {self.path})"

    @property
    def path_params(self) -> list[str]:
        """The path's parameters, in order."""
        return re.findall(r"\{(\w+)\}", self.path)

    def sample(self, tenant: Tenant) -> dict[str, Any] | Raw | None:
        """A valid body for the tenant (with `Ref` placeholders), None when none is taken."""
        if not self.takes_body:
            return None
        make = SAMPLE_BODIES.get(self.operation_id)
        if make is None:
            raise MissingSample(
                f"{self.name}: add a sample body for {self.operation_id!r} to SAMPLE_BODIES "
                f"in {__name__} (its fields: {sorted(self.body_fields)})"
            )
        return make(tenant)

    def id_slots(self, tenant: Tenant) -> list[str]:
        """Every id the operation takes: path parameters, then ids in its sample body."""
        slots = self.path_params
        body = self.sample(tenant)
        slots += [ref.kind for ref in refs_in(body) if ref.kind not in slots]
        return slots


def operations(spec: dict[str, Any]) -> list[Operation]:
    """Every operation of the OpenAPI document, in its order."""
    schemas = spec.get("components", {}).get("schemas", {})
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            fields: frozenset[str] = frozenset()
            content = op.get("requestBody", {}).get("content", {})
            content_type = next(iter(content), None)
            if "$ref" in content.get("application/json", {}).get("schema", {}):
                ref = content["application/json"]["schema"]["$ref"]
                fields = frozenset(schemas[ref.rsplit("/", 1)[1]].get("properties", {}))
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    operation_id=op["operationId"],
                    takes_body="requestBody" in op,
                    public=op.get("security") == [],
                    body_fields=fields,
                    content_type=content_type,
                )
            )
    return found


def refs_in(value: Any) -> Iterator[Ref]:
    """The `Ref` placeholders in a sample body."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Raw):
        yield from (Ref(kind) for kind in value.refs)
    elif isinstance(value, dict):
        for item in value.values():
            yield from refs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs_in(item)


def fill_body(value: Any, ids: dict[str, str]) -> Any:
    """The sample body with its placeholders replaced by ids."""
    if isinstance(value, Ref):
        return ids[value.kind]
    if isinstance(value, Raw):
        text = value.text
        for kind in value.refs:
            text = text.replace("{" + kind + "}", ids[kind])
        return Raw(value.content_type, text)
    if isinstance(value, dict):
        return {k: fill_body(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_body(v, ids) for v in value]
    return value


def fill_path(path: str, ids: dict[str, str]) -> str:
    """The path with its parameters replaced by ids."""
    for kind, value in ids.items():
        path = path.replace("{" + kind + "}", value)
    return path


@dataclass
class Tenant:
    """An organization of the test with an agent, an extra key and a lead conversation."""

    label: str
    onboarded: OnboardedAgent
    key: str  # the organization's first admin key
    extra_key: str
    ids: dict[str, str]  # kind (as in path parameters) -> an id of this organization
    made: dict[str, dict[str, Any]] = field(default_factory=dict)  # what making an id answered
    lead_digits: str = ""
    lead_name: str = ""
    lead_text: str = ""  # what the lead wrote: content that stays in its organization


async def request(
    stack: Stack,
    method: str,
    path: str,
    key: str | None = None,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: Any = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Call the admin API; the status and the JSON answer (the text when it is not JSON)."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if isinstance(body, Raw):
        sent.setdefault("Content-Type", body.content_type)
        body, data = None, body.text.encode()
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    async with stack.http.request(
        method,
        stack.admin_url + path,
        json=body if data is None else None,
        data=data,
        headers=sent,
        params=params,
    ) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def fetch_spec(stack: Stack) -> dict[str, Any]:
    """The admin API's description of itself."""
    status, spec = await request(stack, "GET", "/v1/openapi.json")
    assert status == 200, spec
    return dict(spec)


def creator_of(spec_ops: list[Operation], kind: str, path: str | None) -> Operation | None:
    """The POST operation that makes an id of `kind`: the collection its path names."""
    posts = {op.path: op for op in spec_ops if op.method == "POST"}
    if path is not None and "/{" + kind + "}" in path:
        collection = path[: path.index("/{" + kind + "}")]
        if collection in posts:
            return posts[collection]
    plural = kind.removesuffix("_id") + "s"
    for op in posts.values():
        if op.path.rsplit("/", 1)[1].endswith(plural):
            return op
    return None


async def book_appointment(stack: Stack, tenant: Tenant) -> dict[str, Any]:
    """An appointment of the tenant's agent with its lead, booked as the bot books them (no
    route makes one), at a time of its own a month or more ahead."""
    appointments = AppointmentRepository(stack.store)
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(10):
        quarter = uuid.uuid4().int % (300 * 24 * 4)
        start = base + timedelta(days=30, minutes=15 * quarter)
        booked = await appointments.book(
            tenant.ids["org_id"],
            tenant.ids["agent_id"],
            tenant.ids["lead_id"],
            tenant.ids["thread_id"],
            start,
            start + timedelta(minutes=30),
            f"apt_{uuid.uuid4().hex}",
        )
        if booked is not None:
            return booked.public(str(stack.settings.public_base_url))
    raise MissingId(f"no free time to book an appointment for {tenant.label}")


# Ids that no route makes: how to make one for a tenant (answering like a creating route).
MADE_IN_STORE: dict[str, Callable[[Stack, Tenant], Awaitable[dict[str, Any]]]] = {
    "appointment_id": book_appointment,
}


async def id_of(
    stack: Stack, spec_ops: list[Operation], tenant: Tenant, kind: str, path: str | None = None
) -> str:
    """An id of `kind` belonging to the tenant, made through the API when it has none yet."""
    if kind in tenant.ids:
        return tenant.ids[kind]
    if kind in MADE_IN_STORE:
        made = await MADE_IN_STORE[kind](stack, tenant)
        tenant.ids[kind] = str(made[kind])
        tenant.made[kind] = made
        return tenant.ids[kind]
    creator = creator_of(spec_ops, kind, path)
    if creator is None:
        raise MissingId(
            f"cannot make a {kind} of organization {tenant.label}: no POST route for its "
            f"collection in the spec; teach `id_of` in {__name__} how to make one"
        )
    parents = {p: await id_of(stack, spec_ops, tenant, p) for p in creator.path_params}
    body = creator.sample(tenant)
    body_ids = {r.kind: await id_of(stack, spec_ops, tenant, r.kind) for r in refs_in(body)}
    status, answer = await request(
        stack,
        "POST",
        fill_path(creator.path, parents),
        tenant.key,
        fill_body(body, body_ids),
    )
    if status not in (200, 201) or not isinstance(answer, dict) or kind not in answer:
        raise MissingId(
            f"cannot make a {kind} of organization {tenant.label} with {creator.name}: "
            f"answered {status} {answer!r}"
        )
    tenant.ids[kind] = str(answer[kind])
    tenant.made[kind] = answer
    return tenant.ids[kind]


async def make_tenant(stack: Stack, label: str) -> Tenant:
    """An organization with an agent, a second API key and a lead who wrote to the agent."""
    onboarded = await stack.onboard()
    extra = await stack.admin(
        "POST", "/v1/api-keys", onboarded.org_key, {"name": f"{label} extra"}, expect=201
    )
    first_key = await stack.store.db["api_keys"].find_one(
        {"org_id": onboarded.org.id, "_id": {"$ne": extra["key_id"]}}
    )
    assert first_key is not None
    tenant = Tenant(
        label=label,
        onboarded=onboarded,
        key=onboarded.org_key,
        extra_key=extra["api_key"],
        ids={
            "org_id": onboarded.org.id,
            "agent_id": onboarded.agent.id,
            "key_id": extra["key_id"],
        },
        made={"first_key": {"key_id": first_key["_id"]}},
        lead_digits=new_lead(),
        lead_name=f"{label}lead {uuid.uuid4().hex[:8]}",
        lead_text=f"Hello, any condo near Bishan? My ref is {uuid.uuid4().hex[:12]}",
    )
    await stack.lead_says(onboarded, tenant.lead_digits, tenant.lead_text, name=tenant.lead_name)
    thread = await thread_with(stack, tenant, tenant.lead_digits)
    tenant.ids["thread_id"] = thread["thread_id"]
    tenant.ids["lead_id"] = thread["lead_id"]
    await settled_reply(stack, onboarded, tenant.lead_digits)
    return tenant


async def thread_with(stack: Stack, tenant: Tenant, lead_digits: str) -> dict[str, Any]:
    """The tenant's thread with a lead, once the pipeline stored it (read from the store, so
    that setting up does not depend on the API under test)."""
    db = stack.store.db

    async def stored() -> dict[str, Any] | None:
        lead = await db["leads"].find_one({"phone": f"+{lead_digits}"})
        if lead is None:
            return None
        found: dict[str, Any] | None = await db["threads"].find_one(
            {"agent_id": tenant.ids["agent_id"], "lead_id": lead["_id"]}
        )
        return found

    thread = await eventually(stored, lambda found: found is not None)
    assert thread is not None
    return {"thread_id": thread["_id"], "lead_id": thread["lead_id"]}


async def make_every_id(stack: Stack, spec_ops: list[Operation], tenant: Tenant) -> list[str]:
    """Make an id of every kind the routes take; what cannot be made, as problems."""
    problems = []
    for op in spec_ops:
        try:
            slots = op.id_slots(tenant)
        except MissingSample:
            continue  # reported by test_every_operation_with_a_body_has_a_valid_sample
        for slot in slots:
            try:
                await id_of(stack, spec_ops, tenant, slot, op.path)
            except (MissingId, MissingSample) as exc:
                problems.append(f"{op.name}: {exc}")
    return problems


@dataclass
class World:
    """Organizations A and B, the spec, and what A must never see of B."""

    spec_ops: list[Operation]
    a: Tenant
    b: Tenant
    revoked_key: str  # one of A's keys, revoked
    shared_lead: str  # digits of a lead who wrote to B first, then to A
    shared_lead_b_name: str
    shared_lead_a_name: str
    b_secrets: dict[str, str]  # what of B must not show to A -> why it is B's
    unmakeable: list[str]  # ids of kinds the routes take that this file cannot make


async def secrets_of(stack: Stack, world_b: Tenant, shared_lead_b_name: str) -> dict[str, str]:
    """Everything of B that A must never see, each with a label for the failure message."""
    b = world_b
    agent = b.onboarded.agent
    secrets = {
        b.onboarded.org.id: "B's org id",
        b.onboarded.org.slug: "B's org slug",
        b.onboarded.org.name: "B's org name",
        agent.id: "B's agent id",
        agent.number: "B's agent number",
        wa_id(agent.number): "B's agent number (digits)",
        b.onboarded.app: "B's Gupshup app",
        b.onboarded.api_key: "B's Gupshup key",
        b.onboarded.callback_url.rsplit("/", 1)[1]: "B's callback key",
        b.key: "B's API key",
        b.extra_key: "B's extra API key",
        b.ids["lead_id"]: "B's lead id",
        f"+{b.lead_digits}": "B's lead's phone",
        b.lead_digits: "B's lead's phone (digits)",
        b.lead_name: "B's lead's name",
        b.lead_text.rsplit(" ", 1)[1]: "what B's lead wrote",
        shared_lead_b_name: "the name the shared lead gave B",
    }
    db = stack.store.db
    async for key in db["api_keys"].find({"org_id": b.ids["org_id"]}):
        secrets[key["_id"]] = "B's API key id"
    async for thread in db["threads"].find({"org_id": b.ids["org_id"]}):
        secrets[thread["_id"]] = "B's thread id"
    async for message in db["messages"].find({"org_id": b.ids["org_id"]}):
        secrets[message["_id"]] = "B's message id"
        secrets[message["provider_message_id"]] = "B's provider message id"
    secrets.update({value: f"B's {kind}" for kind, value in b.ids.items()})
    for kind, made in b.made.items():  # unique names of what was made for B (templates ...)
        for name, value in made.items():
            if isinstance(value, str) and re.search(r"[0-9a-f]{8}", value):
                secrets.setdefault(value, f"B's {kind} {name}")
    return secrets


@pytest.fixture(scope="module")
async def world(stack: Stack) -> World:
    """Two organizations with agents, keys, leads, threads and messages."""
    spec_ops = operations(await fetch_spec(stack))
    a, b = await asyncio.gather(make_tenant(stack, "A"), make_tenant(stack, "B"))

    # One person writes to B first (B has their first touch), then to A under another name.
    shared = new_lead()
    b_name, a_name = f"Bshared {uuid.uuid4().hex[:8]}", f"Ashared {uuid.uuid4().hex[:8]}"
    await stack.lead_says(b.onboarded, shared, "Hi, is the Tampines flat available?", name=b_name)
    await thread_with(stack, b, shared)
    await stack.lead_says(a.onboarded, shared, "Hi, is the Tampines flat available?", name=a_name)
    await thread_with(stack, a, shared)
    await asyncio.gather(
        settled_reply(stack, b.onboarded, shared), settled_reply(stack, a.onboarded, shared)
    )

    doomed = await stack.admin("POST", "/v1/api-keys", a.key, {"name": "to revoke"}, expect=201)
    await stack.admin("DELETE", f"/v1/api-keys/{doomed['key_id']}", a.key)
    unmakeable = await make_every_id(stack, spec_ops, a) + await make_every_id(stack, spec_ops, b)
    return World(
        spec_ops=spec_ops,
        a=a,
        b=b,
        revoked_key=doomed["api_key"],
        shared_lead=shared,
        shared_lead_b_name=b_name,
        shared_lead_a_name=a_name,
        b_secrets=await secrets_of(stack, b, b_name),
        unmakeable=unmakeable,
    )


def error_of(answer: Any) -> dict[str, Any]:
    """The `error` object of a JSON error answer ({} when the answer is not one)."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return dict(answer["error"])
    return {}


def ghost_of(real_id: str) -> str:
    """An id shaped like `real_id` that nothing has."""
    return f"{real_id.split('_', 1)[0]}_{uuid.uuid4().hex}"


def leaks(answer: Any, secrets: dict[str, str], allowed: Collection[str] = ()) -> list[str]:
    """What of `secrets` the answer shows (ids the caller itself sent are allowed)."""
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    return sorted(
        f"{why} {secret!r}"
        for secret, why in secrets.items()
        if secret and secret not in allowed and secret in text
    )


async def snapshot(stack: Stack, world: World, tenant: Tenant) -> dict[str, Any]:
    """What the tenant itself sees through every GET route (its own ids in the paths)."""
    seen: dict[str, Any] = {}
    for op in world.spec_ops:
        if op.method != "GET":
            continue
        try:
            ids = {
                p: await id_of(stack, world.spec_ops, tenant, p, op.path) for p in op.path_params
            }
        except (MissingId, MissingSample):
            continue  # reported as a problem of the world's setup
        answer = await request(stack, "GET", fill_path(op.path, ids), tenant.key)
        seen[op.name] = without_audited_reads(answer)
    return seen


# Reads that are audited (a lead's data export): the one thing a GET adds to what the
# organization sees, in its own audit log. Comparisons of before and after leave them out.
AUDITED_READS = frozenset({"lead.export"})


def without_audited_reads(answer: tuple[int, Any]) -> tuple[int, Any]:
    """An answer with the audit entries of audited reads left out."""
    status, body = answer
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        items = [
            item
            for item in body["items"]
            if not (isinstance(item, dict) and item.get("action") in AUDITED_READS)
        ]
        body = {**body, "items": items}
    return status, body


async def callback_accepted(stack: Stack, agent: OnboardedAgent) -> int:
    """The status ingress answers to a connectivity check on the agent's callback URL."""
    event = {
        "app": agent.app,
        "timestamp": 1764050000000,
        "version": 2,
        "type": "platform-event",
        "payload": {"type": "connectivity-check"},
    }
    async with stack.http.post(agent.callback_url, json=event) as response:
        return response.status


async def b_is_intact(stack: Stack, world: World, before: dict[str, Any]) -> list[str]:
    """What changed of B since `before` (B's own view), or B's keys and URL stopping work."""
    problems = []
    after = await snapshot(stack, world, world.b)
    for name, seen in before.items():
        if after.get(name) != seen:
            problems.append(f"B's own view through {name} changed:\n  {seen}\n  -> {after[name]}")
    b_agent = await stack.admin("GET", f"/v1/agents/{world.b.onboarded.agent.id}", world.b.key)
    if b_agent["status"] != "active":
        problems.append(f"B's agent is {b_agent['status']}")
    for key in (world.b.key, world.b.extra_key):
        status, answer = await request(stack, "GET", "/v1/organization", key)
        if status != 200:
            problems.append(f"a key of B stopped working: {status} {answer}")
    if (status := await callback_accepted(stack, world.b.onboarded)) != 200:
        problems.append(f"B's callback URL answers {status}")
    return problems


def failed(problems: list[str]) -> str:
    """The assertion message for a list of problems, one per line (each once)."""
    unique = list(dict.fromkeys(problems))
    return f"{len(unique)} problem(s):\n" + "\n".join(f"- {p}" for p in unique)


async def test_every_operation_with_a_body_has_a_valid_sample(stack: Stack, world: World) -> None:
    problems = []
    for op in world.spec_ops:
        try:
            body = op.sample(world.a)
        except MissingSample as exc:
            problems.append(str(exc))
            continue
        if isinstance(body, dict) and (unknown := set(body) - op.body_fields):
            problems.append(f"{op.name}: the sample has fields the API lacks: {sorted(unknown)}")
    assert not problems, failed(problems)


async def test_another_organizations_ids_are_not_found_on_every_route(
    stack: Stack, world: World
) -> None:
    a, b, ops = world.a, world.b, world.spec_ops
    problems: list[str] = list(world.unmakeable)
    before = await snapshot(stack, world, b)
    sent_to_b_lead = len(await stack.sent_to(b.onboarded, b.lead_digits))
    checked = 0
    for op in ops:
        try:
            slots = op.id_slots(a)
        except MissingSample as exc:
            problems.append(str(exc))
            continue
        if not slots:
            continue
        # All of B's ids; then, for routes taking several, each of B's ids among A's own.
        combos = [set(slots)] + ([{slot} for slot in slots] if len(slots) > 1 else [])
        for b_slots in combos:
            try:
                ids = {
                    slot: await id_of(stack, ops, b if slot in b_slots else a, slot, op.path)
                    for slot in slots
                }
                body = fill_body(op.sample(a), ids)
            except (MissingId, MissingSample) as exc:
                problems.append(f"{op.name}: {exc}")
                continue
            path = fill_path(op.path, ids)
            status, answer = await request(stack, op.method, path, a.key, body)
            checked += 1
            where = f"{op.method} {path} with A's key and B's {sorted(b_slots)}"
            code = error_of(answer).get("code")
            if b_slots & set(op.path_params):
                if status != 404 or code != "not_found":
                    problems.append(f"{where}: {status} {answer!r} (expected 404 not_found)")
            else:
                # Only ids in the body are B's: the answer must be the one for an id that
                # does not exist at all (a 4xx), so that it says nothing of B.
                ghosts = {slot: ghost_of(ids[slot]) for slot in b_slots}
                ghost_body = fill_body(op.sample(a), ids | ghosts)
                g_status, g_answer = await request(stack, op.method, path, a.key, ghost_body)
                expected = (g_status, error_of(g_answer).get("code"))
                if (status, code) != expected or not 400 <= status < 500 or status == 403:
                    problems.append(
                        f"{where} in the body: {status} {answer!r} (an unknown id gets "
                        f"{g_status} {g_answer!r})"
                    )
            if shown := leaks(answer, world.b_secrets, allowed=set(ids.values())):
                problems.append(f"{where}: the answer shows {shown}")
    problems += await b_is_intact(stack, world, before)
    if len(await stack.sent_to(b.onboarded, b.lead_digits)) != sent_to_b_lead:
        problems.append("something was sent to B's lead")
    assert checked > 0, "no route with ids in the spec?"
    assert not problems, failed(problems)


async def test_list_routes_show_nothing_of_another_organization(stack: Stack, world: World) -> None:
    a, b, ops = world.a, world.b, world.spec_ops
    problems: list[str] = []
    seen = []
    filters = {"agent_id": b.ids["agent_id"], "lead_id": b.ids["lead_id"]}
    filters |= {"thread_id": b.ids["thread_id"], "org_id": b.ids["org_id"]}
    for op in ops:
        if op.method != "GET":
            continue
        try:
            own = {p: await id_of(stack, ops, a, p, op.path) for p in op.path_params}
        except (MissingId, MissingSample) as exc:
            problems.append(f"{op.name}: {exc}")
            continue
        path = fill_path(op.path, own)
        # Lists plainly and filtered by B's ids; A's own detail views too (a lead's names).
        for params in [None, filters] if not op.path_params else [None]:
            status, answer = await request(stack, "GET", path, a.key, params=params)
            where = f"GET {path}" + (f" ?{params}" if params else "") + " with A's key"
            if status != 200:
                problems.append(f"{where}: {status} {answer!r}")
            if shown := leaks(answer, world.b_secrets):
                problems.append(f"{where}: the answer shows {shown}")
            seen.append(answer)
    # The lists are not empty: A sees its own organization, agent, keys, threads and leads.
    everything = json.dumps(seen, default=str)
    for kind in ("org_id", "agent_id", "key_id", "thread_id", "lead_id"):
        if a.ids[kind] not in everything:
            problems.append(f"A's own {kind} {a.ids[kind]} shows nowhere: are the lists empty?")
    # The person who wrote to both is A's lead too, but only with what A learnt.
    leads = await stack.admin("GET", "/v1/leads", a.key)
    shared = [lead for lead in leads["items"] if lead["phone"] == f"+{world.shared_lead}"]
    if len(shared) != 1:
        problems.append(f"A's leads lack the shared lead: {leads}")
    elif shared[0]["names"] != [world.shared_lead_a_name] or shared[0]["first_touch"]:
        problems.append(f"A sees registry facts that came through B: {shared[0]}")
    assert not problems, failed(problems)


def placeholder_call(op: Operation, tenant: Tenant) -> tuple[str, Any]:
    """Path and body for an authentication check: any ids will do, nothing runs."""
    slots = op.path_params
    body = SAMPLE_BODIES[op.operation_id](tenant) if op.operation_id in SAMPLE_BODIES else {}
    ids = {slot: f"{slot}_unknown" for slot in slots + [r.kind for r in refs_in(body)]}
    return fill_path(op.path, ids), fill_body(body, ids) if op.takes_body else None


async def test_every_route_refuses_missing_unknown_and_revoked_keys(
    stack: Stack, world: World
) -> None:
    problems: list[str] = []
    bad_credentials: dict[str, dict[str, str]] = {
        "no Authorization": {},
        "an empty bearer token": {"Authorization": "Bearer "},
        "A's key in a Basic header": {"Authorization": f"Basic {world.a.key}"},
        "an unknown key": {"Authorization": f"Bearer rbk_{uuid.uuid4().hex}"},
        "A's revoked key": {"Authorization": f"Bearer {world.revoked_key}"},
    }
    for op in world.spec_ops:
        if op.public:
            continue
        path, body = placeholder_call(op, world.a)
        for what, headers in bad_credentials.items():
            status, answer = await request(stack, op.method, path, None, body, headers=headers)
            code = error_of(answer).get("code")
            if status != 401 or code != "unauthenticated":
                problems.append(f"{op.name} with {what}: {status} {answer!r}")
    assert not problems, failed(problems)


async def test_keys_work_only_in_their_own_scope(stack: Stack, world: World) -> None:
    problems: list[str] = []
    listed = {op.operation_id for op in world.spec_ops}
    if stale := PLATFORM_OPERATIONS - listed:
        problems.append(f"PLATFORM_OPERATIONS names operations the API lacks: {sorted(stale)}")
    for op in world.spec_ops:
        if op.public:
            continue
        path, body = placeholder_call(op, world.a)
        platform = op.operation_id in PLATFORM_OPERATIONS
        key, whose = (
            (world.a.key, "an org key") if platform else (stack.platform_key, "the platform key")
        )
        status, answer = await request(stack, op.method, path, key, body)
        code = error_of(answer).get("code")
        if status != 403 or code != "forbidden":
            hint = "" if platform else " (a platform route? then list it in PLATFORM_OPERATIONS)"
            problems.append(f"{op.name} with {whose}: {status} {answer!r}{hint}")
    assert not problems, failed(problems)


def realtybot(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, against the stack's store and broker."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=stack_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_cannot_touch_another_organizations_agent_or_keys(
    stack: Stack, world: World
) -> None:
    a, b = world.a, world.b
    before = await snapshot(stack, world, b)
    a_audit = await stack.admin("GET", "/v1/audit-log", a.key)
    commands = [
        ("agent", "rotate-key", "--org", a.ids["org_id"], "--agent", b.ids["agent_id"]),
        ("agent", "activate", "--org", a.ids["org_id"], "--agent", b.ids["agent_id"]),
        ("agent", "suspend", "--org", a.ids["org_id"], "--agent", b.ids["agent_id"]),
        ("api-key", "revoke", "--org", a.ids["org_id"], "--key", b.ids["key_id"]),
        ("api-key", "revoke", "--org", a.ids["org_id"], "--key", b.made["first_key"]["key_id"]),
    ]
    results = await asyncio.gather(*(asyncio.to_thread(realtybot, stack, *c) for c in commands))
    problems = []
    for command, result in zip(commands, results, strict=True):
        line = " ".join(command)
        if result.returncode == 0:
            problems.append(f"`realtybot {line}` succeeded: {result.stdout.strip()}")
        elif not result.stderr.strip() or "Traceback" in result.stderr:
            problems.append(f"`realtybot {line}` failed unreadably: {result.stderr!r}")
        if result.returncode != 0 and result.stdout.strip():
            problems.append(f"`realtybot {line}` failed but printed {result.stdout!r}")
    problems += await b_is_intact(stack, world, before)
    if (after := await stack.admin("GET", "/v1/audit-log", a.key)) != a_audit:
        problems.append(f"A's audit log records refused commands: {after['items'][:3]}")
    assert not problems, failed(problems)


async def b_app_at_sandbox(stack: Stack, world: World) -> dict[str, Any]:
    """B's Gupshup app as the sandbox (Gupshup) has it: where its callbacks go."""
    apps = await stack.control("GET", "/sandbox/v1/apps")
    return dict(next(app for app in apps if app["app"] == world.b.onboarded.app))


async def test_an_organization_cannot_claim_another_organizations_gupshup_app(
    stack: Stack, world: World
) -> None:
    # Onboarding and key rotation point the app (by its Gupshup app id) at the agent's
    # callback URL with the platform's Partner credentials: an agent of A configured with
    # B's app would take B's leads' messages (and B's templates) into A.
    a, b = world.a, world.b
    b_app = b.onboarded.app
    b_app_id = b.onboarded.agent.gupshup_app_id
    assert b_app_id, "B's agent has no Gupshup app id"
    before = await b_app_at_sandbox(stack, world)
    problems: list[str] = []
    try:
        body = {
            "name": "Claimer",
            "number": fresh_sg_mobile(),
            "gupshup_app": b_app,
            "gupshup_app_id": b_app_id,
            "gupshup_api_key": f"gs-{uuid.uuid4().hex}",
        }
        status, answer = await request(stack, "POST", "/v1/agents", a.key, body)
        if status < 400:
            problems.append(f"A onboarded an agent on B's app: {status} {answer}")
        patch = {"gupshup_app": b_app, "gupshup_app_id": b_app_id}
        agent_path = f"/v1/agents/{a.ids['agent_id']}"
        status, answer = await request(stack, "PATCH", agent_path, a.key, patch)
        if status < 400:
            problems.append(f"A moved its agent onto B's app: {status} {answer}")
            await request(stack, "POST", f"{agent_path}/callback-key", a.key)
            status, answer = await request(stack, "POST", f"{agent_path}/templates/sync", a.key)
            if leaked := leaks(answer, world.b_secrets):
                problems.append(f"A's template sync shows {leaked}")
        if (now := await b_app_at_sandbox(stack, world)) != before:
            problems.append(f"B's app now posts its callbacks elsewhere: {before} -> {now}")
        lead = new_lead()
        await stack.control(
            "POST", "/sandbox/v1/inbound", {"app": b_app, "from": lead, "name": "X", "text": "Hi"}
        )
        db = stack.store.db

        async def thread_of_lead() -> dict[str, Any] | None:
            found = await db["leads"].find_one({"phone": f"+{lead}"})
            return await db["threads"].find_one({"lead_id": found["_id"]}) if found else None

        try:
            thread = await eventually(thread_of_lead, lambda t: t is not None, timeout=10)
        except AssertionError:
            problems.append("a lead's message to B's number reached no organization")
        else:
            if thread["org_id"] != b.ids["org_id"]:
                problems.append(
                    "a lead's message to B's number went to organization "
                    + ("A" if thread["org_id"] == a.ids["org_id"] else thread["org_id"])
                )
    finally:  # leave B working for whatever runs next
        await stack.admin(
            "PATCH",
            f"/v1/agents/{a.ids['agent_id']}",
            a.key,
            {"gupshup_app": a.onboarded.app, "gupshup_app_id": a.onboarded.agent.gupshup_app_id},
        )
        await stack.control(
            "POST",
            "/sandbox/v1/apps",
            {
                "app": b_app,
                "api_key": b.onboarded.api_key,
                "number": wa_id(b.onboarded.agent.number),
                "app_id": b_app_id,
                "callback_url": b.onboarded.callback_url,
                "format": "v2",
            },
        )
    assert not problems, failed(problems)
