"""Bad input to the admin API: every kind is refused with a JSON error naming what is wrong.

Routes and their sample bodies are shared with `test_admin_isolation.py`, so a new endpoint
is checked here as soon as it appears in `GET /v1/openapi.json`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.repositories.api_keys import ApiKeyRepository
from tests.e2e.conftest import OnboardedAgent, Stack
from tests.e2e.test_admin_isolation import (
    PLATFORM_OPERATIONS,
    MissingId,
    MissingSample,
    Operation,
    Raw,
    Tenant,
    error_of,
    failed,
    fetch_spec,
    fill_body,
    fill_path,
    fresh_sg_mobile,
    id_of,
    make_tenant,
    operations,
    refs_in,
    request,
)
from tests.e2e.test_pipeline import eventually

ONE_MIB = 1024 * 1024


@dataclass
class Setting:
    """An organization C with an agent and a lead conversation; another organization D."""

    spec_ops: list[Operation]
    c: Tenant
    d: OnboardedAgent


@pytest.fixture(scope="module")
async def setting(stack: Stack) -> Setting:
    """What every test of this file works in."""
    spec_ops = operations(await fetch_spec(stack))
    c, d = await asyncio.gather(make_tenant(stack, "C"), stack.onboard())
    return Setting(spec_ops, c, d)


async def own_call(stack: Stack, setting: Setting, op: Operation) -> tuple[str, Any]:
    """The operation's path with C's own ids, and its sample body for C."""
    ids = {p: await id_of(stack, setting.spec_ops, setting.c, p, op.path) for p in op.path_params}
    body = op.sample(setting.c)
    body_ids = {
        r.kind: await id_of(stack, setting.spec_ops, setting.c, r.kind) for r in refs_in(body)
    }
    return fill_path(op.path, ids), fill_body(body, body_ids)


async def own_calls(
    stack: Stack, setting: Setting, ops: list[Operation], problems: list[str]
) -> AsyncIterator[tuple[Operation, str, Any]]:
    """Each of `ops` with C's path and sample body; one that lacks either is a problem."""
    for op in ops:
        try:
            path, body = await own_call(stack, setting, op)
        except (MissingSample, MissingId) as exc:
            problems.append(str(exc))
            continue
        yield op, path, body


async def shown_agent(stack: Stack, setting: Setting) -> Any:
    """C's agent as the admin API shows it."""
    return await stack.admin("GET", f"/v1/agents/{setting.c.ids['agent_id']}", setting.c.key)


async def shown_agents(stack: Stack, setting: Setting) -> Any:
    """C's page of agents as the admin API shows it."""
    return await stack.admin("GET", "/v1/agents", setting.c.key)


async def agent_names(stack: Stack, setting: Setting) -> set[str]:
    """The names of C's agents."""
    return {a["name"] for a in (await shown_agents(stack, setting))["items"]}


def agent_body(name: str, app: str, api_key: str, number: str | None = None) -> dict[str, Any]:
    """A body that creates an agent, on a fresh number unless `number` is given."""
    return {
        "name": name,
        "number": number or fresh_sg_mobile(),
        "gupshup_app": app,
        "gupshup_api_key": api_key,
    }


def names_field(answer: Any, field: str) -> bool:
    """True when a 422 answer's `fields` names `field` (also as `parent.field`)."""
    fields = error_of(answer).get("fields") or {}
    return any(name == field or name.endswith("." + field) for name in fields)


def expect_invalid(
    problems: list[str], what: str, status: int, answer: Any, field: str, code: str = "invalid"
) -> None:
    """Note a problem unless the answer is a 422 JSON error naming `field`."""
    if status != 422 or error_of(answer).get("code") != code or not names_field(answer, field):
        problems.append(f"{what}: {status} {answer!r} (expected 422 {code} naming {field!r})")


def with_body_ops(setting: Setting) -> list[Operation]:
    """Every operation that takes a request body."""
    return [op for op in setting.spec_ops if op.takes_body]


def json_body_ops(setting: Setting) -> list[Operation]:
    """Every operation that takes a JSON request body."""
    return [op for op in setting.spec_ops if op.takes_json]


def key_for(stack: Stack, setting: Setting, op: Operation) -> str:
    """The key an operation takes: the platform key for platform routes, else C's."""
    return stack.platform_key if op.operation_id in PLATFORM_OPERATIONS else setting.c.key


