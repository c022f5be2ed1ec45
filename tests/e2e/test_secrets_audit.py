"""Secrets and privacy after a whole conversation, every service logging at DEBUG.

A stack of its own (LOG_LEVEL=DEBUG, a key ring, Partner credentials and an Anthropic key
known only to this module) serves an agent onboarded with a Gupshup API key, a Partner app
token and an app secret (so Meta-signed webhooks are checked). Leads talk to it: the model
answers one of them, then fails (401, 500) and the offline engine takes over while the lead
types their own number (the model SDK's DEBUG dump of the prompt once wrote it); a lead books
through a signed webhook while Gupshup refuses (503) and loses (500) sends; forged, malformed
and misaddressed webhooks and wrong admin keys come in between. Then everything an operator
or a client can see is collected (every service's log, every /metrics page, every admin API
answer and error body, the dead letters, the store) and searched for the secrets in plain
text, and the logs for the leads' full phone numbers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.brain.engines.anthropic_engine import COMPOSE_TOOL, UNDERSTAND_TOOL
from shared.broker import STAGE_BINDINGS, Broker
from shared.crypto import DecryptionFailed, KeyRing
from shared.repositories.agents import AgentRepository
from shared.repositories.organizations import OrganizationRepository
from tests.conftest import quiet_hours_away_from_now
from tests.e2e.conftest import OnboardedAgent, Stack, anthropic_env, running_stack
from tests.e2e.test_anthropic_replies import UNDERSTOOD
from tests.e2e.test_conversations import Lead, appointments, slot_lines
from tests.e2e.test_pipeline import eventually, new_lead, settled_reply
from tests.fakes.anthropic_api import ApiError, FakeAnthropic, RecordedRequest

RUN = uuid.uuid4().hex[:12]
PARTNER_EMAIL = "partner-audit@example.com"
PARTNER_PASSWORD = f"partner-pw-{RUN}"
GUPSHUP_API_KEY = f"gs-audit-{RUN}-apikey"
PARTNER_APP_TOKEN = f"pat-audit-{RUN}-apptoken"
APP_SECRET = f"meta-audit-{RUN}-appsecret"
KEY_BYTES = hashlib.sha256(f"audit key {RUN}".encode()).digest()
KEY_B64 = base64.b64encode(KEY_BYTES).decode()
CREDENTIALS_KEYS = f"audit-{RUN[:6]}:{KEY_B64}"
MODEL_BUBBLES = ["Hello Rachel, Pasir Ris has lovely parks.", "What budget do you have in mind?"]


@dataclass
class Seen:
    """Everything the platform showed to the outside, by where it was seen."""

    answers: list[tuple[str, int, str]] = field(default_factory=list)  # (request, status, body)
    # Secrets an answer issues by design (a new key, a callback URL): (request, secret name).
    issued: set[tuple[str, str]] = field(default_factory=set)


async def call(
    stack: Stack,
    seen: Seen,
    method: str,
    path: str,
    key: str | None,
    body: Any = None,
    *,
    expect: int | None = 200,
    data: bytes | None = None,
) -> Any:
    """Call the admin API, keep the answer's text for the audit, return its JSON (or None)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with stack.http.request(
        method, stack.admin_url + path, json=body, data=data, headers=headers
    ) as response:
        text = await response.text()
        seen.answers.append((f"{method} {path}", response.status, text))
        if expect is not None:
            assert response.status == expect, (method, path, response.status, text)
        try:
            return json.loads(text)
        except ValueError:
            return None


def signed_v2_text(app: str, lead: str, text: str, secret: str) -> tuple[bytes, str]:
    """A Gupshup v2 text webhook and its X-Hub-Signature-256 under the app secret."""
    body = {
        "app": app,
        "timestamp": int(time.time() * 1000),
        "version": 2,
        "type": "message",
        "payload": {
            "id": f"audit-{uuid.uuid4().hex}",
            "source": lead,
            "type": "text",
            "payload": {"text": text},
            "sender": {
                "phone": lead,
                "name": "Rachel Lim",
                "country_code": "65",
                "dial_code": lead[2:],
            },
        },
    }
    raw = json.dumps(body).encode()
    return raw, "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


