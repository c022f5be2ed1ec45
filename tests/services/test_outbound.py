"""Outbound: each bubble reaches Gupshup at most once, in order; statuses land on the send."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from sandbox import RunningSandbox
from services.outbound import __main__ as outbound_main
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.identity import WhatsAppUser
from shared.models import Bubble, DeliveryState, DeliveryStatus, SendCommand, utcnow
from shared.quiet_hours import QuietHours
from shared.repositories.consents import ConsentRepository
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.replies import ReplyRepository
from shared.repositories.templates import Template, TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store
from tests.conftest import quiet_hours_around_now, quiet_hours_away_from_now
from tests.sandbox.conftest import create_template, partner_app_token, set_template_status
from tests.services.conftest import (
    AGENT_NUMBER,
    API_KEY,
    APP,
    APP_ID,
    LEAD_PHONE,
    LEAD_WA_ID,
    RunningService,
    ServiceRunner,
    Tenant,
    Tenants,
    eventually,
)

AGENT_WA_ID = AGENT_NUMBER.lstrip("+")
PROGRESS: tuple[DeliveryState, ...] = ("sent", "delivered", "read")


@pytest.fixture
async def services(
    gupshup: GupshupClient, settings: Settings, store: Store, broker: Broker
) -> AsyncIterator[ServiceRunner]:
    """As in conftest, but set up after (so stopped before) the Gupshup client closes."""
    runner = ServiceRunner(settings, store)
    yield runner
    await runner.stop_all()


@pytest.fixture
async def tenant(tenants: Tenants) -> Tenant:
    return await tenants.agent(api_key=API_KEY)


async def start_outbound(
    services: ServiceRunner, store: Store, settings: Settings, gupshup: GupshupClient
) -> RunningService:
    """Outbound consuming its stage, wired by services/outbound/__main__.py."""
    key_ring = KeyRing.from_settings(settings)
    return await services.start(
        "outbound", lambda runtime: outbound_main.wire(runtime, key_ring, gupshup)
    )


@dataclass(frozen=True)
class OutboundUnderTest:
    """Outbound running against the sandbox: what a test publishes to it and reads of it."""

    service: RunningService
    broker: Broker  # the test's own connection
    store: Store
    sandbox: RunningSandbox
    http: aiohttp.ClientSession

    async def publish(self, event: SendCommand | DeliveryStatus) -> None:
        """Publish a command or status to outbound, as the brain or the router would."""
        message_id = event.command_id if isinstance(event, SendCommand) else event.event_id
        await self.broker.publish(event, message_id=message_id)

    async def wait_for(self, outcome: str, count: int, timeout: float = 10.0) -> None:
        """Wait until outbound finished `count` messages with `outcome`."""
        await self.service.wait_for(outcome, count, timeout)

    def outcome_count(self, outcome: str) -> int:
        """Messages outbound finished with `outcome`."""
        return self.service.outcome_count(outcome)

    async def sent(self) -> list[dict[str, Any]]:
        """What Gupshup accepted from the agent's app, oldest first."""
        return await sandbox_messages(self.http, self.sandbox)

    async def wait_sent(self, count: int) -> list[dict[str, Any]]:
        """What Gupshup accepted, once it holds at least `count` messages."""
        return await wait_for_sandbox_count(self.http, self.sandbox, count)

    async def fault(self, **fault: Any) -> None:
        """Make the sandbox fail the app's next sends (see sandbox/v1/faults)."""
        await inject_fault(self.http, self.sandbox, **fault)

    async def send(self, send_id: str) -> dict[str, Any]:
        """The stored send of a bubble (it must exist)."""
        found: dict[str, Any] | None = await self.store.db["sends"].find_one({"_id": send_id})
        assert found is not None, send_id
        return found

    async def dead_letter(self, timeout: float) -> Any:
        """The next message outbound dead-lettered (None when none came in `timeout` s)."""
        return await self.broker.fetch(self.broker.topology.dead_letter_queue("outbound"), timeout)