async def test_unknown_fields_are_refused_naming_them(stack: Stack, setting: Setting) -> None:
    problems: list[str] = []
    async for op, path, body in own_calls(stack, setting, json_body_ops(setting), problems):
        status, answer = await request(
            stack, op.method, path, key_for(stack, setting, op), {**body, "colour": "teal"}
        )
        expect_invalid(problems, f"{op.name} with an unknown field", status, answer, "colour")

    # Fields that exist in the store but must never be written through these bodies.
    agent = setting.c.ids["agent_id"]
    before = await stack.admin("GET", f"/v1/agents/{agent}", setting.c.key)
    for field, value in {
        "org_id": setting.d.org.id,
        "credentials": {"gupshup_api_key": {"kid": "x", "ct": "y"}},
        "callback_key_hash": "0" * 64,
        "created_at": "2020-01-01T00:00:00Z",
        "persona": {"bot_name": "Kai"},
    }.items():
        status, answer = await request(
            stack, "PATCH", f"/v1/agents/{agent}", setting.c.key, {field: value}
        )
        expect_invalid(problems, f"PATCH agent with {field}", status, answer, field)
    create = agent_body("Nested Unknown", "NestedUnknown", "gs-nested")
    for extra, field in (
        ({"status": "suspended"}, "status"),
        ({"persona": {"bot_name": "Kai", "mood": "cheery"}}, "mood"),
    ):
        status, answer = await request(stack, "POST", "/v1/agents", setting.c.key, create | extra)
        expect_invalid(problems, f"POST /v1/agents with {extra}", status, answer, field)
    if await stack.admin("GET", f"/v1/agents/{agent}", setting.c.key) != before:
        problems.append("a refused PATCH changed the agent")
    assert not problems, failed(problems)


async def test_wrong_types_are_refused_naming_the_field(stack: Stack, setting: Setting) -> None:
    c = setting.c
    agent = c.ids["agent_id"]
    create = agent_body("Typed Agent", "TypedAgent", "gs-typed")
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/agents", create | {"name": 123}, "name"),
        ("POST", "/v1/agents", create | {"number": 91234567}, "number"),
        ("POST", "/v1/agents", create | {"gupshup_api_key": ["gs-1"]}, "gupshup_api_key"),
        ("POST", "/v1/agents", create | {"rate_per_second": "fast"}, "rate_per_second"),
        ("POST", "/v1/agents", create | {"persona": "Kai"}, "persona"),
        ("POST", "/v1/agents", create | {"persona": {"bot_name": 7}}, "bot_name"),
        ("PATCH", f"/v1/agents/{agent}", {"status": True}, "status"),
        ("PATCH", f"/v1/agents/{agent}", {"rate_per_second": {"per": "second"}}, "rate_per_second"),
        ("PATCH", "/v1/organization", {"name": ["Renamed"]}, "name"),
        ("PATCH", "/v1/organization", {"timezone": 8}, "timezone"),
        ("PUT", f"/v1/agents/{agent}/persona", {"greeting": 1}, "greeting"),
        ("PUT", f"/v1/agents/{agent}/credentials", {"app_secret": 42}, "app_secret"),
        ("POST", "/v1/api-keys", {"name": None}, "name"),
        ("POST", f"/v1/threads/{c.ids['thread_id']}/handoff", {"note": 5}, "note"),
        ("POST", f"/v1/threads/{c.ids['thread_id']}/messages", {"text": {"a": 1}}, "text"),
    ]
    problems: list[str] = []
    for method, path, body, field in cases:
        status, answer = await request(stack, method, path, c.key, body)
        expect_invalid(problems, f"{method} {path} {body}", status, answer, field)
    if "Typed Agent" in await agent_names(stack, setting):
        problems.append("an agent was created from a refused body")
    assert not problems, failed(problems)


async def test_numbers_are_not_coerced_from_strings_or_booleans(
    stack: Stack, setting: Setting
) -> None:
    # `Body` promises "values are not coerced loosely": true is not a rate, nor is "20".
    c = setting.c
    agent = c.ids["agent_id"]
    before = await shown_agent(stack, setting)
    problems: list[str] = []
    for value in (True, "20"):
        body = {"rate_per_second": value}
        status, answer = await request(stack, "PATCH", f"/v1/agents/{agent}", c.key, body)
        expect_invalid(problems, f"PATCH agent {body}", status, answer, "rate_per_second")
    after = await shown_agent(stack, setting)
    if after["rate_per_second"] != before["rate_per_second"]:
        problems.append(
            f"the agent's rate changed from {before['rate_per_second']} to "
            f"{after['rate_per_second']}"
        )
        await stack.admin("PATCH", f"/v1/agents/{agent}", c.key, {"rate_per_second": 20.0})
    assert not problems, failed(problems)


