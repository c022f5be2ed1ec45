"""Sandbox realism: WhatsApp's rules per app, transport and status-callback faults, send metrics."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp
import pytest

from sandbox import RunningSandbox, start_sandbox
from tests.conftest import CallbackReceiver, control
from tests.sandbox.conftest import (
    APP,
    APP_ID,
    LEAD,
    Http,
    approved_template,
    eventually,
    fixture,
    listed,
    partner_app_token,
    post_status,
    register,
    send,
    send_with_headers,
)

OTHER_LEAD = "6591234567"
DAY_S = 24 * 3600
CONNECTION_DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def set_rules(http: Http, sandbox: RunningSandbox, **rules: Any) -> Any:
    async with http.post(f"{sandbox.base_url}/sandbox/v1/apps/{APP}/rules", json=rules) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def set_clock(http: Http, sandbox: RunningSandbox, offset_seconds: float) -> None:
    status, _ = await control(
        http, sandbox, "POST", "/sandbox/v1/clock", offset_seconds=offset_seconds
    )
    assert status == 200


async def clock_at_fraction(http: Http, sandbox: RunningSandbox, fraction: float) -> int:
    """Set the sandbox's clock `fraction` into a whole epoch second ahead; return that second."""
    second = math.ceil(time.time()) + 1
    await set_clock(http, sandbox, second + fraction - time.time())
    return second


async def metrics(http: Http, sandbox: RunningSandbox, app: str = APP) -> Any:
    async with http.get(f"{sandbox.base_url}/sandbox/v1/metrics", params={"app": app}) as resp:
        assert resp.status == 200
        return await resp.json()


async def inbound(http: Http, sandbox: RunningSandbox, sender: str = LEAD) -> None:
    body = {"app": APP, "from": sender, "name": "Rachel Lim", "text": "Hi"}
    status, answer = await control(http, sandbox, "POST", "/sandbox/v1/inbound", **body)
    assert status == 200 and answer["callback_status"] == 200


def failures(receiver: CallbackReceiver) -> list[tuple[str, int, str]]:
    """(Gupshup message id, code, reason) of every `failed` status received so far."""
    return [
        (event["id"], event["payload"]["code"], event["payload"]["reason"])
        for event in receiver.message_events()
        if event["type"] == "failed"
    ]


