"""Group commit for confirmed publishes.

A webhook may be answered 2xx only once the broker confirmed it, and a confirm takes a round
trip to the broker's disk. Publishing every event on its own costs the broker (and the
client) one message each; waiting a fixed time to fill batches costs every request that
time. `PublishBatcher` does neither: an event is published at once when fewer than
`max_in_flight` publishes are waiting for their confirms; otherwise it waits for the next
one to finish, and all the events that gathered meanwhile leave together, as one message
(`Broker.publish_batch`). At low load every event travels alone; under load the batches
grow with it. Each caller still learns whether its own event was confirmed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel

from shared.broker import Broker, PublishFailed, wire_body
from shared.metrics import PUBLISH_BATCH_SIZE

MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class _Waiting:
    body: bytes
    kind: str
    message_id: str
    confirmed: asyncio.Future[None]


class PublishBatcher:
    """Publishes events through a broker, batching those that arrive while confirms are due."""

    def __init__(
        self,
        broker: Broker,
        *,
        max_events: int,
        max_in_flight: int = 2,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._broker = broker
        self._max_events = max_events
        self._max_in_flight = max_in_flight
        self._max_bytes = max_bytes
        self._waiting: deque[_Waiting] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(self, event: BaseModel, *, message_id: str) -> None:
        """Return once the broker confirmed the event; raise `PublishFailed` if it did not."""
        if self._max_events <= 1:
            await self._broker.publish(event, message_id=message_id)
            return
        kind = str(getattr(event, "kind"))  # noqa: B009 - every event model has a kind
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(wire_body(event), kind, message_id, confirmed))
        if self._in_flight < self._max_in_flight:
            self._send_next()
        await confirmed

    def _send_next(self) -> None:
        batch = self._take()
        self._in_flight += 1
        task = asyncio.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting]:
        """The oldest waiting events of one kind, within the batch limits (at least one)."""
        first = self._waiting.popleft()
        batch, size = [first], len(first.body)
        while self._waiting and len(batch) < self._max_events:
            candidate = self._waiting[0]
            if candidate.kind != first.kind or size + len(candidate.body) > self._max_bytes:
                break
            batch.append(self._waiting.popleft())
            size += len(candidate.body)
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                (only,) = batch
                await self._broker.publish_body(
                    only.body, kind=only.kind, message_id=only.message_id
                )
            else:
                await self._broker.publish_batch(
                    [w.body for w in batch], kind=batch[0].kind, message_id=uuid.uuid4().hex
                )
        except Exception as exc:  # none of them was confirmed
            failure = exc if isinstance(exc, PublishFailed) else PublishFailed(repr(exc))
            for waiting in batch:
                if not waiting.confirmed.done():  # a caller that gave up is not told
                    waiting.confirmed.set_exception(failure)
        else:
            for waiting in batch:
                if not waiting.confirmed.done():
                    waiting.confirmed.set_result(None)
        finally:
            PUBLISH_BATCH_SIZE.observe(len(batch))
            self._in_flight -= 1
            if self._waiting:
                self._send_next()