async def too_large_chunks(size: int) -> AsyncIterator[bytes]:
    """A JSON object of `size` bytes, sent in chunks (no Content-Length)."""
    yield b'{"name": "'
    sent = 10
    while sent < size - 2:
        chunk = b"x" * min(64 * 1024, size - 2 - sent)
        sent += len(chunk)
        yield chunk
    yield b'"}'


async def test_body_over_one_mebibyte_is_413_json_error(stack: Stack, setting: Setting) -> None:
    problems: list[str] = []
    agents_before = await shown_agents(stack, setting)
    async for op, path, _ in own_calls(stack, setting, with_body_ops(setting), problems):
        key = key_for(stack, setting, op)
        padded = json.dumps({"name": "x" * ONE_MIB}).encode()
        for how, data in (
            ("with Content-Length", padded),
            ("chunked", too_large_chunks(ONE_MIB + 100)),
        ):
            status, answer = await request(stack, op.method, path, key, data=data)
            if status != 413 or error_of(answer).get("code") != "too_large":
                problems.append(f"{op.name} with a body over 1 MiB {how}: {status} {answer!r}")
    # Just under the limit the body is read and judged (here: an unknown field).
    near = json.dumps({"padding": "x" * (ONE_MIB - 100)}).encode()
    status, answer = await request(stack, "POST", "/v1/api-keys", setting.c.key, data=near)
    expect_invalid(problems, "POST /v1/api-keys just under 1 MiB", status, answer, "padding")
    if await shown_agents(stack, setting) != agents_before:
        problems.append("an agent was created from an oversized body")
    assert not problems, failed(problems)


async def test_invalid_json_is_a_422_json_error_with_a_stable_code(
    stack: Stack, setting: Setting
) -> None:
    problems: list[str] = []
    bad_bodies = [b"{not json", b'{"name": "x",}', b"\xff\xfe\x00", b"[1, 2]", b"null", b'"x"']
    async for op, path, _ in own_calls(stack, setting, json_body_ops(setting), problems):
        for raw in bad_bodies:
            status, answer = await request(
                stack, op.method, path, key_for(stack, setting, op), data=raw
            )
            expect_invalid(problems, f"{op.name} with body {raw!r}", status, answer, "body")
    assert not problems, failed(problems)


def written_forms(e164: str) -> list[str]:
    """The ways people write a Singapore number (+65 and eight digits)."""
    local = e164.removeprefix("+65")
    return [
        e164,
        f"+65 {local[:4]} {local[4:]}",
        local,
        f"{local[:4]} {local[4:]}",
        f"65{local}",
        f"0065 {local[:4]}-{local[4:]}",
        f"(+65) {local[:4]}-{local[4:]}",
        f"tel:+65-{local[:4]}-{local[4:]}",
    ]


async def test_duplicate_number_is_409_number_taken_in_any_written_form(
    stack: Stack, setting: Setting
) -> None:
    c, d = setting.c, setting.d
    problems: list[str] = []
    agents_before = await shown_agents(stack, setting)
    own_number = c.onboarded.agent.number
    for whose, number in (("C's own agent", own_number), ("D's agent", d.agent.number)):
        for form in written_forms(number):
            body = agent_body("Copycat", f"Copy{uuid.uuid4().hex[:8]}", "gs-copy", form)
            status, answer = await request(stack, "POST", "/v1/agents", c.key, body)
            if status != 409 or error_of(answer).get("code") != "number_taken":
                problems.append(
                    f"POST /v1/agents with {whose} number as {form!r}: {status} {answer}"
                )
            elif leaked := [s for s in (d.org.id, d.agent.id, d.app) if s in json.dumps(answer)]:
                problems.append(f"the 409 for {form!r} shows organization D's {leaked}")
    if await shown_agents(stack, setting) != agents_before:
        problems.append("an agent with a taken number was created")

    # Changing an agent's number to a taken one is refused too; its own number in another
    # form is no change at all.
    agent = c.ids["agent_id"]
    local = own_number.removeprefix("+65")
    status, answer = await request(
        stack, "PATCH", f"/v1/agents/{agent}", c.key, {"number": f"+65 {local[:4]} {local[4:]}"}
    )
    if status != 200 or answer.get("number") != own_number:
        problems.append(f"PATCH to its own number in another form: {status} {answer}")
    status, answer = await request(
        stack, "PATCH", f"/v1/agents/{agent}", c.key, {"number": d.agent.number[3:]}
    )
    if status != 409 or error_of(answer).get("code") != "number_taken":
        problems.append(f"PATCH to D's number: {status} {answer}")

    # Two organizations claiming one new number at the same time: exactly one gets it.
    number = fresh_sg_mobile()
    claims = [
        request(
            stack,
            "POST",
            "/v1/agents",
            key,
            agent_body("Racer", f"Race{uuid.uuid4().hex[:8]}", "gs-race", form),
        )
        for key, form in ((c.key, number), (d.org_key, f"+65 {number}"))
    ]
    statuses = sorted(status for status, _ in await asyncio.gather(*claims))
    if statuses != [201, 409]:
        problems.append(f"two simultaneous claims of one number answered {statuses}")
    assert not problems, failed(problems)


