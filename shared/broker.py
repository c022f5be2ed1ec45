"""The only module that talks to RabbitMQ.

Topology (every name starts with the configured prefix):
- one topic exchange `<prefix>.events`; a message's routing key is its model's `kind`;
- per stage a durable quorum queue `<prefix>.<stage>` bound to the kinds it consumes (any
  version: `send.command.*`), its dead-letter queue `<prefix>.<stage>.dead`, and delay-tier
  queues `<prefix>.<stage>.delay.<ms>ms` whose expired messages return to the stage queue.
What a stage consumes is written once, on the models (`Event.consumed_by`); the bindings
(`STAGE_BINDINGS`) are derived from them. A stage's `__main__` hands `consume` its
`Subscriptions`, one handler per model, and the broker parses each message by its `kind`
into that model and calls that handler (starting fails if a model is left unhandled).
Publishes are persistent, mandatory and confirmed. A consumer acks only after its handler
(and the handler's own confirmed publishes) finished; a failure is retried through the delay
tiers with the attempt count in the `x-attempt` header, then dead-lettered with its reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, Union

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPConnectionError
from pamqp.commands import Basic
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)

from shared.errors import Defer, PermanentError
from shared.logs import get_logger
from shared.metrics import DEAD_LETTERED, HANDLER_DURATION, IN_FLIGHT, MESSAGES_PROCESSED
from shared.models import AgentChanged, Event
from shared.settings import Settings

log = get_logger(__name__)

E = TypeVar("E", bound=Event)


def _event_models(base: type[Event] = Event) -> Iterator[type[Event]]:
    for model in base.__subclasses__():
        yield model
        yield from _event_models(model)


def _kind_of(model: type[Event]) -> str:
    """The `kind` a model's messages carry (its routing key)."""
    return str(model.model_fields["kind"].default)


def consumed_models(stage: str) -> tuple[type[Event], ...]:
    """The message models whose `consumed_by` names `stage`."""
    return tuple(m for m in _event_models() if m.consumed_by == stage)


def stage_bindings() -> dict[str, tuple[str, ...]]:
    """Each stage's topic patterns (any version of each kind it consumes), from the models."""
    bindings: dict[str, tuple[str, ...]] = {}
    for model in _event_models():
        if model.consumed_by is not None:
            pattern = _kind_of(model).rsplit(".", 1)[0] + ".*"
            bindings[model.consumed_by] = (*bindings.get(model.consumed_by, ()), pattern)
    return bindings


# Every stage and the kinds it consumes, derived from the models.
STAGE_BINDINGS: dict[str, tuple[str, ...]] = stage_bindings()
# Event fields bound to every log line written while the event is handled.
LOG_CONTEXT = ("org_id", "agent_id", "thread_id", "event_id")
DELIVERY_LIMIT = 10  # crash loops on one message end in the dead-letter queue
# The AMQP type of a message carrying several events of one kind (`{"events": [...]}`);
# consumers handle each event as if it had come alone.
BATCH_TYPE = "batch.v1"
MAX_REASON_CHARS = 2000


class PublishFailed(Exception):
    """The broker did not confirm a publish (unreachable, unroutable or refused)."""


@dataclass(frozen=True)
class Subscription(Generic[E]):
    """One message model and the async function that handles each message of it."""

    model: type[E]
    handler: Callable[[E], Awaitable[None]]