async def test_rules_are_off_until_set_and_read_back(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    path = f"/sandbox/v1/apps/{APP}/rules"
    assert await control(http, sandbox, "GET", path) == (200, {"app": APP, "rules": None})
    rules = {"throughput_per_second": 80, "pair_rate": True, "status_delays_ms": {"sent": 100}}
    answer = await set_rules(http, sandbox, **rules)
    expected = {
        "throughput_per_second": 80,
        "pair_rate": True,
        "enforce_window": False,
        "status_delays_ms": {"enqueued": 0, "sent": 100, "delivered": 0, "read": 0},
    }
    assert answer == {"app": APP, "rules": expected}
    assert await control(http, sandbox, "GET", path) == (200, answer)
    status, body = await control(http, sandbox, "POST", path, enforce_windw=True)
    assert status == 400 and "enforce_windw" in body["message"]
    status, _ = await control(
        http, sandbox, "POST", "/sandbox/v1/apps/Nobody/rules", pair_rate=True
    )
    assert status == 404
    assert await control(http, sandbox, "DELETE", path) == (200, {"app": APP, "rules": None})


async def test_throughput_limit_refuses_excess_in_a_sliding_second_with_429(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await set_rules(http, sandbox, throughput_per_second=3)
    second = await clock_at_fraction(http, sandbox, 0.7)
    answers = [await send(http, sandbox) for _ in range(4)]
    assert [status for status, _ in answers] == [200, 200, 200, 429]
    assert answers[3][1] == fixture("send_throttled_response.json")
    # 0.5 s later is the next epoch second but still within one second of the first three.
    await set_clock(http, sandbox, second + 1.2 - time.time())
    assert (await send(http, sandbox))[0] == 429
    await set_clock(http, sandbox, second + 1.8 - time.time())
    assert (await send(http, sandbox))[0] == 200
    assert len(await listed(http, sandbox, f"app={APP}")) == 4
    assert await metrics(http, sandbox) == {
        "per_second": {str(second): 3, str(second + 1): 1},
        "max_in_any_second": 3,
    }


async def test_concurrent_sends_over_the_throughput_limit_are_refused(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await set_rules(http, sandbox, throughput_per_second=4)
    answers = await asyncio.gather(*(send(http, sandbox) for _ in range(10)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 4 + [429] * 6
    assert len(await listed(http, sandbox, f"app={APP}")) == 4
    assert (await metrics(http, sandbox))["max_in_any_second"] == 4


async def test_metrics_count_sends_per_second_and_peak_in_a_sliding_second(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    assert await metrics(http, sandbox) == {"per_second": {}, "max_in_any_second": 0}
    second = await clock_at_fraction(http, sandbox, 0.8)
    for _ in range(2):
        assert (await send(http, sandbox))[0] == 200
    await set_clock(http, sandbox, second + 1.2 - time.time())
    for _ in range(2):
        assert (await send(http, sandbox))[0] == 200
    # Whole-second buckets show 2 and 2; the sliding window sees all 4 within 0.4 s.
    assert await metrics(http, sandbox) == {
        "per_second": {str(second): 2, str(second + 1): 2},
        "max_in_any_second": 4,
    }
    assert await metrics(http, sandbox, "Nobody") == {"per_second": {}, "max_in_any_second": 0}


async def test_pair_rate_fails_sends_beyond_a_burst_of_six_to_one_user(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await set_rules(http, sandbox, pair_rate=True)
    answers = [await send(http, sandbox) for _ in range(8)]
    assert {status for status, _ in answers} == {200}
    ids = [body["messageId"] for _, body in answers]
    assert (await send(http, sandbox, destination=OTHER_LEAD))[0] == 200
    await eventually(lambda: len(receiver.message_events()) >= 2)
    await asyncio.sleep(0.15)
    assert failures(receiver) == [
        (ids[6], 131056, "pair rate limit hit"),
        (ids[7], 131056, "pair rate limit hit"),
    ]
    listing = await listed(http, sandbox, f"app={APP}&destination={LEAD}")
    assert [item.get("failure") for item in listing][5:] == [
        None,
        {"code": 131056, "reason": "pair rate limit hit"},
        {"code": 131056, "reason": "pair rate limit hit"},
    ]
    await set_clock(http, sandbox, 61)
    assert (await send(http, sandbox))[0] == 200
    assert "failure" not in (await listed(http, sandbox, f"app={APP}&destination={LEAD}"))[-1]


async def test_window_fails_free_form_sends_outside_24h_but_not_templates(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver, app_id=APP_ID)
    template_id = await approved_template(http, sandbox, await partner_app_token(http, sandbox))
    await set_rules(http, sandbox, enforce_window=True)
    reason = "Message sent outside the 24 hour session window"

    _, never_wrote = await send(http, sandbox)
    await inbound(http, sandbox)
    _, inside = await send(http, sandbox)
    await set_clock(http, sandbox, DAY_S + 1)
    _, expired = await send(http, sandbox)
    template = {"id": template_id, "params": ["Rachel", "Tampines"]}
    template_status, _ = await send(http, sandbox, template=template)
    await inbound(http, sandbox)
    _, reopened = await send(http, sandbox)

    assert template_status == 200
    await eventually(lambda: len(failures(receiver)) == 2)
    await asyncio.sleep(0.15)
    assert failures(receiver) == [
        (never_wrote["messageId"], 1005, reason),
        (expired["messageId"], 1005, reason),
    ]
    listing = await listed(http, sandbox, f"app={APP}")
    assert [item.get("failure", {}).get("code") for item in listing] == [
        1005,
        None,
        1005,
        None,
        None,
    ]
    assert inside["messageId"] == listing[1]["messageId"]
    assert reopened["messageId"] == listing[4]["messageId"]


async def test_opted_out_destination_gets_failed_1012_only_when_rules_are_set(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    body = {"app": APP, "destination": LEAD}
    assert (await control(http, sandbox, "POST", "/sandbox/v1/optouts", **body))[0] == 200
    assert await control(http, sandbox, "GET", f"/sandbox/v1/optouts?app={APP}") == (
        200,
        {"app": APP, "destinations": [LEAD]},
    )
    # Without rules the sandbox enforces nothing, as other suites expect.
    _, unenforced = await send(http, sandbox)

    await set_rules(http, sandbox, status_delays_ms={"enqueued": 20, "sent": 40})
    _, opted_out = await send(http, sandbox)
    _, other = await send(http, sandbox, destination=OTHER_LEAD)
    await eventually(lambda: len(receiver.message_events()) == 3)
    await asyncio.sleep(0.1)
    events = [(event["type"], event["destination"]) for event in receiver.message_events()]
    # Gupshup refuses an opted-out number itself: no enqueued before the failure.
    assert sorted(events) == [
        ("enqueued", OTHER_LEAD),
        ("failed", LEAD),
        ("sent", OTHER_LEAD),
    ]
    reason = "Message Sending failed as the phone number is opted out."
    assert failures(receiver) == [(opted_out["messageId"], 1012, reason)]
    listing = await listed(http, sandbox, f"app={APP}")
    assert [item["messageId"] for item in listing] == [
        unenforced["messageId"],
        opted_out["messageId"],
        other["messageId"],
    ]
    assert [item.get("failure", {}).get("code") for item in listing] == [None, 1012, None]

    assert (await control(http, sandbox, "DELETE", "/sandbox/v1/optouts", **body))[0] == 200
    await send(http, sandbox)
    assert "failure" not in (await listed(http, sandbox, f"app={APP}"))[-1]


async def test_status_delays_post_statuses_that_long_after_the_send(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    delays = {"enqueued": 50, "sent": 200, "delivered": 400, "read": 0}
    await set_rules(http, sandbox, status_delays_ms=delays)
    before = asyncio.get_running_loop().time()
    await send(http, sandbox)
    await eventually(lambda: len(receiver.received) == 3)
    await asyncio.sleep(0.1)
    assert [event["type"] for event in receiver.message_events()] == [
        "enqueued",
        "sent",
        "delivered",
    ]
    stamps = [hook["timestamp"] for hook in receiver.received]
    assert [stamp - stamps[0] for stamp in stamps] == [0, 150, 350]
    for arrival, delay_s in zip(receiver.arrivals, (0.05, 0.2, 0.4), strict=True):
        assert arrival - before >= delay_s - 0.005


async def test_app_status_delays_replace_auto_status(
    http: Http, receiver: CallbackReceiver
) -> None:
    sandbox = await start_sandbox(port=0, auto_status=True)
    try:
        await register(http, sandbox, receiver)
        await set_rules(http, sandbox, status_delays_ms={"read": 30})
        await send(http, sandbox)
        await eventually(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.25)
        assert [event["type"] for event in receiver.message_events()] == ["read"]
    finally:
        await sandbox.stop()


async def test_reset_fault_closes_the_connection_without_an_answer(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await control(http, sandbox, "POST", "/sandbox/v1/faults", app=APP, mode="reset", count=1)
    with pytest.raises(CONNECTION_DROPPED):
        await send(http, sandbox)
    assert await listed(http, sandbox, f"app={APP}") == []

    fault = {"app": APP, "mode": "reset", "count": 1, "accept": True}
    await control(http, sandbox, "POST", "/sandbox/v1/faults", **fault)
    with pytest.raises(CONNECTION_DROPPED):
        await send(http, sandbox)
    assert len(await listed(http, sandbox, f"app={APP}")) == 1
    assert (await send(http, sandbox))[0] == 200


async def test_429_burst_refuses_the_next_sends_with_retry_after(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    fault = {"app": APP, "mode": "429_burst", "count": 2, "retry_after_seconds": 3}
    status, shown = await control(http, sandbox, "POST", "/sandbox/v1/faults", **fault)
    assert status == 200 and shown["faults"][0]["retry_after_seconds"] == 3
    for _ in range(2):
        status, headers, body = await send_with_headers(http, sandbox)
        assert (status, headers["Retry-After"], body) == (
            429,
            "3",
            fixture("send_throttled_response.json"),
        )
    status, headers, _ = await send_with_headers(http, sandbox)
    assert status == 200 and "Retry-After" not in headers
    assert len(await listed(http, sandbox, f"app={APP}")) == 1


@pytest.mark.parametrize(
    "fault",
    [{"mode": "429_burst"}, {"mode": "500", "retry_after_seconds": 1}],
    ids=["burst-without-count", "retry-after-on-500"],
)
async def test_inconsistent_fault_is_refused(
    http: Http, sandbox: RunningSandbox, fault: dict[str, Any]
) -> None:
    status, body = await control(http, sandbox, "POST", "/sandbox/v1/faults", **fault)
    assert status == 400 and body["status"] == "error"


async def test_duplicate_status_faults_post_every_status_twice(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    path = "/sandbox/v1/status-faults"
    status, shown = await control(http, sandbox, "POST", path, app=APP, duplicate=True)
    assert (status, shown) == (
        200,
        {"status_faults": [{"app": APP, "duplicate": True, "reorder": False}]},
    )
    _, sent = await send(http, sandbox)
    assert await post_status(http, sandbox, sent["messageId"], "delivered") == {
        "callback_status": 200
    }
    assert len(receiver.received) == 2 and receiver.received[0] == receiver.received[1]

    await set_rules(http, sandbox, status_delays_ms={"sent": 20})
    await send(http, sandbox)
    await eventually(lambda: len(receiver.received) == 4)
    assert receiver.received[2] == receiver.received[3]
    assert receiver.received[2]["payload"]["type"] == "sent"


async def test_reordered_status_faults_deliver_later_statuses_first(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await control(http, sandbox, "POST", "/sandbox/v1/status-faults", app=APP, reorder=True)
    delays = {"enqueued": 30, "sent": 60, "delivered": 90, "read": 120}
    await set_rules(http, sandbox, status_delays_ms=delays)
    await send(http, sandbox)
    await eventually(lambda: len(receiver.received) == 4)
    kinds = [event["type"] for event in receiver.message_events()]
    assert kinds == ["read", "delivered", "sent", "enqueued"]
    # Each status still carries the time it happened, so a consumer can order them.
    stamps = {hook["payload"]["type"]: hook["timestamp"] for hook in receiver.received}
    assert stamps["enqueued"] < stamps["sent"] < stamps["delivered"] < stamps["read"]


async def test_reset_forgets_rules_opt_outs_status_faults_and_clock(
    http: Http, sandbox: RunningSandbox, receiver: CallbackReceiver
) -> None:
    await register(http, sandbox, receiver)
    await set_rules(http, sandbox, pair_rate=True)
    await control(http, sandbox, "POST", "/sandbox/v1/optouts", app=APP, destination=LEAD)
    await control(http, sandbox, "POST", "/sandbox/v1/status-faults", app=APP, duplicate=True)
    await set_clock(http, sandbox, DAY_S)
    await control(http, sandbox, "POST", "/sandbox/v1/reset")
    await register(http, sandbox, receiver)
    path = f"/sandbox/v1/apps/{APP}/rules"
    assert (await control(http, sandbox, "GET", path))[1]["rules"] is None
    assert (await control(http, sandbox, "GET", f"/sandbox/v1/optouts?app={APP}"))[1][
        "destinations"
    ] == []
    assert await control(http, sandbox, "GET", "/sandbox/v1/status-faults") == (
        200,
        {"status_faults": []},
    )
    assert (await control(http, sandbox, "GET", "/sandbox/v1/clock"))[1]["offset_seconds"] == 0