async def test_invalid_phone_is_422_naming_the_number_field(stack: Stack, setting: Setting) -> None:
    c = setting.c
    problems: list[str] = []
    valid = {
        "name": "Bad Number",
        "gupshup_app": "BadNumber",
        "gupshup_api_key": "gs-bad",
    }
    invalid_numbers = ["12345", "+65 1234 5678", "call me maybe", "+999 1234 5678", "65"]
    for number in invalid_numbers:
        status, answer = await request(
            stack, "POST", "/v1/agents", c.key, valid | {"number": number}
        )
        expect_invalid(problems, f"POST /v1/agents number {number!r}", status, answer, "number")
        body = valid | {"number": fresh_sg_mobile(), "notify_number": number}
        status, answer = await request(stack, "POST", "/v1/agents", c.key, body)
        expect_invalid(
            problems, f"POST /v1/agents notify_number {number!r}", status, answer, "notify_number"
        )
    agent = c.ids["agent_id"]
    for field in ("number", "notify_number"):
        status, answer = await request(
            stack, "PATCH", f"/v1/agents/{agent}", c.key, {field: "+65 1234"}
        )
        expect_invalid(problems, f"PATCH agent {field} '+65 1234'", status, answer, field)
    if "Bad Number" in await agent_names(stack, setting):
        problems.append("an agent with an invalid number was created")
    assert not problems, failed(problems)


INVALID_ZONES = ["Mars/Olympus_Mons", "Asia/Singapur", "asia/singapore", "+08:00", "GMT+8", ""]


async def test_invalid_time_zone_is_422_naming_timezone(stack: Stack, setting: Setting) -> None:
    c = setting.c
    org_before = await stack.admin("GET", "/v1/organization", c.key)
    agent_before = await shown_agent(stack, setting)
    problems: list[str] = []
    zoned = [op for op in json_body_ops(setting) if "timezone" in op.body_fields]
    if not {"update_organization", "update_agent"} <= {op.operation_id for op in zoned}:
        problems.append(f"the organization's or agent's PATCH takes no timezone: {zoned}")
    # Every body with a time zone in it, the PATCHes included.
    async for op, path, body in own_calls(stack, setting, zoned, problems):
        for zone in INVALID_ZONES:
            status, answer = await request(
                stack, op.method, path, key_for(stack, setting, op), body | {"timezone": zone}
            )
            expect_invalid(problems, f"{op.name} timezone {zone!r}", status, answer, "timezone")
    if await stack.admin("GET", "/v1/organization", c.key) != org_before:
        problems.append("a refused PATCH changed the organization's time zone")
    if await shown_agent(stack, setting) != agent_before:
        problems.append("a refused PATCH changed the agent's time zone")
    assert not problems, failed(problems)


async def test_time_zone_names_that_depend_on_the_host_are_refused(
    stack: Stack, setting: Setting
) -> None:
    # "localtime" is a file on the server, not an IANA zone: the agent's quiet and working
    # hours would follow whatever time zone the container happens to run in.
    c = setting.c
    problems: list[str] = []
    for method, path in (
        ("PATCH", "/v1/organization"),
        ("PATCH", f"/v1/agents/{c.ids['agent_id']}"),
    ):
        status, answer = await request(stack, method, path, c.key, {"timezone": "localtime"})
        expect_invalid(
            problems, f"{method} {path} timezone 'localtime'", status, answer, "timezone"
        )
        if status == 200:
            await request(stack, method, path, c.key, {"timezone": "Asia/Singapore"})
    assert not problems, failed(problems)


