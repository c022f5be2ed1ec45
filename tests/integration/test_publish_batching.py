"""Batched publishes: events that arrive while confirms are due leave as one message, and the
consuming stage still handles, retries and dead-letters each event on its own."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from shared.batching import PublishBatcher
from shared.broker import Broker, PublishFailed, Subscription, Subscriptions
from shared.errors import PermanentError
from shared.models import ThreadWork


def work(n: int) -> ThreadWork:
    return ThreadWork(
        event_id=f"e{n}", org_id="org_1", agent_id="agt_1", thread_id=f"thr_{n}", lead_id="lead_1"
    )


async def wait_for(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_concurrent_events_share_messages_and_each_is_handled_once(broker: Broker) -> None:
    batcher = PublishBatcher(broker, max_events=16, max_in_flight=1)
    await asyncio.gather(*(batcher.publish(work(n), message_id=f"m{n}") for n in range(40)))
    messages = await broker.queue_depth(broker.topology.queue("brain"))
    assert 3 <= messages < 40  # batches of at most 16, fewer messages than events

    handled: Counter[str] = Counter()

    async def handler(event: ThreadWork) -> None:
        handled[event.thread_id] += 1

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await wait_for(lambda: len(handled) == 40)
    await asyncio.sleep(0.3)  # nothing arrives twice
    await broker.stop_consuming(grace_seconds=5)
    assert handled == Counter({f"thr_{n}": 1 for n in range(40)})


async def test_an_event_that_fails_is_retried_or_dead_lettered_alone(broker: Broker) -> None:
    batcher = PublishBatcher(broker, max_events=64, max_in_flight=1)
    await asyncio.gather(*(batcher.publish(work(n), message_id=f"m{n}") for n in range(10)))
    assert await broker.queue_depth(broker.topology.queue("brain")) < 10

    calls: Counter[str] = Counter()

    async def handler(event: ThreadWork) -> None:
        calls[event.thread_id] += 1
        if event.thread_id == "thr_3":
            raise PermanentError("agent thr_3 is misconfigured")
        if event.thread_id == "thr_7" and calls["thr_7"] == 1:
            raise RuntimeError("store hiccup")

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    dead = await broker.fetch(broker.topology.dead_letter_queue("brain"), timeout=15)
    await wait_for(lambda: calls["thr_7"] == 2)
    await asyncio.sleep(0.3)
    await broker.stop_consuming(grace_seconds=5)

    assert dead is not None
    assert json.loads(dead.body)["thread_id"] == "thr_3"  # the event alone, not its batch
    assert dead.message_id == "e3"
    assert "agent thr_3 is misconfigured" in str(dead.headers["x-dead-reason"])
    assert await broker.queue_depth(broker.topology.dead_letter_queue("brain")) == 0
    expected = Counter({f"thr_{n}": 1 for n in range(10)})
    expected["thr_7"] = 2  # its retry came back alone; the other nine were not held back
    assert calls == expected


async def test_a_batch_that_is_not_json_is_dead_lettered_whole(broker: Broker) -> None:
    async def handler(event: ThreadWork) -> None:
        raise AssertionError("must not be called")

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker.publish_body(b"{broken", kind=work(1).kind, message_id="b1", batch=True)
    dead = await broker.fetch(broker.topology.dead_letter_queue("brain"), timeout=10)
    await broker.stop_consuming(grace_seconds=5)
    assert dead is not None and dead.body == b"{broken"
    assert "unparseable batch" in str(dead.headers["x-dead-reason"])


async def test_every_caller_in_a_refused_batch_is_told(broker: Broker) -> None:
    """A kind no queue is bound to is returned by the broker: nobody may answer 2xx."""
    batcher = PublishBatcher(broker, max_events=64, max_in_flight=1)
    unroutable = [work(n).model_copy(update={"kind": "nobody.listens.v1"}) for n in range(6)]
    results = await asyncio.gather(
        *(batcher.publish(e, message_id=f"u{i}") for i, e in enumerate(unroutable)),
        return_exceptions=True,
    )
    assert all(isinstance(r, PublishFailed) for r in results), results


@pytest.mark.parametrize("max_events", [1, 64])
async def test_a_lone_event_travels_as_a_plain_message(broker: Broker, max_events: int) -> None:
    """At low load (and with batching off) messages look exactly as they always did."""
    batcher = PublishBatcher(broker, max_events=max_events)
    await batcher.publish(work(9), message_id="m9")
    message = await broker.fetch(broker.topology.queue("brain"), timeout=10)
    assert message is not None
    assert message.type == work(9).kind
    assert json.loads(message.body)["thread_id"] == "thr_9"