async def post_webhook(
    stack: Stack, url: str, raw: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST a raw webhook to a callback URL; its status and body."""
    async with stack.http.post(
        url, data=raw, headers={"Content-Type": "application/json", **(headers or {})}
    ) as response:
        return response.status, await response.text()


@pytest.fixture(scope="module")
async def audit_stack(
    fake_anthropic: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    env = {
        "LOG_LEVEL": "DEBUG",
        "CREDENTIALS_KEYS": CREDENTIALS_KEYS,
        **anthropic_env(fake_anthropic),
        "GUPSHUP_PARTNER_EMAIL": PARTNER_EMAIL,
        "GUPSHUP_PARTNER_PASSWORD": PARTNER_PASSWORD,
    }
    async with running_stack(tmp_path_factory.mktemp("audit-stack-logs"), env) as stack:
        yield stack


async def test_stored_credentials_do_not_decrypt_for_another_agent_or_field(
    audit_stack: Stack,
) -> None:
    # What onboarding and the credentials endpoint stored, not only what KeyRing can do
    # (tests/unit/test_crypto.py): each ciphertext is bound to its agent and its field.
    stack = audit_stack
    first, second = await stack.onboard(), await stack.onboard()
    await stack.admin(
        "PUT",
        f"/v1/agents/{first.agent.id}/credentials",
        first.org_key,
        {"app_secret": APP_SECRET},
    )
    ring = KeyRing.parse(CREDENTIALS_KEYS)
    documents = (
        await stack.store.db["agents"]
        .find({"_id": {"$in": [first.agent.id, second.agent.id]}})
        .to_list()
    )
    sealed = {d["_id"]: d["credentials"] for d in documents}
    api_key = sealed[first.agent.id]["gupshup_api_key"]
    app_secret = sealed[first.agent.id]["app_secret"]

    assert ring.decrypt(api_key, agent_id=first.agent.id, field="gupshup_api_key") == (
        first.api_key
    )
    assert ring.decrypt(app_secret, agent_id=first.agent.id, field="app_secret") == APP_SECRET
    moved = [
        (api_key, second.agent.id, "gupshup_api_key"),  # to another agent
        (api_key, first.agent.id, "app_secret"),  # to another field
        (app_secret, first.agent.id, "gupshup_api_key"),
        (app_secret, second.agent.id, "app_secret"),
    ]
    for ciphertext, agent_id, field_name in moved:
        with pytest.raises(DecryptionFailed):
            ring.decrypt(ciphertext, agent_id=agent_id, field=field_name)


async def test_no_secret_or_full_lead_phone_leaks_anywhere(
    audit_stack: Stack, fake_anthropic: FakeAnthropic
) -> None:
    # Last in this module: it stops the stack's processes to read their logs whole.
    stack, fake = audit_stack, fake_anthropic
    seen = Seen()
    model = {"answers": True}

    def understand(_request: RecordedRequest) -> dict[str, Any] | ApiError:
        return UNDERSTOOD if model["answers"] else ApiError(401)

    def compose(_request: RecordedRequest) -> dict[str, Any] | ApiError:
        return {"bubbles": MODEL_BUBBLES} if model["answers"] else ApiError(500)

    fake.on_tool(UNDERSTAND_TOOL, understand)
    fake.on_tool(COMPOSE_TOOL, compose)
    # Gupshup's Partner login takes only this module's credentials.
    await stack.control(
        "POST",
        "/sandbox/v1/partner/credentials",
        {"email": PARTNER_EMAIL, "password": PARTNER_PASSWORD},
    )

    # --- Onboarding, every answer kept. ---
    created = await call(
        stack,
        seen,
        "POST",
        "/v1/organizations",
        stack.platform_key,
        {"name": f"Audit Realty {RUN}"},
        expect=201,
    )
    org_key: str = created["api_key"]
    seen.issued.add(("POST /v1/organizations", "admin API key"))
    app, app_id = f"Audit{RUN}", str(uuid.uuid4())
    number = f"9{1_000_000 + uuid.uuid4().int % 8_000_000:07d}"
    await stack.register_app(app, GUPSHUP_API_KEY, f"65{number}", app_id)
    agent = await call(
        stack,
        seen,
        "POST",
        "/v1/agents",
        org_key,
        {
            "name": "Jason Tan",
            "number": number,
            "gupshup_app": app,
            "gupshup_app_id": app_id,
            "gupshup_api_key": GUPSHUP_API_KEY,
            "partner_app_token": PARTNER_APP_TOKEN,
            "app_secret": APP_SECRET,
            "persona": {"bot_name": "Ava"},
        },
        expect=201,
    )
    assert agent["callback_subscription"] == "registered", agent
    seen.issued.add(("POST /v1/agents", "callback key"))
    agent_id, callback_url = agent["agent_id"], agent["callback_url"]
    callback_key = callback_url.rsplit("/", 1)[1]
    second_key = (
        await call(stack, seen, "POST", "/v1/api-keys", org_key, {"name": "crm"}, expect=201)
    )["api_key"]
    seen.issued.add(("POST /v1/api-keys", "second admin API key"))
    onboarded = await stack.store.db["agents"].find_one({"_id": agent_id})
    assert onboarded is not None
    org_id = onboarded["org_id"]
    # Sealed under this module's key ring, the one the services were given.
    assert {c["kid"] for c in onboarded["credentials"].values()} == {CREDENTIALS_KEYS.split(":")[0]}
    await call(
        stack,
        seen,
        "PATCH",
        "/v1/organization",
        org_key,
        {"quiet_hours": quiet_hours_away_from_now().model_dump()},
    )
    org = await OrganizationRepository(stack.store).get(org_id)
    stored_agent = await AgentRepository(stack.store).get(agent_id)
    assert org is not None and stored_agent is not None
    onboard = OnboardedAgent(org, stored_agent, app, GUPSHUP_API_KEY, callback_url, org_key)
    # The Partner API hands out the app's token: the one the services were given.
    async with stack.http.post(
        stack.sandbox_url + "/partner/account/login",
        data={"email": PARTNER_EMAIL, "password": PARTNER_PASSWORD},
    ) as response:
        partner_token = (await response.json())["token"]
    async with stack.http.get(
        f"{stack.sandbox_url}/partner/app/{app_id}/token",
        headers={"Authorization": partner_token},
    ) as response:
        gupshup_app_token = (await response.json())["token"]["token"]
    template = await call(
        stack,
        seen,
        "POST",
        f"/v1/agents/{agent_id}/templates",
        org_key,
        {
            "name": "audit_check_in",
            "category": "UTILITY",
            "body": "Hi {{1}}, still looking?",
            "examples": ["Rachel"],
        },
        expect=201,
    )
    assert template["status"] == "PENDING", template

    # --- Lead A: the model answers, then fails and the offline engine answers. ---
    lead_a = new_lead()
    await stack.lead_says(onboard, lead_a, "Hi, I'm after a 3-bedroom condo near Pasir Ris Park")
    first = await settled_reply(stack, onboard, lead_a)
    assert [m["text"] for m in first] == MODEL_BUBBLES
    model["answers"] = False
    await stack.lead_says(onboard, lead_a, f"Budget about 1.5m, call me on +{lead_a}")
    await settled_reply(stack, onboard, lead_a, expected_at_least=len(first) + 1)

    # --- Lead B: a signed webhook starts it, Gupshup refuses and loses sends, a booking. ---
    lead = Lead(stack, onboard)
    lead_b = lead.phone
    raw, signature = signed_v2_text(
        app,
        lead_b,
        "Hi, looking to buy a 3 bedroom condo in Bishan, budget 2m, next year. Can I book a call?",
        APP_SECRET,
    )
    assert await post_webhook(stack, callback_url, raw, {"X-Hub-Signature-256": signature}) == (
        200,
        "",
    )
    offer = await lead.reply_after(0)
    offered = slot_lines(offer)
    assert offered, offer
    await stack.control("POST", "/sandbox/v1/faults", {"app": app, "mode": "503", "count": 1})
    booked = await lead.says("1")
    assert offered[0] in booked[0] and "booked" in booked[0], booked
    [appointment] = await appointments(stack, onboard)
    await stack.control(
        "POST", "/sandbox/v1/faults", {"app": app, "mode": "500", "count": 1, "accept": False}
    )
    await lead.says("Thanks, see you then")

    # --- Hostile and mistaken callers. ---
    forged_raw, _ = signed_v2_text(app, lead_b, "forged", APP_SECRET)
    status, _ = await post_webhook(
        stack, callback_url, forged_raw, {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    assert status == 401
    wrong_secret = signed_v2_text(app, lead_b, "forged", "not-the-secret")
    status, _ = await post_webhook(
        stack, callback_url, wrong_secret[0], {"X-Hub-Signature-256": wrong_secret[1]}
    )
    assert status == 401
    status, _ = await post_webhook(stack, callback_url, b'{"app": 1, "type": "message"}')
    assert status == 400
    status, _ = await post_webhook(stack, callback_url, b"{not json")
    assert status == 400
    other_app, _ = signed_v2_text("SomebodyElsesApp", lead_b, "hi", APP_SECRET)
    status, _ = await post_webhook(stack, callback_url, other_app)
    assert status == 403
    status, _ = await post_webhook(stack, callback_url.rsplit("/", 1)[0] + "/cbk_unknown", b"{}")
    assert status == 404
    await call(stack, seen, "GET", "/v1/agents", "wrong-key", expect=401)
    await call(stack, seen, "GET", "/v1/agents", None, expect=401)
    await call(stack, seen, "GET", "/v1/agents", GUPSHUP_API_KEY, expect=401)
    for invalid_credentials in (
        {"app_secret": APP_SECRET, "surprise": APP_SECRET},
        {"gupshup_api_key": GUPSHUP_API_KEY * 60},
        {"partner_app_token": 42, "app_secret": APP_SECRET},
    ):
        await call(
            stack,
            seen,
            "PUT",
            f"/v1/agents/{agent_id}/credentials",
            org_key,
            invalid_credentials,
            expect=422,
        )
    await call(
        stack,
        seen,
        "POST",
        "/v1/agents",
        org_key,
        {
            "name": "Dup",
            "number": number,
            "gupshup_app": app,
            "gupshup_api_key": GUPSHUP_API_KEY,
            "app_secret": APP_SECRET,
        },
        expect=None,
    )

    # --- What the organization reads back. ---
    thread = await lead.thread()
    assert thread is not None
    lead_id, thread_id = thread["lead_id"], thread["_id"]
    for path in (
        "/v1/organization",
        "/v1/api-keys",
        "/v1/agents",
        f"/v1/agents/{agent_id}",
        f"/v1/agents/{agent_id}/templates",
        "/v1/leads",
        f"/v1/leads/{lead_id}",
        f"/v1/leads/{lead_id}/export",
        "/v1/threads",
        f"/v1/threads/{thread_id}",
        f"/v1/threads/{thread_id}/messages",
        "/v1/appointments",
        f"/v1/appointments/{appointment['appointment_id']}",
        "/v1/audit-log",
        "/v1/reports/costs",
        "/v1/openapi.json",
    ):
        await call(stack, seen, "GET", path, org_key)
    await call(stack, seen, "GET", "/v1/audit-log", second_key)

    # Every reply made has left before the evidence is gathered.
    await eventually(
        lambda: stack.store.db["sends"].count_documents(
            {"agent_id": agent_id, "state": {"$in": ["pending", "sending", "unknown"]}}
        ),
        lambda open_sends: open_sends == 0,
        timeout=30,
    )

    # --- Evidence: metrics, dead letters, the store, then the logs of stopped processes. ---
    metrics: dict[str, str] = {}
    ports = {
        "ingress": stack.settings.ingress_port,
        "admin": stack.settings.admin_port,
        "router": stack.settings.router_port,
        "dedup": stack.settings.dedup_port,
        "brain": stack.settings.brain_port,
        "outbound": stack.settings.outbound_port,
    }
    for name, port in ports.items():
        async with stack.http.get(f"http://127.0.0.1:{port}/metrics") as response:
            if response.status == 200:
                metrics[name] = await response.text()
    assert set(metrics) >= {"ingress", "router", "dedup", "brain", "outbound"}, set(metrics)
    dead_letters: list[str] = []
    broker = Broker(stack.settings, "test")
    await broker.connect()
    try:
        for stage in STAGE_BINDINGS:
            while message := await broker.fetch(
                broker.topology.dead_letter_queue(stage), timeout=0.2
            ):
                dead_letters.append(
                    json.dumps(dict(message.headers), default=str) + message.body.decode()
                )
    finally:
        await broker.close()
    stored: dict[str, str] = {}
    for name in await stack.store.db.list_collection_names():
        documents = await stack.store.db[name].find({}).to_list()
        stored[name] = json.dumps(documents, default=str)
    stack.processes.stop()  # graceful stops log too
    logs = {
        path.stem: path.read_text(errors="replace")
        for path in stack.log_dir.glob("*.log")
        if path.stem != "sandbox"  # Gupshup's stand-in, not the platform
    }
    assert set(logs) == {"ingress", "router", "dedup", "brain", "outbound"}, set(logs)
    assert all(logs.values()), "a service wrote no log at all"
    assert stack.processes.env["LOG_LEVEL"] == "DEBUG"

    secrets = {
        "Gupshup API key": GUPSHUP_API_KEY,
        "Partner app token (credential)": PARTNER_APP_TOKEN,
        "Gupshup app token (Partner API)": gupshup_app_token,
        "app secret": APP_SECRET,
        "Partner password": PARTNER_PASSWORD,
        "callback key": callback_key,
        "admin API key": org_key,
        "second admin API key": second_key,
        "platform key": stack.platform_key,
        "CREDENTIALS_KEYS key (base64)": KEY_B64,
        "CREDENTIALS_KEYS key (hex)": KEY_BYTES.hex(),
        "Anthropic API key": fake.api_key,
    }
    places: dict[str, str] = {f"log of {n}": t for n, t in logs.items()}
    places |= {f"/metrics of {n}": t for n, t in metrics.items()}
    places |= {f"dead letter {i}": t for i, t in enumerate(dead_letters)}
    places |= {f"store collection {n}": t for n, t in stored.items()}
    problems = [
        f"the {secret} is in the {where}"
        for where, text in places.items()
        for secret, value in secrets.items()
        if value in text
    ]
    for request, status, body in seen.answers:
        for secret, value in secrets.items():
            if value in body and (request, secret) not in seen.issued:
                problems.append(f"the {secret} is in the answer to {request} ({status})")
    # Leads' numbers: never whole in a log (E.164 contains the wa_id form).
    for phone in (lead_a, lead_b):
        problems += [
            f"lead number {phone} is in the log of {n}" for n, t in logs.items() if phone in t
        ]
    assert not problems, "\n".join(problems)
    # The audit looked at something: the leads' numbers were logged, masked.
    masked = {"\\u2026" + lead_b[-4:], "…" + lead_b[-4:]}
    assert any(m in text for m in masked for text in logs.values()), "no masked number logged"
    assert fake.requests, "the model was never called"
    # The conversation really went through every path the audit is about.
    assert {status for _, status, _ in seen.answers} >= {200, 201, 401, 422}
