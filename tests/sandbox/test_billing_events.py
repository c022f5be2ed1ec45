"""Per-message pricing at the sandbox: `sent` statuses and billing-events by WhatsApp's rules."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox import RunningSandbox
from tests.conftest import CallbackReceiver, control
from tests.sandbox.conftest import (
    APP,
    APP_ID,
    LEAD,
    Http,
    approved_template,
    eventually,
    fixture,
    partner_app_token,
    register,
    send,
    shape,
)
from tests.sandbox.test_realism import OTHER_LEAD, inbound, set_rules

KINDS = ("message-event", "billing-event")
ALL_MODES = "MESSAGE,EVENTS,TEMPLATE,ACCOUNT,BILLING,SENT,DELIVERED,READ,FAILED,ENQUEUED,OTHERS"


async def subscribe(
    http: Http, sandbox: RunningSandbox, url: str, *, modes: str = ALL_MODES, version: str = "2"
) -> str:
    """Subscribe APP's callbacks through the Partner API, as onboarding does; its app token."""
    app_token = await partner_app_token(http, sandbox)
    form = {"modes": modes, "tag": "realtybot", "url": url, "version": version}
    async with http.post(
        f"{sandbox.base_url}/partner/app/{APP_ID}/subscription",
        data=form,
        headers={"Authorization": app_token},
    ) as response:
        assert response.status == 200
    return app_token


def billing_events(receiver: CallbackReceiver) -> list[dict[str, Any]]:
    """The billing-events received so far, in arrival order."""
    return [hook for hook in receiver.received if hook.get("type") == "billing-event"]


def sent_statuses(receiver: CallbackReceiver) -> list[dict[str, Any]]:
    """The v2 `sent` statuses received so far, as their payloads."""
    return [event for event in receiver.message_events() if event["type"] == "sent"]


async def test_each_sent_message_is_followed_by_a_billing_event_priced_by_whatsapps_rules(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)
    app_token = await subscribe(http, sandbox, receiver.url)
    templates = {
        category: await approved_template(
            http, sandbox, app_token, elementName=f"reminder_{category.lower()}", category=category
        )
        for category in ("MARKETING", "UTILITY", "AUTHENTICATION")
    }
    await set_rules(http, sandbox, status_delays_ms={"sent": 20})
    await inbound(http, sandbox)  # LEAD's window is open, OTHER_LEAD's is not
    receiver.received.clear()

    sends = [
        ("service inside the window", LEAD, None),
        ("marketing", LEAD, "MARKETING"),
        ("utility inside the window", LEAD, "UTILITY"),
        ("authentication", LEAD, "AUTHENTICATION"),
        ("utility outside the window", OTHER_LEAD, "UTILITY"),
    ]
    ids = {}
    for what, lead, category in sends:
        template = None
        if category is not None:
            template = {"id": templates[category], "params": ["Rachel", "Tampines"]}
        status, answer = await send(http, sandbox, destination=lead, template=template)
        assert status == 200, answer
        ids[answer["messageId"]] = what
    await eventually(lambda: len(billing_events(receiver)) == len(sends))

    billed = {
        ids[hook["payload"]["references"]["gsId"]]: (
            hook["payload"]["deductions"]["category"],
            hook["payload"]["deductions"]["billable"],
        )
        for hook in billing_events(receiver)
    }
    assert billed == {
        "service inside the window": ("service", False),
        "marketing": ("marketing", True),
        "utility inside the window": ("utility", False),
        "authentication": ("authentication", True),
        "utility outside the window": ("utility", True),
    }
    # The `sent` status reports the same price, and the billing-event comes right after it.
    priced = {
        ids[event["gsId"]]: (event["pricing"]["category"], event["pricing"]["type"] == "regular")
        for event in sent_statuses(receiver)
    }
    assert priced == billed
    first_seen = {}
    for index, hook in enumerate(receiver.received):
        payload = hook["payload"]
        gupshup_id = payload.get("gsId") or payload.get("references", {}).get("gsId")
        first_seen.setdefault((hook["type"], gupshup_id), (index, hook["timestamp"]))
    for gupshup_id in ids:
        status_at, billing_at = (first_seen[kind, gupshup_id] for kind in KINDS)
        assert status_at[0] < billing_at[0] and status_at[1] == billing_at[1]
    assert shape(billing_events(receiver)[0]) == shape(fixture("v2_billing_event.json"))


async def test_no_billing_events_without_the_billing_subscription_or_for_v3_apps(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)  # not subscribed to billing
    await set_rules(http, sandbox, status_delays_ms={"sent": 10})
    for subscription in (None, {"modes": "MESSAGE,SENT"}, {"version": "3"}):
        if subscription is not None:
            await subscribe(http, sandbox, receiver.url, **subscription)
        receiver.received.clear()
        assert (await send(http, sandbox))[0] == 200
        await eventually(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.1)  # a billing-event would follow the status at once
        assert billing_events(receiver) == [], subscription
    _, apps = await control(http, sandbox, "GET", "/sandbox/v1/apps")
    assert (apps[0]["format"], apps[0]["billing_events"]) == ("v3", True)


async def test_registration_can_subscribe_an_app_to_billing(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, billing_events=True)
    await set_rules(http, sandbox, status_delays_ms={"sent": 10})
    assert (await send(http, sandbox))[0] == 200
    await eventually(lambda: len(billing_events(receiver)) == 1)
    [hook] = billing_events(receiver)
    assert hook["app"] == APP
    assert hook["payload"]["deductions"] == {
        "type": "message",
        "model": "PMP",
        "source": "whatsapp",
        "billable": False,
        "category": "service",
    }