async def test_persona_with_unknown_tone_or_long_bot_name_is_422(
    stack: Stack, setting: Setting
) -> None:
    c = setting.c
    agent = c.ids["agent_id"]
    before = await shown_agent(stack, setting)
    problems: list[str] = []
    cases = [
        ({"tone": "sarcastic"}, "tone"),
        ({"bot_name": "B" * 50}, "bot_name"),
        ({"bot_name": "B" * 41}, "bot_name"),
        ({"bot_name": "   "}, "bot_name"),
        ({"language": "english"}, "language"),
    ]
    for persona, field in cases:
        status, answer = await request(stack, "PUT", f"/v1/agents/{agent}/persona", c.key, persona)
        expect_invalid(problems, f"PUT persona {persona}", status, answer, field)
        body = agent_body("Persona Agent", "PersonaAgent", "gs-persona") | {"persona": persona}
        status, answer = await request(stack, "POST", "/v1/agents", c.key, body)
        expect_invalid(problems, f"POST /v1/agents persona {persona}", status, answer, field)
    if await shown_agent(stack, setting) != before:
        problems.append("a refused persona changed the agent")
    # The longest name allowed is 40 characters.
    status, answer = await request(
        stack, "PUT", f"/v1/agents/{agent}/persona", c.key, {"bot_name": "N" * 40}
    )
    if status != 200 or answer["persona"]["bot_name"] != "N" * 40:
        problems.append(f"a 40-character bot name: {status} {answer}")
    await stack.admin("PUT", f"/v1/agents/{agent}/persona", c.key, before["persona"])
    assert not problems, failed(problems)


def keys_named(value: Any, name: str) -> list[str]:
    """Paths of every key called `name` in a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == name:
                found.append(key)
            found += [f"{key}.{inner}" for inner in keys_named(item, name)]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [f"{index}.{inner}" for inner in keys_named(item, name)]
    return found


async def test_credentials_are_write_only(stack: Stack, setting: Setting) -> None:
    c = setting.c
    secrets = {
        name: f"{name}-{uuid.uuid4().hex}" for name in ("first", "gupshup", "partner", "app")
    }
    created = await stack.admin(
        "POST",
        "/v1/agents",
        c.key,
        agent_body("Secret Keeper", f"Secret{uuid.uuid4().hex[:8]}", secrets["first"]),
        expect=201,
    )
    agent = created["agent_id"]
    written = await stack.admin(
        "PUT",
        f"/v1/agents/{agent}/credentials",
        c.key,
        {
            "gupshup_api_key": secrets["gupshup"],
            "partner_app_token": secrets["partner"],
            "app_secret": secrets["app"],
        },
    )
    problems: list[str] = []
    answers = {"POST /v1/agents": created, "PUT credentials": written}
    answers["GET agent"] = await stack.admin("GET", f"/v1/agents/{agent}", c.key)
    answers["GET agents"] = await stack.admin("GET", "/v1/agents", c.key)
    audit = await stack.admin("GET", "/v1/audit-log", c.key)
    answers["GET audit-log"] = audit
    for where, answer in answers.items():
        text = json.dumps(answer)
        if shown := [name for name, secret in secrets.items() if secret in text]:
            problems.append(f"{where} shows the {shown} secret(s)")
        if where != "GET audit-log" and (found := keys_named(answer, "credentials")):
            problems.append(f"{where} has a credentials object at {found}")
    shown = answers["GET agent"].get("credentials_set")
    if shown != ["app_secret", "gupshup_api_key", "partner_app_token"]:
        problems.append(f"GET agent credentials_set is {shown!r}")
    listed = next(a for a in answers["GET agents"]["items"] if a["agent_id"] == agent)
    if listed.get("credentials_set") != shown:
        problems.append(f"the list's credentials_set is {listed.get('credentials_set')!r}")
    entries = [
        e for e in audit["items"] if e["action"] == "agent.credentials" and e["target"] == agent
    ]
    if len(entries) != 1 or not entries[0]["actor"].startswith("api-key:"):
        problems.append(f"the credentials write is not audited once with its actor: {entries}")
    stored = await stack.store.db["agents"].find_one({"_id": agent})
    if shown := [n for n, s in secrets.items() if s in json.dumps(stored, default=str)]:
        problems.append(f"the store keeps the {shown} secret(s) in plain text")
    logs = "".join(p.read_text() for p in stack.log_dir.glob("*.log") if p.name != "sandbox.log")
    if shown := [name for name, secret in secrets.items() if secret in logs]:
        problems.append(f"the services' logs show the {shown} secret(s)")
    # Nothing to write is refused, naming no credential.
    status, answer = await request(stack, "PUT", f"/v1/agents/{agent}/credentials", c.key, {})
    if status != 422 or error_of(answer).get("code") != "invalid":
        problems.append(f"PUT credentials with nothing: {status} {answer}")
    assert not problems, failed(problems)


async def approve_template(stack: Stack, setting: Setting) -> None:
    """Meta approves C's template (so that it can be sent), as the API then shows."""
    c = setting.c
    template_id = await id_of(stack, setting.spec_ops, c, "template_id")
    made = c.made["template_id"]
    await stack.control(
        "POST",
        "/sandbox/v1/templates/status",
        {
            "app": c.onboarded.app,
            "element_name": made["name"],
            "language": made["language"],
            "status": "APPROVED",
        },
    )
    path = f"/v1/agents/{c.ids['agent_id']}/templates"
    await eventually(
        lambda: stack.admin("GET", path, c.key),
        lambda page: any(
            t["template_id"] == template_id and t["status"] == "APPROVED" for t in page["items"]
        ),
        timeout=10,
    )


