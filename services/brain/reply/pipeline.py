"""The five layers in order, each within its latency budget, each with its fallback.

Understand and Compose run on the configured engine (Anthropic or offline); when it fails
or is too slow, the offline engine answers that layer instead, and the fall-back is
counted. Recall, Decide and Guard are this code's own rules for every engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.brain.engines.offline import OfflineEngine
from services.brain.metrics import GUARD_BLOCKS, LAYER_FALLBACKS, LAYER_SECONDS
from services.brain.reply.decide import decide
from services.brain.reply.guard import guard, safe_reply
from services.brain.reply.model import (
    Context,
    Decision,
    Draft,
    Recall,
    Understanding,
)
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")


class Engine(Protocol):
    """The model-backed half of the layers."""

    name: str

    async def understand(self, context: Context) -> Understanding: ...

    async def compose(self, context: Context, recall: Recall, decision: Decision) -> Draft: ...


# A model call gives up after this; each layer's budget leaves room for the fallback.
LLM_TIMEOUT_SECONDS = 8.0


@dataclass(frozen=True)
class Budgets:
    """Latency budgets per model-backed layer, in seconds."""

    understand: float = LLM_TIMEOUT_SECONDS + 1
    recall: float = 3.0
    compose: float = LLM_TIMEOUT_SECONDS + 1


class Pipeline:
    """Understand, Recall, Decide, Compose, Guard."""

    def __init__(self, engine: Engine, budgets: Budgets | None = None) -> None:
        self.engine = engine
        self.offline = OfflineEngine()
        self.budgets = budgets or Budgets()

    async def understand(self, context: Context) -> tuple[Understanding, str]:
        """What the lead said, from the engine or, failing that, the rules."""
        return await self._layer(
            "understand",
            self.budgets.understand,
            lambda engine: engine.understand(context),
        )

    async def compose(
        self, context: Context, recall: Recall, decision: Decision
    ) -> tuple[Draft, str]:
        """The reply's bubbles, from the engine or, failing that, the templates."""
        return await self._layer(
            "compose",
            self.budgets.compose,
            lambda engine: engine.compose(context, recall, decision),
        )

    async def recall(
        self,
        read: Callable[[], Awaitable[Recall]],
        context: Context,
        understanding: Understanding,
    ) -> Recall:
        """What the reply may cite; if the reads fail or are slow, only what the lead said.

        Without listings or free slots the rules cannot offer any, so the fallback reply
        asks or acknowledges instead of inventing: safe, and counted.
        """
        started = time.perf_counter()
        try:
            recall = await asyncio.wait_for(read(), timeout=self.budgets.recall)
        except Exception as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            LAYER_FALLBACKS.labels("recall", "store", reason).inc()
            log.warning("recall failed, replying from the conversation only", reason=reason)
            recall = Recall(
                profile=context.profile.merged(understanding.facts),
                colleague_threads=context.colleague_threads,
                complete=False,
            )
        LAYER_SECONDS.labels("recall", "store").observe(time.perf_counter() - started)
        return recall

    def decide(self, context: Context, understanding: Understanding, recall: Recall) -> Decision:
        """The next action, by rules."""
        started = time.perf_counter()
        decision = decide(context, understanding, recall)
        LAYER_SECONDS.labels("decide", "rules").observe(time.perf_counter() - started)
        return decision

    async def finish(
        self, context: Context, recall: Recall, decision: Decision, draft: Draft, engine: str
    ) -> tuple[list[str], list[str], str]:
        """Guard the draft; a blocked one is replaced by the offline reply, else a safe one."""
        started = time.perf_counter()
        verdict = guard(context, recall, decision, draft)
        if not verdict.bubbles and engine != self.offline.name:
            for reason in verdict.blocked:
                GUARD_BLOCKS.labels(reason).inc()
            log.warning("reply blocked by guard", reasons=verdict.blocked, engine=engine)
            fallback = await self.offline.compose(context, recall, decision)
            again = guard(context, recall, decision, fallback)
            blocked = [*verdict.blocked, *again.blocked]
            verdict, engine = again.model_copy(update={"blocked": blocked}), self.offline.name
        if not verdict.bubbles:
            for reason in verdict.blocked:
                GUARD_BLOCKS.labels(reason).inc()
            verdict = verdict.model_copy(update={"bubbles": safe_reply(context)})
            engine = "safe"
        LAYER_SECONDS.labels("guard", "rules").observe(time.perf_counter() - started)
        return verdict.bubbles, verdict.blocked, engine

    async def _layer(
        self,
        layer: str,
        budget: float,
        call: Callable[[Engine], Awaitable[T]],
    ) -> tuple[T, str]:
        engine: Engine = self.engine
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(call(engine), timeout=budget)
        except Exception as exc:
            if engine is self.offline or isinstance(engine, OfflineEngine):
                raise
            reason = "timeout" if isinstance(exc, TimeoutError) else _reason(exc)
            LAYER_FALLBACKS.labels(layer, engine.name, reason).inc()
            log.warning("engine failed, offline engine answers", layer=layer, reason=reason)
            started = time.perf_counter()
            result = await call(self.offline)
            engine = self.offline
        LAYER_SECONDS.labels(layer, engine.name).observe(time.perf_counter() - started)
        return result, engine.name


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else type(exc).__name__


def engine_from(settings: Settings) -> Engine:
    """The Anthropic engine when ANTHROPIC_API_KEY is set, else the offline engine."""
    if not settings.anthropic_api_key:
        return OfflineEngine()
    from services.brain.engines.anthropic_engine import AnthropicEngine

    return AnthropicEngine.from_settings(settings, timeout_seconds=LLM_TIMEOUT_SECONDS)
