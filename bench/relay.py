"""The broker's floor for the pipeline: a message relayed through four quorum queues, each hop a
persistent publish confirmed before the ack, with no work at all in between.

Measured in the bench process with its own queues: the latency of one message through the
four hops, one at a time, and the throughput of many at once (prefetch 32 per hop, as the
services consume).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.stats import summary
from shared.settings import Settings

HOPS = 4
PREFETCH = 32


async def relay_floor(settings: Settings, sequential: int, concurrent: int) -> dict[str, Any]:
    """Latency (ms) of `sequential` messages one by one, and messages/s for `concurrent`."""
    prefix = f"{settings.broker_prefix}.relay.{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}.{n}" for n in range(HOPS)]
    connection = await aio_pika.connect(str(settings.amqp_url))
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Future[None]] = {}
    try:
        publisher = await connection.channel(publisher_confirms=True)
        for name in names:
            await publisher.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

        async def forward(hop: int, message: AbstractIncomingMessage) -> None:
            if hop + 1 < HOPS:
                await channels[hop].default_exchange.publish(
                    aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=names[hop + 1],
                )
            else:
                key = message.body.decode()
                arrived[key] = time.perf_counter()
                future = waiting.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(None)
            await message.ack()

        channels = []
        for hop, name in enumerate(names):
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=PREFETCH)
            channels.append(channel)
            queue = await channel.get_queue(name, ensure=False)
            await queue.consume(functools.partial(forward, hop))

        async def send(key: str) -> float:
            loop = asyncio.get_running_loop()
            waiting[key] = loop.create_future()
            started = time.perf_counter()
            await publisher.default_exchange.publish(
                aio_pika.Message(key.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=names[0],
            )
            await asyncio.wait_for(waiting[key], timeout=30)
            return (arrived[key] - started) * 1000

        latencies = [await send(f"s{n}") for n in range(sequential)]
        started = time.perf_counter()
        gate = asyncio.Semaphore(256)

        async def gated(key: str) -> float:
            async with gate:
                return await send(key)

        await asyncio.gather(*(gated(f"c{n}") for n in range(concurrent)))
        seconds = time.perf_counter() - started
        for channel in channels:
            await channel.close()
        for name in names:
            await publisher.queue_delete(name)
    finally:
        await connection.close()
    return {
        "hops": HOPS,
        "latency_ms": summary(latencies),
        "messages": concurrent,
        "messages_per_second": concurrent / seconds,
    }