class Subscriptions:
    """A stage's whole table: every model it consumes, each with its handler.

    The stage is the one the models name (`consumed_by`); a table that leaves one of the
    stage's models unhandled, or names a model of another stage, is refused at start.
    """

    def __init__(self, *subscriptions: Subscription[Any]) -> None:
        stages = {s.model.consumed_by for s in subscriptions}
        if len(stages) != 1 or None in stages:
            raise ValueError(f"one stage's models expected, got stages {sorted(map(str, stages))}")
        self.stage: str = str(stages.pop())
        self.handlers: dict[type[Event], Callable[[Any], Awaitable[None]]] = {
            s.model: s.handler for s in subscriptions
        }
        missing = set(consumed_models(self.stage)) - set(self.handlers)
        if missing:
            names = ", ".join(sorted(m.__name__ for m in missing))
            raise ValueError(f"stage {self.stage!r} has no handler for {names}")
        models: Any = tuple(self.handlers)
        # One model is parsed as itself; several by their `kind` (a discriminated union).
        model: Any = (
            models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
        )
        self.adapter: TypeAdapter[Event] = TypeAdapter(model)

    async def dispatch(self, event: Event) -> None:
        """Hand an event to its model's handler."""
        await self.handlers[type(event)](event)


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue, derived from the prefix."""

    prefix: str
    delay_tiers_ms: tuple[int, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        """The topology the settings describe."""
        tiers = {*settings.retry_delays_ms, settings.lease_busy_retry_ms}
        if settings.burst_quiet_seconds > 0:  # a burst's work item waits the quiet period
            tiers.add(int(settings.burst_quiet_seconds * 1000))
        return cls(settings.broker_prefix, tuple(sorted(tiers)))

    @property
    def exchange(self) -> str:
        """The topic exchange every event is published to."""
        return f"{self.prefix}.events"

    @property
    def config_exchange(self) -> str:
        """The fanout exchange that tells every process about configuration changes."""
        return f"{self.prefix}.config"

    def queue(self, stage: str) -> str:
        """The work queue of a stage."""
        return f"{self.prefix}.{stage}"

    def dead_letter_queue(self, stage: str) -> str:
        """Where a stage's failed messages wait with their reason."""
        return f"{self.prefix}.{stage}.dead"

    def delay_queue(self, stage: str, delay_ms: int) -> str:
        """A queue that returns messages to the stage after `delay_ms`."""
        return f"{self.prefix}.{stage}.delay.{delay_ms}ms"

    def tier_for(self, delay_ms: int) -> int:
        """The shortest declared delay tier at least `delay_ms` long (or the longest)."""
        return next((t for t in self.delay_tiers_ms if t >= delay_ms), self.delay_tiers_ms[-1])


def wire_body(event: BaseModel) -> bytes:
    """An event as it crosses the broker: JSON without the fields left at their defaults.

    A field added to a model later (optional, with a default) is then absent from messages
    that do not use it, so a consumer still on the previous version of the model, which
    refuses unknown fields, keeps accepting them during a rolling update. The kind always
    travels: consumers pick the model by it.
    """
    body = event.model_dump(mode="json", exclude_defaults=True)
    body["kind"] = getattr(event, "kind")  # noqa: B009 - every event model has a kind
    return json.dumps(body, separators=(",", ":")).encode()


def _attempt(message: Delivery) -> int:
    """How many times this message was already retried (carried in its headers)."""
    value = (message.headers or {}).get("x-attempt", 0)
    return value if isinstance(value, int) else 0


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _dead_letters_to(queue: str) -> dict[str, Any]:
    """Arguments that move what a quorum queue drops to `queue`, at least once.

    At-least-once dead-lettering needs `reject-publish` overflow: a full queue then refuses
    publishes (unconfirmed, so retried) instead of dropping its oldest messages.
    """
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass
class _Part:
    """One event of a batch, handled (retried, dead-lettered) like a message of its own."""

    body: bytes
    message_id: str | None
    type: str | None
    routing_key: str | None
    timestamp: datetime | None
    content_type: str = "application/json"
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, batch: AbstractIncomingMessage, item: object) -> _Part:
        """The part of `batch` that `item` (one decoded event) is."""
        fields = item if isinstance(item, dict) else {}
        event_id, kind = fields.get("event_id"), fields.get("kind")
        return cls(
            body=json.dumps(item, separators=(",", ":")).encode(),
            message_id=event_id if isinstance(event_id, str) else None,
            type=kind if isinstance(kind, str) else None,
            routing_key=batch.routing_key,
            timestamp=batch.timestamp,
        )

    async def ack(self) -> None:
        """Nothing to do: the batch is acked once every part is handled."""


Delivery = AbstractIncomingMessage | _Part


