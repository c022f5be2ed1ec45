"""The store and the broker the platform relies on behave as the design assumes."""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest
from pymongo.errors import DuplicateKeyError

from shared.broker import Broker, Subscription, Subscriptions
from shared.errors import PermanentError
from shared.models import ThreadWork
from shared.store import Store


async def test_unique_index_rejects_a_second_lead_with_the_same_phone(store: Store) -> None:
    leads = store.db["leads"]
    await leads.insert_one({"_id": "lead_a", "phone": "+6598887777"})
    with pytest.raises(DuplicateKeyError):
        await leads.insert_one({"_id": "lead_b", "phone": "+6598887777"})
    assert await leads.count_documents({"phone": "+6598887777"}) == 1


async def test_migrations_are_idempotent(store: Store) -> None:
    assert await store.migrate() == []
    indexes = await store.db["messages"].index_information()
    assert indexes["agent_provider_id_unique"]["unique"] is True


TRICKY = 'a<b>&"c"\\ é 中 \u2028 \n end'


async def test_equality_filters_match_exactly_what_mongodb_would(store: Store) -> None:
    """The local store answers equality and $in filters through its indexes; the documents
    found must be the ones MongoDB finds: arrays holding the value, odd characters, `_id`
    next to other fields, and nothing that only resembles the value."""
    docs = store.db["equality_probe"]
    await docs.create_index([("thread_id", 1), ("state", 1)])
    await docs.insert_many(
        [
            {"_id": "plain", "org_id": "o1", "thread_id": "t1", "state": "open"},
            {"_id": "array", "org_id": "o1", "thread_id": ["t2", "t1"], "state": "open"},
            {"_id": "tricky", "org_id": "o1", "thread_id": TRICKY, "state": "open"},
            {"_id": "other_org", "org_id": "o2", "thread_id": "t1", "state": "open"},
            {"_id": "prefix", "org_id": "o1", "thread_id": "t10", "state": "closed"},
            {"_id": "missing", "org_id": "o1", "state": "open"},
            {"_id": "number", "org_id": "o1", "thread_id": 1, "state": "open"},
        ]
    )

    async def ids(query: dict[str, object]) -> set[str]:
        return {doc["_id"] async for doc in docs.find(query)}

    assert await ids({"thread_id": "t1", "org_id": "o1"}) == {"plain", "array"}
    assert await ids({"thread_id": {"$eq": "t2"}}) == {"array"}
    assert await ids({"thread_id": TRICKY}) == {"tricky"}
    assert await ids({"thread_id": {"$in": ["t10", TRICKY]}, "state": "closed"}) == {"prefix"}
    assert await ids({"_id": "plain", "org_id": "o2"}) == set()
    assert await ids({"_id": {"$in": ["plain", "number"]}, "org_id": "o1"}) == {"plain", "number"}
    assert await ids({"thread_id": "1"}) == set()
    updated = await docs.update_one({"_id": "tricky", "org_id": "o1"}, {"$set": {"state": "x"}})
    assert updated.modified_count == 1
    assert await docs.count_documents({"org_id": "o1", "state": "open"}) == 4
    deleted = await docs.delete_many({"thread_id": "t1", "org_id": "o1"})
    assert deleted.deleted_count == 2


def work(n: int) -> ThreadWork:
    return ThreadWork(
        event_id=f"e{n}", org_id="org_1", agent_id="agt_1", thread_id=f"thr_{n}", lead_id="lead_1"
    )


async def test_published_event_reaches_its_stage_consumer(broker: Broker) -> None:
    received: asyncio.Queue[ThreadWork] = asyncio.Queue()

    async def handler(event: ThreadWork) -> None:
        await received.put(event)

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker.publish(work(1), message_id="m1")
    event = await asyncio.wait_for(received.get(), timeout=10)
    assert event.thread_id == "thr_1"
    await broker.stop_consuming(grace_seconds=5)


async def test_failing_message_is_retried_then_dead_lettered_with_its_reason(
    broker: Broker,
) -> None:
    attempts: list[float] = []

    async def handler(event: ThreadWork) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("store exploded")

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker.publish(work(2), message_id="m2")
    dead = await broker.fetch(broker.topology.dead_letter_queue("brain"), timeout=15)
    await broker.stop_consuming(grace_seconds=5)
    assert dead is not None
    assert len(attempts) == 3  # first try and the two configured retries
    assert attempts[2] - attempts[0] >= 0.3  # waited 100 ms then 200 ms
    assert "RuntimeError: store exploded" in str(dead.headers["x-dead-reason"])
    assert json.loads(dead.body)["thread_id"] == "thr_2"


async def test_permanent_error_is_dead_lettered_without_retry(broker: Broker) -> None:
    calls = 0

    async def handler(event: ThreadWork) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("cannot be handled")

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker.publish(work(3), message_id="m3")
    dead = await broker.fetch(broker.topology.dead_letter_queue("brain"), timeout=10)
    await broker.stop_consuming(grace_seconds=5)
    assert dead is not None and calls == 1
    assert str(dead.headers["x-dead-reason"]).startswith("PermanentError")


async def test_unparseable_message_is_dead_lettered(broker: Broker) -> None:
    async def handler(event: ThreadWork) -> None:
        raise AssertionError("must not be called")

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker._publish_to_queue(
        broker.topology.queue("brain"), aio_pika.Message(b"{not json", message_id="bad")
    )
    dead = await broker.fetch(broker.topology.dead_letter_queue("brain"), timeout=10)
    await broker.stop_consuming(grace_seconds=5)
    assert dead is not None
    assert "unparseable" in str(dead.headers["x-dead-reason"])


async def test_dead_letters_are_replayed_once_the_cause_is_fixed(broker: Broker) -> None:
    handled: list[str] = []
    broken = True

    async def handler(event: ThreadWork) -> None:
        if broken:
            raise PermanentError("the agent's configuration is incomplete")
        handled.append(event.thread_id)

    await broker.consume(Subscriptions(Subscription(ThreadWork, handler)))
    await broker.publish(work(5), message_id="m5")
    dead_queue = broker.topology.dead_letter_queue("brain")
    for _ in range(100):
        if await broker.queue_depth(dead_queue) == 1:
            break
        await asyncio.sleep(0.05)
    assert await broker.queue_depth(dead_queue) == 1

    broken = False  # the operator fixed the cause
    assert await broker.replay_dead_letters("brain") == 1
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(0.05)
    await broker.stop_consuming(grace_seconds=5)
    assert handled == ["thr_5"]
    assert await broker.queue_depth(dead_queue) == 0