async def erasable_lead(stack: Stack, setting: Setting) -> str:
    """A lead of C's (imported) made to be erased."""
    csv = f"name,phone\r\nTo Erase,{fresh_sg_mobile()}\r\n"
    status, answer = await request(
        stack, "POST", "/v1/leads/import", setting.c.key, Raw("text/csv", csv)
    )
    assert status == 200, answer
    return str(answer["rows"][0]["lead_id"])


# What a write needs beyond its ids and sample body before it can succeed.
PREPARATIONS = {"send_template": approve_template}


async def test_every_write_is_audited_with_actor_action_before_and_after(
    stack: Stack, setting: Setting
) -> None:
    c = setting.c
    problems: list[str] = []
    keys = ApiKeyRepository(stack.store)
    platform = await keys.authenticate(stack.platform_key)
    c_key = await keys.authenticate(c.key)
    assert platform is not None and c_key is not None
    for op in setting.spec_ops:
        if op.method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        try:
            path, body = await own_call(stack, setting, op)
            if op.operation_id in PREPARATIONS:
                await PREPARATIONS[op.operation_id](stack, setting)
            if op.operation_id == "erase_lead":
                # Erasing C's lead would take its thread from the writes after this one.
                path = f"/v1/leads/{await erasable_lead(stack, setting)}"
        except (MissingSample, MissingId) as exc:
            problems.append(f"{op.name}: {exc}")
            continue
        platform_op = op.operation_id in PLATFORM_OPERATIONS
        key = key_for(stack, setting, op)
        seen = await stack.admin("GET", "/v1/audit-log?limit=500", c.key)
        status, answer = await request(stack, op.method, path, key, body)
        if status >= 300:
            problems.append(f"{op.name}: the sample write failed: {status} {answer!r}")
            continue
        if platform_op:
            # The new organization's log holds its creation.
            if "api_key" not in answer:
                problems.append(f"{op.name}: no organization key to read its audit log with")
                continue
            log = await stack.admin("GET", "/v1/audit-log", answer["api_key"])
            new = log["items"]
            actor = f"api-key:{platform.id}"
        else:
            log = await stack.admin("GET", "/v1/audit-log?limit=500", c.key)
            new = [entry for entry in log["items"] if entry not in seen["items"]]
            actor = f"api-key:{c_key.id}"
        where = f"{op.name} ({status})"
        if len(new) != 1:
            problems.append(f"{where}: {len(new)} new audit entries: {new}")
            continue
        entry = new[0]
        if entry.get("actor") != actor:
            problems.append(f"{where}: audited with actor {entry.get('actor')!r}, not {actor!r}")
        if not entry.get("action") or not entry.get("target") or not entry.get("at"):
            problems.append(f"{where}: the entry lacks action, target or time: {entry}")
        if entry.get("before") is None and entry.get("after") is None:
            problems.append(f"{where}: the entry {entry.get('action')!r} has no before or after")
        if op.method == "PATCH" and (entry.get("before") is None or entry.get("after") is None):
            problems.append(f"{where}: a change audited without both before and after: {entry}")
    assert not problems, failed(problems)