class Broker:
    """A connection to RabbitMQ with a confirming publisher and stage consumers."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.topology = Topology.from_settings(settings)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: list[tuple[AbstractQueue, str, AbstractChannel]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def connect(self, *, wait: bool = False) -> None:
        """Open a self-healing connection and a confirming publish channel.

        With `wait`, keep trying (pauses growing to 10 s) until the broker answers, so a
        service started during a broker outage comes up by itself afterwards.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((ConnectionError, OSError, AMQPConnectionError)),
            stop=stop_never if wait else stop_after_attempt(1),
            wait=wait_exponential(multiplier=0.5, max=10),
            before_sleep=lambda state: log.warning(
                "broker unreachable, retrying",
                error=str(state.outcome.exception()) if state.outcome else None,
            ),
            reraise=True,
        ):
            with attempt:
                connection = await aio_pika.connect_robust(
                    str(self.settings.amqp_url),
                    client_properties={"connection_name": f"realtybot-{self.service}"},
                    timeout=10,
                )
        self._connection = connection
        self._publish_channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await self._publish_channel.get_exchange(
            self.topology.exchange, ensure=False
        )

    def is_ready(self) -> bool:
        """True while the connection and the publish channel are open."""
        return bool(
            self._connection
            and not self._connection.is_closed
            and self._publish_channel
            and not self._publish_channel.is_closed
        )

    async def close(self) -> None:
        """Close the connection (unacked messages return to their queues)."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def declare_topology(self) -> None:
        """Declare every exchange and queue; safe to run any number of times."""
        assert self._connection is not None, "connect() first"
        t = self.topology
        async with self._connection.channel() as channel:
            exchange = await channel.declare_exchange(
                t.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await channel.declare_exchange(
                t.config_exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
            for stage, patterns in STAGE_BINDINGS.items():
                await channel.declare_queue(
                    t.dead_letter_queue(stage), durable=True, arguments=_quorum()
                )
                queue = await channel.declare_queue(
                    t.queue(stage),
                    durable=True,
                    arguments=_quorum(
                        **_dead_letters_to(t.dead_letter_queue(stage)),
                        **{"x-delivery-limit": DELIVERY_LIMIT},
                    ),
                )
                for pattern in patterns:
                    await queue.bind(exchange, routing_key=pattern)
                for delay in t.delay_tiers_ms:
                    await channel.declare_queue(
                        t.delay_queue(stage, delay),
                        durable=True,
                        arguments=_quorum(
                            **_dead_letters_to(t.queue(stage)), **{"x-message-ttl": delay}
                        ),
                    )

    async def publish(
        self, event: BaseModel, *, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        """Publish an event to the exchange and wait for the broker's confirm."""
        kind = str(getattr(event, "kind"))  # noqa: B009 - every event model has a kind
        await self.publish_body(wire_body(event), kind=kind, message_id=message_id, headers=headers)

    async def publish_body(
        self,
        body: bytes,
        *,
        kind: str,
        message_id: str,
        headers: dict[str, Any] | None = None,
        batch: bool = False,
    ) -> None:
        """Publish an event already in its wire form (`batch`: a batch of them, see
        `publish_batch`) and wait for the broker's confirm."""
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            type=BATCH_TYPE if batch else kind,
            headers=headers or {},
            timestamp=datetime.now(UTC),
        )
        if self._exchange is None:
            raise PublishFailed("not connected to the broker")
        await self._confirmed(self._exchange, message, kind)

    async def publish_batch(self, bodies: list[bytes], *, kind: str, message_id: str) -> None:
        """Publish several events of one kind, in their wire form, as one confirmed message.

        Routed like a single event of that kind; the consuming stage handles each event on
        its own (retries, dead letters), then acks the whole.
        """
        body = b'{"events":[' + b",".join(bodies) + b"]}"
        await self.publish_body(
            body,
            kind=kind,
            message_id=message_id,
            headers={"x-batch-size": len(bodies)},
            batch=True,
        )

    async def publish_after(
        self, event: BaseModel, *, stage: str, delay_ms: int, message_id: str
    ) -> None:
        """Publish an event straight to a stage's delay tier: it reaches the stage later.

        The tier is the shortest declared one at least `delay_ms` long.
        """
        kind = str(getattr(event, "kind"))  # noqa: B009 - every event model has a kind
        message = aio_pika.Message(
            wire_body(event),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            type=kind,
            timestamp=datetime.now(UTC),
        )
        queue = self.topology.delay_queue(stage, self.topology.tier_for(delay_ms))
        await self._publish_to_queue(queue, message)

    async def broadcast_config_change(self, change: AgentChanged) -> None:
        """Tell every running process that an agent's configuration changed."""
        if self._publish_channel is None:
            raise PublishFailed("not connected to the broker")
        exchange = await self._publish_channel.get_exchange(
            self.topology.config_exchange, ensure=False
        )
        message = aio_pika.Message(
            wire_body(change),
            content_type="application/json",
            type=change.kind,
            message_id=change.event_id,
        )
        # Not mandatory: with no process running, nobody has anything cached to drop.
        await self._confirmed(exchange, message, "", mandatory=False)

    async def on_config_change(self, callback: Callable[[AgentChanged], None]) -> None:
        """Call `callback` for every configuration change broadcast while this process runs."""
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.topology.config_exchange)

        async def on_message(message: AbstractIncomingMessage) -> None:
            async with message.process(ignore_processed=True):
                try:
                    change = AgentChanged.model_validate_json(message.body)
                except ValidationError:
                    log.warning("ignoring an unreadable configuration change")
                    return
                callback(change)

        await queue.consume(on_message)

    async def _publish_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        if self._publish_channel is None:
            raise PublishFailed("not connected to the broker")
        await self._confirmed(self._publish_channel.default_exchange, message, queue)

    async def _confirmed(
        self,
        exchange: AbstractExchange,
        message: aio_pika.Message,
        routing_key: str,
        *,
        mandatory: bool = True,
    ) -> None:
        try:
            confirm = await exchange.publish(
                message,
                routing_key=routing_key,
                mandatory=mandatory,
                timeout=self.settings.publish_timeout_seconds,
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        except RuntimeError as exc:  # aio-pika: channel closed or connection reconnecting
            raise PublishFailed(str(exc)) from exc
        if not isinstance(confirm, Basic.Ack):
            raise PublishFailed(f"broker refused the message ({type(confirm).__name__})")

    async def consume(self, subscriptions: Subscriptions) -> None:
        """Start handling the stage's queue; each message is acked once fully handled."""
        assert self._connection is not None, "connect() first"
        stage = subscriptions.stage
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.settings.broker_prefetch)
        # Declared (passively) rather than looked up: the robust channel then restores the
        # queue and this consumer after a reconnect (a broker restart, say).
        queue = await channel.declare_queue(self.topology.queue(stage), passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            self._in_flight += 1
            self._idle.clear()
            IN_FLIGHT.labels(self.service).inc()
            started = time.perf_counter()
            try:
                await self._handle(message, subscriptions)
            finally:
                HANDLER_DURATION.labels(self.service).observe(time.perf_counter() - started)
                IN_FLIGHT.labels(self.service).dec()
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        tag = await queue.consume(on_message)
        self._consumers.append((queue, tag, channel))

    async def _handle(self, message: Delivery, subscriptions: Subscriptions) -> None:
        stage = subscriptions.stage
        if message.type == BATCH_TYPE and not isinstance(message, _Part):
            await self._handle_batch(message, subscriptions)
            return
        try:
            event = subscriptions.adapter.validate_json(message.body)
        except ValidationError as exc:
            await self._dead_letter(stage, message, f"unparseable message: {exc}", "unparseable")
            return
        context = {key: getattr(event, key) for key in LOG_CONTEXT if hasattr(event, key)}
        with structlog.contextvars.bound_contextvars(**context):
            await self._run_handler(stage, message, event, subscriptions.dispatch)

    async def _handle_batch(
        self, message: AbstractIncomingMessage, subscriptions: Subscriptions
    ) -> None:
        """Handle each event of a batch as its own message, then ack the batch.

        An event that fails is retried or dead-lettered alone, as a message of its own; the
        others are not held back. A crash midway redelivers the whole batch, so its events
        may be handled twice, as any redelivered message may.
        """
        try:
            items = json.loads(message.body)["events"]
            if not isinstance(items, list):
                raise TypeError("events is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"unparseable batch: {type(exc).__name__}: {exc}"
            await self._dead_letter(subscriptions.stage, message, reason, "unparseable")
            return
        for item in items:
            await self._handle(_Part.of(message, item), subscriptions)
        await message.ack()

    async def _run_handler(
        self,
        stage: str,
        message: Delivery,
        event: Event,
        handler: Callable[[Event], Awaitable[None]],
    ) -> None:
        attempt = _attempt(message)
        try:
            await handler(event)
        except Defer as exc:
            delay = exc.delay_ms or self.settings.lease_busy_retry_ms
            await self._delay(stage, message, delay, attempt, str(exc))
            MESSAGES_PROCESSED.labels(self.service, "deferred").inc()
            return
        except PermanentError as exc:
            await self._dead_letter(
                stage, message, f"{type(exc).__name__}: {exc}", type(exc).__name__
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            delays = self.settings.retry_delays_ms
            if attempt >= len(delays):
                log.error("giving up", stage=stage, attempts=attempt + 1, reason=reason)
                await self._dead_letter(stage, message, reason, type(exc).__name__)
                return
            log.warning(
                "handler failed, will retry",
                stage=stage,
                attempt=attempt + 1,
                delay_ms=delays[attempt],
                reason=reason,
                exc_info=exc,
            )
            await self._delay(stage, message, delays[attempt], attempt + 1, reason)
            MESSAGES_PROCESSED.labels(self.service, "retried").inc()
            return
        await message.ack()
        MESSAGES_PROCESSED.labels(self.service, "ok").inc()

    def _copy(self, message: Delivery, headers: dict[str, Any]) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            type=message.type,
            headers={**(message.headers or {}), **headers},
            timestamp=message.timestamp,
        )

    async def _delay(
        self,
        stage: str,
        message: Delivery,
        delay_ms: int,
        attempt: int,
        reason: str,
    ) -> None:
        queue = self.topology.delay_queue(stage, self.topology.tier_for(delay_ms))
        copy = self._copy(
            message, {"x-attempt": attempt, "x-last-error": reason[:MAX_REASON_CHARS]}
        )
        await self._publish_to_queue(queue, copy)
        await message.ack()

    async def _dead_letter(
        self, stage: str, message: Delivery, reason: str, reason_label: str
    ) -> None:
        copy = self._copy(
            message,
            {
                "x-dead-reason": reason[:MAX_REASON_CHARS],
                "x-dead-stage": stage,
                "x-dead-at": datetime.now(UTC).isoformat(),
                "x-original-routing-key": message.routing_key or "",
            },
        )
        await self._publish_to_queue(self.topology.dead_letter_queue(stage), copy)
        await message.ack()
        DEAD_LETTERED.labels(self.service, reason_label).inc()
        MESSAGES_PROCESSED.labels(self.service, "dead_lettered").inc()
        log.error("dead-lettered", stage=stage, reason=reason[:300], message_id=message.message_id)

    async def stop_consuming(self, grace_seconds: float) -> None:
        """Stop taking new messages and wait (bounded) for in-flight ones to finish."""
        for queue, tag, _channel in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # the channel may already be gone; nothing is lost
                log.warning("consumer cancel failed", error=str(exc))
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_seconds)
        except TimeoutError:
            log.warning("in-flight messages handed back to the broker", count=self._in_flight)
        for _queue, _tag, channel in self._consumers:
            await channel.close()
        self._consumers.clear()

    async def fetch(self, queue: str, timeout: float = 5.0) -> AbstractIncomingMessage | None:
        """Take one message from a queue (acked), waiting up to `timeout` seconds."""
        assert self._connection is not None, "connect() first"
        deadline = time.monotonic() + timeout
        async with self._connection.channel() as channel:
            q = await channel.get_queue(queue, ensure=False)
            while True:
                message = await q.get(fail=False, no_ack=True)
                if message is not None or time.monotonic() >= deadline:
                    return message
                await asyncio.sleep(0.05)

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in a queue."""
        assert self._connection is not None, "connect() first"
        async with self._connection.channel() as channel:
            q = await channel.declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count or 0)

    async def replay_dead_letters(self, stage: str, limit: int | None = None) -> int:
        """Move dead-lettered messages back to their stage's queue with a fresh retry budget."""
        assert self._connection is not None, "connect() first"
        replayed = 0
        async with self._connection.channel() as channel:
            dead = await channel.get_queue(self.topology.dead_letter_queue(stage), ensure=False)
            while limit is None or replayed < limit:
                message = await dead.get(fail=False, no_ack=False)
                if message is None:
                    break
                headers = {
                    key: value
                    for key, value in (message.headers or {}).items()
                    if not key.startswith("x-") or key == "x-original-routing-key"
                }
                headers["x-replayed-at"] = datetime.now(UTC).isoformat()
                copy = aio_pika.Message(
                    message.body,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    type=message.type,
                    headers=headers,
                    timestamp=message.timestamp,
                )
                # Confirmed in the stage's queue before it leaves the dead-letter queue.
                await self._publish_to_queue(self.topology.queue(stage), copy)
                await message.ack()
                replayed += 1
        log.info("dead letters replayed", stage=stage, count=replayed)
        return replayed

    async def delete_topology(self) -> None:
        """Delete every queue and the exchange of this prefix (tests and teardown)."""
        assert self._connection is not None, "connect() first"
        t = self.topology
        async with self._connection.channel() as channel:
            for stage in STAGE_BINDINGS:
                names = [t.queue(stage), t.dead_letter_queue(stage)]
                names += [t.delay_queue(stage, d) for d in t.delay_tiers_ms]
                for name in names:
                    await channel.queue_delete(name)
            await channel.exchange_delete(t.exchange)
            await channel.exchange_delete(t.config_exchange)