@pytest.fixture
async def outbound(
    services: ServiceRunner,
    store: Store,
    settings: Settings,
    gupshup: GupshupClient,
    broker: Broker,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
) -> OutboundUnderTest:
    running = await start_outbound(services, store, settings, gupshup)
    return OutboundUnderTest(running, broker, store, sandbox, http)


@dataclass(frozen=True)
class Conversation:
    """A lead's thread with the agent, as dedup left it."""

    tenant: Tenant
    lead_id: str
    thread_id: str
    phone: str = LEAD_PHONE

    def command(self, *texts: str, command_id: str = "rpl_one") -> SendCommand:
        """A reply of `texts` to the lead, as the brain would publish it."""
        return SendCommand(
            event_id=command_id,
            command_id=command_id,
            org_id=self.tenant.org_id,
            agent_id=self.tenant.agent_id,
            thread_id=self.thread_id,
            lead_id=self.lead_id,
            destination=self.phone,
            bubbles=[Bubble(text=text) for text in texts],
            created_at=utcnow(),
        )


async def start_conversation(
    store: Store,
    tenant: Tenant,
    last_inbound: timedelta = timedelta(minutes=1),
    *,
    phone: str = LEAD_PHONE,
    name: str | None = "Rachel Lim",
) -> Conversation:
    """A lead and thread whose latest inbound message is `last_inbound` old."""
    at = utcnow() - last_inbound
    source = {"source": "organic"}
    lead, _ = await LeadRepository(store).resolve(
        WhatsAppUser(phone=phone),
        Sighting(
            org_id=tenant.org_id,
            agent_id=tenant.agent_id,
            portfolio=f"agent:{tenant.agent_id}",
            at=at,
            name=name,
            source=source,
        ),
    )
    threads = ThreadRepository(store)
    thread, _ = await threads.resolve(
        org_id=tenant.org_id, agent_id=tenant.agent_id, lead_id=lead.id, at=at, source=source
    )
    await threads.touch_inbound(tenant.org_id, thread.id, at)
    return Conversation(tenant, lead.id, thread.id, phone)


@pytest.fixture
async def conversation(store: Store, tenant: Tenant) -> Conversation:
    """A lead who wrote to the agent a minute ago (the 24-hour window is open)."""
    return await start_conversation(store, tenant)


async def sandbox_messages(
    http: aiohttp.ClientSession, sandbox: RunningSandbox
) -> list[dict[str, Any]]:
    """What Gupshup accepted from the agent's app, oldest first."""
    async with http.get(f"{sandbox.base_url}/sandbox/v1/messages", params={"app": APP}) as response:
        assert response.status == 200
        messages: list[dict[str, Any]] = await response.json()
        return messages


async def inject_fault(http: aiohttp.ClientSession, sandbox: RunningSandbox, **fault: Any) -> None:
    async with http.post(f"{sandbox.base_url}/sandbox/v1/faults", json={"app": APP, **fault}) as r:
        assert r.status == 200, await r.text()


async def wait_for_sandbox_count(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, count: int
) -> list[dict[str, Any]]:
    async def reached() -> bool:
        return len(await sandbox_messages(http, sandbox)) >= count

    await eventually(reached)
    return await sandbox_messages(http, sandbox)


async def test_bubbles_reach_gupshup_in_order_from_the_agent_to_the_lead(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    command = conversation.command("Hi Rachel! I'm Mia.", "What budget do you have in mind?")
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)

    sent = await outbound.sent()
    assert [m["text"] for m in sent] == ["Hi Rachel! I'm Mia.", "What budget do you have in mind?"]
    assert {(m["source"], m["destination"], m["type"]) for m in sent} == {
        (AGENT_WA_ID, LEAD_WA_ID, "text")
    }
    sends = await store.db["sends"].find({}).sort("index", 1).to_list()
    assert [s["state"] for s in sends] == ["submitted", "submitted"]
    assert [s["gupshup_message_id"] for s in sends] == [m["messageId"] for m in sent]


async def test_redelivered_command_sends_nothing_more(
    outbound: OutboundUnderTest,
    conversation: Conversation,
) -> None:
    command = conversation.command("First bubble", "Second bubble")
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)
    await outbound.publish(command)
    await outbound.wait_for("ok", 2)

    sent = await outbound.sent()
    assert [m["text"] for m in sent] == ["First bubble", "Second bubble"]


async def test_throttled_send_is_retried_and_arrives_once(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    # More 429s in a row than the retry budget (2 here): throttling is waited out with a
    # growing, jittered pause of the agent, never spent as failed attempts.
    await outbound.fault(mode="429", count=5)
    command = conversation.command("First bubble", "Second bubble")
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)

    assert outbound.outcome_count("retried") == 0
    assert outbound.outcome_count("deferred") >= 5
    sent = await outbound.sent()
    assert [m["text"] for m in sent] == ["First bubble", "Second bubble"]
    cursor = store.db["sends"].find({"command_id": command.command_id}).sort("index", 1)
    sends = await cursor.to_list()
    assert [s["state"] for s in sends] == ["submitted", "submitted"]
    assert [s["gupshup_message_id"] for s in sends] == [m["messageId"] for m in sent]


@pytest.mark.parametrize("settings", [{"ambiguous_resolve_seconds": 60}], indirect=True)
async def test_ambiguous_send_gupshup_has_is_resolved_by_its_status_never_resent(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    # Gupshup accepted the first bubble but answered 500: a second request would be a
    # duplicate, so the bubble is unknown and the next one waits.
    await outbound.fault(mode="500", count=1, accept=True)
    command = conversation.command("First bubble", "Second bubble")
    await outbound.publish(command)
    [accepted] = await outbound.wait_sent(1)

    async def unknown() -> bool:
        send = await store.db["sends"].find_one({"_id": command.send_id(0)})
        return send is not None and send["state"] == "unknown"

    await eventually(unknown)
    await asyncio.sleep(0.5)
    assert [m["text"] for m in await outbound.sent()] == ["First bubble"]

    # Gupshup's status callback for the message it has: the lead's number, its own id.
    status = delivery_status(conversation, accepted["messageId"], "enqueued")
    await outbound.publish(status)
    sent = await outbound.wait_sent(2)
    assert [m["text"] for m in sent] == ["First bubble", "Second bubble"]
    first = await outbound.send(command.send_id(0))
    assert (first["state"], first["resolved_by"]) == ("submitted", "status")
    assert first["gupshup_message_id"] == accepted["messageId"]
    assert first["status"] == "enqueued"

    # A redelivered command sends nothing again.
    await outbound.publish(command)
    await outbound.wait_for("ok", 3)
    assert len(await outbound.sent()) == 2


async def test_ambiguous_send_gupshup_never_got_is_sent_once_when_no_status_came(
    outbound: OutboundUnderTest,
    conversation: Conversation,
) -> None:
    # Gupshup failed inside and answered 500 without keeping the message: no status ever
    # names it, so after the resolve window (1.5 s here) it goes once more, then the rest.
    await outbound.fault(mode="500", count=1, accept=False)
    command = conversation.command("First bubble", "Second bubble")
    await outbound.publish(command)
    sent = await outbound.wait_sent(2)
    assert [m["text"] for m in sent] == ["First bubble", "Second bubble"]
    first = await outbound.send(command.send_id(0))
    assert (first["state"], first["attempts"], first["resent"]) == ("submitted", 2, True)
    assert first["gupshup_message_id"] == sent[0]["messageId"]
    await asyncio.sleep(2)
    assert len(await outbound.sent()) == 2
    assert outbound.outcome_count("dead") == 0


async def test_delivery_status_updates_the_send(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    command = conversation.command("Only bubble")
    await outbound.publish(command)
    [sent] = await outbound.wait_sent(1)
    await outbound.wait_for("ok", 1)

    status = DeliveryStatus(
        event_id="evt-status",
        org_id=conversation.tenant.org_id,
        agent_id=conversation.tenant.agent_id,
        status="delivered",
        gupshup_message_id=sent["messageId"],
        whatsapp_message_id="wamid.delivered-one",
        destination=LEAD_WA_ID,
        at=utcnow(),
    )
    await outbound.publish(status)
    await outbound.wait_for("ok", 2)

    send = await store.db["sends"].find_one({"gupshup_message_id": sent["messageId"]})
    assert send is not None
    assert send["status"] == "delivered"
    assert send["whatsapp_message_id"] == "wamid.delivered-one"


def delivery_status(
    conversation: Conversation, gupshup_id: str, status: DeliveryState, *, at_offset_s: int = 0
) -> DeliveryStatus:
    return DeliveryStatus(
        event_id=f"evt-{gupshup_id}-{status}",
        org_id=conversation.tenant.org_id,
        agent_id=conversation.tenant.agent_id,
        status=status,
        gupshup_message_id=gupshup_id,
        whatsapp_message_id=f"wamid.{gupshup_id}",
        destination=LEAD_WA_ID,
        at=utcnow() + timedelta(seconds=at_offset_s),
    )


def finished(*replicas: RunningService) -> int:
    """Messages the replicas acked, whether handled or dead-lettered."""
    return sum(r.outcome_count("ok") + r.outcome_count("dead_lettered") for r in replicas)


async def test_late_status_does_not_move_the_send_backwards(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    command = conversation.command("Only bubble")
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)
    [sent] = await outbound.sent()

    read = delivery_status(conversation, sent["messageId"], "read", at_offset_s=2)
    await outbound.publish(read)
    await outbound.wait_for("ok", 2)
    delivered = delivery_status(conversation, sent["messageId"], "delivered", at_offset_s=1)
    await outbound.publish(delivered)
    await outbound.wait_for("ok", 3)

    send = await store.db["sends"].find_one({"gupshup_message_id": sent["messageId"]})
    assert send is not None and send["status"] == "read"


async def test_concurrent_statuses_leave_every_send_at_its_furthest_status(
    services: ServiceRunner,
    outbound: OutboundUnderTest,
    store: Store,
    settings: Settings,
    gupshup: GupshupClient,
    conversation: Conversation,
) -> None:
    # Gupshup posts sent, delivered and read within milliseconds; replicas handle them at once.
    replica = await start_outbound(services, store, settings, gupshup)
    bubbles = 40
    command = conversation.command(*(f"Bubble {n}" for n in range(bubbles)))
    await outbound.publish(command)

    async def command_done() -> bool:
        return finished(outbound.service, replica) >= 1

    await eventually(command_done)
    sent = await outbound.sent()
    assert len(sent) == bubbles
    statuses = [
        delivery_status(conversation, message["messageId"], status, at_offset_s=offset)
        for message in sent
        for offset, status in enumerate(PROGRESS)
    ]
    await asyncio.gather(*(outbound.publish(s) for s in statuses))

    async def statuses_done() -> bool:
        return finished(outbound.service, replica) >= 1 + len(statuses)

    await eventually(statuses_done, timeout=20)
    assert sum(r.outcome_count("dead_lettered") for r in (outbound.service, replica)) == 0
    sends = await store.db["sends"].find({}).to_list()
    behind = [s["status"] for s in sends if s["status"] != "read"]
    assert behind == [], f"{len(behind)} of {bubbles} sends lost their 'read' status"


async def test_command_naming_an_agent_of_another_organization_is_dead_lettered(
    outbound: OutboundUnderTest,
    conversation: Conversation,
) -> None:
    command = conversation.command("Only bubble").model_copy(update={"org_id": "org_intruder"})
    await outbound.publish(command)
    dead = await outbound.dead_letter(timeout=5)
    assert dead is not None
    assert conversation.tenant.agent_id in str(dead.headers["x-dead-reason"])
    assert await outbound.sent() == []


async def test_nothing_is_sent_to_a_lead_who_opted_out(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    # DESIGN 2.6: nothing to an opted-out number except the opt-out confirmation.
    await ConsentRepository(store).record(
        org_id=conversation.tenant.org_id,
        lead_id=conversation.lead_id,
        agent_id=conversation.tenant.agent_id,
        opted_out=True,
        how="gupshup-user-event",
        at=utcnow(),
    )
    command = conversation.command("Are you looking to buy or to rent?")
    await outbound.publish(command)

    async def handled() -> bool:
        return finished(outbound.service) >= 1

    await eventually(handled)
    assert await outbound.sent() == []


async def test_free_form_reply_outside_the_24_hour_window_is_not_sent(
    outbound: OutboundUnderTest,
    store: Store,
    tenant: Tenant,
) -> None:
    # DESIGN 2.6: free-form messages only inside 24 hours of the lead's last inbound message.
    stale = await start_conversation(store, tenant, last_inbound=timedelta(hours=25))
    command = stale.command("Are you still looking?")
    await outbound.publish(command)

    async def handled() -> bool:
        return finished(outbound.service) >= 1

    await eventually(handled)
    assert await outbound.sent() == []


async def interrupted_claim(store: Store, conversation: Conversation, command: SendCommand) -> None:
    """A process claimed the first bubble, called Gupshup and died before recording the answer."""
    await store.db["sends"].insert_one(
        {
            "_id": command.send_id(0),
            "state": "sending",
            "gupshup_message_id": None,
            "org_id": conversation.tenant.org_id,
            "agent_id": conversation.tenant.agent_id,
            "thread_id": conversation.thread_id,
            "lead_id": conversation.lead_id,
            "command_id": command.command_id,
            "index": 0,
            "destination": LEAD_PHONE,
            "attempts": 1,
            "claimed_at": utcnow() - timedelta(minutes=5),
        }
    )


async def test_send_interrupted_mid_call_that_gupshup_has_is_not_repeated(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    command = conversation.command("Maybe delivered", "Certainly next")
    await interrupted_claim(store, conversation, command)
    # Gupshup had it: its status names a Gupshup id we never recorded, and the lead.
    status = delivery_status(conversation, "gs-before-the-crash", "sent")
    await outbound.publish(status)
    await outbound.wait_for("ok", 1)
    await outbound.publish(command)
    await outbound.wait_for("ok", 2)

    assert [m["text"] for m in await outbound.sent()] == ["Certainly next"]
    interrupted = await outbound.send(command.send_id(0))
    assert (interrupted["state"], interrupted["status"]) == ("submitted", "sent")
    assert interrupted["gupshup_message_id"] == "gs-before-the-crash"


async def test_send_interrupted_mid_call_without_any_status_is_sent_once_more(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    command = conversation.command("Maybe delivered", "Certainly next")
    await interrupted_claim(store, conversation, command)
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)

    sent = await outbound.sent()
    assert [m["text"] for m in sent] == ["Maybe delivered", "Certainly next"]
    interrupted = await outbound.send(command.send_id(0))
    assert (interrupted["state"], interrupted["attempts"]) == ("submitted", 2)


async def approved_template(
    http: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    store: Store,
    tenant: Tenant,
    name: str,
    body: str,
    example: str,
) -> Template:
    """The app's template, approved by Meta at Gupshup and known to us."""
    registration = {
        "app": APP,
        "api_key": API_KEY,
        "number": AGENT_WA_ID,
        "app_id": APP_ID,
        "callback_url": "http://127.0.0.1:9/unused",
        "format": "v2",
    }
    async with http.post(f"{sandbox.base_url}/sandbox/v1/apps", json=registration) as response:
        assert response.status == 200
    token = await partner_app_token(http, sandbox)
    status, created = await create_template(
        http, sandbox, token, elementName=name, content=body, example=example
    )
    assert status == 200, created
    provider_id = created["template"]["id"]
    await set_template_status(http, sandbox, "APPROVED", template_id=provider_id)
    templates = TemplateRepository(store)
    template = await templates.claim(tenant.org_id, tenant.agent_id, name, "en", "UTILITY", body)
    await templates.set_status(
        tenant.org_id, tenant.agent_id, name, "en", status="APPROVED", provider_id=provider_id
    )
    found = await templates.get(tenant.org_id, template.id)
    assert found is not None
    return found


async def test_business_initiated_templates_respect_the_messaging_tier(
    outbound: OutboundUnderTest,
    store: Store,
    tenant: Tenant,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
) -> None:
    template = await approved_template(
        http,
        sandbox,
        store,
        tenant,
        "still_looking",
        "Hi {{1}}, are you still looking?",
        "Hi Rachel, are you still looking?",
    )
    await store.db["agents"].update_one({"_id": tenant.agent_id}, {"$set": {"messaging_tier": 2}})

    # Three leads whose windows closed a day ago: a tier of 2 reaches two of them.
    still_looking = Bubble(
        type="template",
        text="Hi Rachel, are you still looking?",
        template_id=template.id,
        params=["Rachel"],
    )
    commands = []
    for n, phone in enumerate(("+6591230001", "+6591230002", "+6591230003", "+6591230001")):
        stale = await start_conversation(
            store, tenant, last_inbound=timedelta(hours=30), phone=phone, name=None
        )
        command = stale.command(command_id=f"tier-{n}")
        commands.append(command.model_copy(update={"bubbles": [still_looking]}))
    for done, command in enumerate(commands, start=1):
        await outbound.publish(command)
        await outbound.wait_for("ok", done)

    sent = await outbound.sent()
    assert [m["destination"] for m in sent] == ["6591230001", "6591230002", "6591230001"]
    skipped = await outbound.send(commands[2].send_id(0))
    assert (skipped["state"], skipped["reason"]) == (
        "skipped",
        "tier_limit",
    )


async def reconnect_template(
    http: aiohttp.ClientSession, sandbox: RunningSandbox, store: Store, tenant: Tenant
) -> Bubble:
    """The agent's approved fallback template, as the brain attaches it to a reply."""
    template = await approved_template(
        http,
        sandbox,
        store,
        tenant,
        "reconnect",
        "Hi {{1}}, sorry for the wait! Reply here to continue about your property search.",
        "Hi Rachel, sorry for the wait! Reply here to continue about your property search.",
    )
    bubbles = await TemplateRepository(store).fallback_for(
        tenant.org_id, tenant.agent_id, template.id, "Rachel Lim"
    )
    assert [b.params for b in bubbles] == [["Rachel"]]
    return bubbles[0]


async def test_reply_whose_window_closed_goes_as_its_fallback_template(
    outbound: OutboundUnderTest,
    store: Store,
    tenant: Tenant,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
) -> None:
    fallback = await reconnect_template(outbound.http, outbound.sandbox, store, tenant)
    stale = await start_conversation(store, tenant, last_inbound=timedelta(hours=25))
    command = stale.command("The unit is still available.", "Shall I book a viewing?")
    command = command.model_copy(update={"fallback": [fallback]})
    await outbound.publish(command)
    [sent] = await outbound.wait_sent(1)
    await outbound.wait_for("ok", 1)

    assert sent["template"]["params"] == ["Rachel"]
    sends = await store.db["sends"].find({"command_id": command.command_id}).to_list()
    by_id = {s["_id"]: s for s in sends}
    assert by_id[command.fallback_send_id(0)]["state"] == "submitted"
    for index in range(2):
        skipped = by_id[command.send_id(index)]
        assert (skipped["state"], skipped["reason"]) == ("skipped", "window_closed_fallback_sent")
    history = await store.db["messages"].find({"thread_id": stale.thread_id}).to_list()
    assert [m["text"] for m in history if m.get("author") == "fallback"] == [fallback.text]

    await outbound.publish(command)  # redelivered: nothing more
    await outbound.wait_for("ok", 2)
    assert len(await outbound.sent()) == 1


async def test_window_closed_failure_from_gupshup_sends_the_fallback_once(
    outbound: OutboundUnderTest,
    store: Store,
    tenant: Tenant,
    conversation: Conversation,
    sandbox: RunningSandbox,
    http: aiohttp.ClientSession,
) -> None:
    fallback = await reconnect_template(outbound.http, outbound.sandbox, store, tenant)
    command = conversation.command("First", "Second").model_copy(update={"fallback": [fallback]})
    await outbound.publish(command)
    first, second = await outbound.wait_sent(2)
    await outbound.wait_for("ok", 1)

    # WhatsApp judged the window closed after all (131047), for both bubbles.
    for n, sent in enumerate((first, second)):
        failed = delivery_status(conversation, sent["messageId"], "failed")
        failed = failed.model_copy(update={"error_code": 131047, "event_id": f"evt-failed-{n}"})
        await outbound.publish(failed)
    messages = await outbound.wait_sent(3)
    assert messages[2]["template"]["params"] == ["Rachel"]
    await asyncio.sleep(1)
    assert len(await outbound.sent()) == 3


def follow_up(conversation: Conversation, text: str, created_at: datetime) -> SendCommand:
    command = conversation.command(text, command_id=f"fup-{uuid.uuid4().hex[:8]}")
    return command.model_copy(update={"purpose": "follow_up", "created_at": created_at})


@pytest.mark.parametrize(
    "settings", [{"quiet_hours_recheck_seconds": 0.3, "agent_cache_seconds": 0}], indirect=True
)
async def test_follow_up_waits_for_the_end_of_quiet_hours(
    outbound: OutboundUnderTest,
    store: Store,
    tenant: Tenant,
    conversation: Conversation,
) -> None:
    agents = store.db["agents"]
    quiet = quiet_hours_around_now().model_dump()
    await agents.update_one({"_id": tenant.agent_id}, {"$set": {"quiet_hours": quiet}})
    command = follow_up(conversation, "Any thoughts on the Tampines unit?", utcnow())
    await outbound.publish(command)
    await outbound.wait_for("deferred", 3)  # looked at again and again, still quiet
    assert await outbound.sent() == []
    assert await store.db["sends"].find_one({"command_id": command.command_id}) is None

    # The same agent answering the lead meanwhile is not business-initiated: it goes.
    reply = conversation.command("Sure, 3 pm works.", command_id="rpl_now")
    await outbound.publish(reply)
    [sent] = await outbound.wait_sent(1)
    assert sent["text"] == "Sure, 3 pm works."

    # Morning comes (the quiet period ends): the follow-up goes out.
    awake = quiet_hours_away_from_now().model_dump()
    await agents.update_one({"_id": tenant.agent_id}, {"$set": {"quiet_hours": awake}})
    messages = await outbound.wait_sent(2)
    assert messages[1]["text"] == "Any thoughts on the Tampines unit?"


async def test_follow_up_the_lead_overtook_is_skipped(
    outbound: OutboundUnderTest,
    conversation: Conversation,
) -> None:
    # Scheduled before the lead's latest message (a minute ago): pointless now.
    command = follow_up(conversation, "Still looking?", utcnow() - timedelta(minutes=5))
    await outbound.publish(command)
    await outbound.wait_for("ok", 1)
    assert await outbound.sent() == []
    send = await outbound.send(command.send_id(0))
    assert send["reason"] == "lead_wrote_since"


def test_quiet_hours_wrap_past_midnight_and_follow_daylight_saving() -> None:
    night = QuietHours(start="21:00", end="09:00")
    sg = "Asia/Singapore"
    at = datetime(2026, 3, 2, 13, 30, tzinfo=UTC)  # 21:30 in Singapore
    assert night.wait_seconds(at, sg) == 11.5 * 3600
    assert night.wait_seconds(datetime(2026, 3, 2, 0, 30, tzinfo=UTC), sg) == 30 * 60  # 08:30
    assert night.wait_seconds(datetime(2026, 3, 2, 5, 0, tzinfo=UTC), sg) == 0  # 13:00
    # London springs forward on 29 March 2026: 22:00 GMT to 09:00 BST is 10 hours, not 11.
    assert night.wait_seconds(datetime(2026, 3, 28, 22, 0, tzinfo=UTC), "Europe/London") == (
        10 * 3600
    )
    early = QuietHours(start="01:00", end="05:00")  # not wrapping
    assert early.wait_seconds(datetime(2026, 3, 2, 19, 0, tzinfo=UTC), sg) == 2 * 3600  # 03:00
    assert early.wait_seconds(datetime(2026, 3, 2, 22, 0, tzinfo=UTC), sg) == 0  # 06:00


async def test_gupshup_unavailable_is_retried_and_replies_keep_their_order(
    outbound: OutboundUnderTest,
    store: Store,
    conversation: Conversation,
) -> None:
    # Two 503s (within the retry budget): nothing is dead-lettered, every bubble goes once
    # when Gupshup is back, and the later reply waits for the earlier one.
    await outbound.fault(mode="503", count=2)
    first = conversation.command("First bubble", "Second bubble", command_id="rpl_a")
    later = conversation.command("Later reply", command_id="rpl_b")
    for reply in (first, later):  # stored first, as the brain does: order follows the store
        await ReplyRepository(store).create(reply, [], "rules")
    await outbound.publish(first)
    await outbound.publish(later)
    sent = await outbound.wait_sent(3)
    assert [m["text"] for m in sent] == ["First bubble", "Second bubble", "Later reply"]
    assert outbound.outcome_count("dead") == 0


@pytest.mark.parametrize("settings", [{"gupshup_outage_max_seconds": 0.5}], indirect=True)
async def test_a_reply_gupshup_never_took_is_dead_lettered_after_the_outage_limit(
    outbound: OutboundUnderTest,
    conversation: Conversation,
) -> None:
    await outbound.fault(mode="503")  # until cleared
    command = conversation.command("Never sent")
    await outbound.publish(command)
    dead = await outbound.dead_letter(timeout=15)
    assert dead is not None and "not reached" in str(dead.headers["x-dead-reason"])
    assert await outbound.sent() == []


@pytest.mark.parametrize("settings", [{"ambiguous_resolve_seconds": 60}], indirect=True)
async def test_a_send_to_a_user_id_is_settled_by_a_status_naming_only_the_user_id(
    outbound: OutboundUnderTest, store: Store, tenant: Tenant
) -> None:
    user_id = "SG.1349120865530274"
    at = utcnow() - timedelta(minutes=1)
    seen = Sighting(
        org_id=tenant.org_id, agent_id=tenant.agent_id, portfolio=f"agent:{tenant.agent_id}", at=at
    )
    lead, _ = await LeadRepository(store).resolve(WhatsAppUser(user_id=user_id), seen)
    threads = ThreadRepository(store)
    thread, _ = await threads.resolve(
        org_id=tenant.org_id, agent_id=tenant.agent_id, lead_id=lead.id, at=at, source={}
    )
    await threads.touch_inbound(tenant.org_id, thread.id, at)
    conversation = Conversation(tenant, lead.id, thread.id, phone=user_id)

    await outbound.fault(mode="500", count=1, accept=True)
    command = conversation.command("First bubble", "Second bubble")
    await outbound.publish(command)
    [accepted] = await outbound.wait_sent(1)
    assert accepted["destination"] == user_id

    async def unknown() -> bool:
        send = await store.db["sends"].find_one({"_id": command.send_id(0)})
        return send is not None and send["state"] == "unknown"

    await eventually(unknown)
    # The status names the lead by user ID only: WhatsApp withholds the number.
    status = delivery_status(conversation, accepted["messageId"], "enqueued").model_copy(
        update={"destination": None, "user_id": user_id}
    )
    await outbound.publish(status)
    sent = await outbound.wait_sent(2)
    assert [(m["text"], m["destination"]) for m in sent] == [
        ("First bubble", user_id),
        ("Second bubble", user_id),
    ]
    first = await outbound.send(command.send_id(0))
    assert (first["state"], first["resolved_by"]) == ("submitted", "status")
