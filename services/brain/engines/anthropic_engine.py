"""The Anthropic engine: Understand and Compose through Claude, one tool-forced call each.

Each layer makes exactly one `messages.create` call with `tool_choice` forcing its tool, so
the answer is structured: `record_understanding` for Understand, `send_reply` for Compose.
The tool input is validated with pydantic. Anything short of a valid answer (a timeout, an
API error, a refusal, a text answer, an input that does not validate) raises EngineFailure
with a short reason; the pipeline then falls back to the offline engine. The SDK does not
retry (`max_retries=0`): the pipeline owns fallbacks and budgets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

import anthropic
from anthropic.types import Message, MessageParam, TextBlockParam, ToolParam, ToolUseBlock
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.brain.engines import prompts
from services.brain.metrics import LLM_CALL_SECONDS, LLM_CALLS, LLM_TOKENS
from services.brain.reply.model import (
    Context,
    Decision,
    Draft,
    Intent,
    Profile,
    PropertyKind,
    Recall,
    Request,
    TimeAsked,
    Understanding,
)
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

Layer = Literal["understand", "compose"]
FailureReason = Literal[
    "timeout",  # no answer within the call's timeout
    "connection",  # the API could not be reached
    "rate_limited",  # 429
    "overloaded",  # 529
    "auth",  # 401, 403: the key is wrong or lacks permission
    "bad_request",  # another 4xx: our request was refused
    "api_error",  # 5xx or another API failure
    "refusal",  # the model declined to answer
    "invalid_output",  # no forced tool call, or its input does not validate
]
UNDERSTAND_TOOL = "record_understanding"
COMPOSE_TOOL = "send_reply"
MAX_BUBBLES = 3
# An exact time ("Sat 3pm") reads as the hour from then, as the offline engine reads it.
EXACT_SPAN = timedelta(hours=1)
# The prompt asks for bubbles under 300 characters and Guard enforces length; only an answer
# far beyond that is treated as broken here.
MAX_BUBBLE_CHARS = 1_000
DISTRICT = re.compile(r"^\s*(?:d|district\s*)?0?([1-9]|1\d|2[0-8])\s*$", re.IGNORECASE)
LANGUAGE = re.compile(r"^([a-z]{2})(?:[-_]([a-z]{2}))?$", re.IGNORECASE)


class EngineFailure(Exception):
    """The model gave no usable answer; `reason` says why in one bounded word."""

    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: FailureReason = reason
        self.detail = detail


@dataclass(frozen=True)
class CallUsage:
    """What one model call cost and how it ended."""

    layer: Layer
    org_id: str
    agent_id: str
    thread_id: str
    model: str
    outcome: str  # "ok" or an EngineFailure reason
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    seconds: float


UsageCallback = Callable[[CallUsage], None]
T = TypeVar("T")


class AnthropicEngine:
    """Understand and Compose through the Anthropic Messages API."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_seconds: float = 10.0,
        understand_max_tokens: int = 1_024,
        compose_max_tokens: int = 1_024,
        on_usage: UsageCallback | None = None,
        usage_history: int = 100,
    ) -> None:
        self.model = model
        self.timeout_seconds = timeout_seconds
        self._understand_max_tokens = understand_max_tokens
        self._compose_max_tokens = compose_max_tokens
        self._on_usage = on_usage
        # The latest calls' usage, newest last (bounded; for tests and debugging).
        self.last_usage: deque[CallUsage] = deque(maxlen=usage_history)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout_seconds: float = 10.0,
        on_usage: UsageCallback | None = None,
    ) -> AnthropicEngine:
        """The engine ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL and ANTHROPIC_MODEL configure."""
        if not settings.anthropic_api_key:
            raise ValueError("ANTHROPIC_API_KEY is not set: the offline engine answers")
        base_url = settings.anthropic_base_url
        return cls(
            api_key=settings.anthropic_api_key,
            model=settings.anthropic_model,
            base_url=str(base_url) if base_url is not None else None,
            timeout_seconds=timeout_seconds,
            on_usage=on_usage,
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def understand(self, context: Context) -> Understanding:
        """What the lead's new messages say, read by the model."""

        def parse(tool_input: dict[str, object]) -> Understanding:
            return UnderstandingAnswer.model_validate(tool_input).to_understanding(context)

        return await self._call(
            "understand",
            context,
            tool=understand_tool(),
            prompt=prompts.understand_prompt(context),
            max_tokens=self._understand_max_tokens,
            parse=parse,
        )

    async def compose(self, context: Context, recall: Recall, decision: Decision) -> Draft:
        """The reply's bubbles, written by the model in the agent's persona."""

        def parse(tool_input: dict[str, object]) -> Draft:
            return Draft(bubbles=ReplyAnswer.model_validate(tool_input).bubbles)

        return await self._call(
            "compose",
            context,
            tool=compose_tool(),
            prompt=prompts.compose_prompt(context, recall, decision),
            max_tokens=self._compose_max_tokens,
            parse=parse,
        )

    async def _call(
        self,
        layer: Layer,
        context: Context,
        *,
        tool: ToolParam,
        prompt: str,
        max_tokens: int,
        parse: Callable[[dict[str, object]], T],
    ) -> T:
        """One forced tool call, its input parsed; or EngineFailure (counted and timed)."""
        system: list[TextBlockParam] = [
            {
                "type": "text",
                "text": prompts.system_prompt(context.agent_name, context.persona),
                "cache_control": {"type": "ephemeral"},
            }
        ]
        messages: list[MessageParam] = [{"role": "user", "content": prompt}]
        started = time.monotonic()
        outcome, detail = "unexpected", ""
        response: Message | None = None
        try:
            # The SDK's own timeout bounds each phase of the request; this bounds the whole.
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._client.messages.create(
                    model=self.model,
                    max_tokens=max_tokens,
                    system=system,
                    messages=messages,
                    tools=[tool],
                    tool_choice={"type": "tool", "name": tool["name"]},
                )
            tool_input = forced_tool_input(response, tool["name"])
            try:
                result = parse(tool_input)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise EngineFailure("invalid_output", short(exc)) from exc
            outcome = "ok"
            return result
        except EngineFailure as failure:
            outcome, detail = failure.reason, failure.detail
            raise
        except (TimeoutError, anthropic.APITimeoutError) as exc:
            outcome, detail = "timeout", f"no answer within {self.timeout_seconds}s"
            raise EngineFailure("timeout", detail) from exc
        except anthropic.APIConnectionError as exc:
            outcome, detail = "connection", short(exc)
            raise EngineFailure("connection", detail) from exc
        except anthropic.APIStatusError as exc:
            reason = status_reason(exc.status_code)
            outcome, detail = reason, f"HTTP {exc.status_code}: {exc.api_message}"
            raise EngineFailure(reason, detail) from exc
        except anthropic.AnthropicError as exc:
            outcome, detail = "api_error", short(exc)
            raise EngineFailure("api_error", detail) from exc
        except asyncio.CancelledError:
            outcome = "cancelled"  # the pipeline's own budget ran out first
            raise
        finally:
            seconds = time.monotonic() - started
            LLM_CALLS.labels(layer, outcome).inc()
            LLM_CALL_SECONDS.labels(layer).observe(seconds)
            self._record_usage(layer, context, response, outcome, seconds)
            if outcome != "ok":
                log.warning(
                    "model call failed",
                    layer=layer,
                    outcome=outcome,
                    detail=detail,
                    org_id=context.org_id,
                    agent_id=context.agent_id,
                    thread_id=context.thread_id,
                    seconds=round(seconds, 3),
                )

    def _record_usage(
        self,
        layer: Layer,
        context: Context,
        response: Message | None,
        outcome: str,
        seconds: float,
    ) -> None:
        if response is None:
            return  # nothing was billed that we know of
        usage = response.usage
        record = CallUsage(
            layer=layer,
            org_id=context.org_id,
            agent_id=context.agent_id,
            thread_id=context.thread_id,
            model=response.model,
            outcome=outcome,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            seconds=seconds,
        )
        LLM_TOKENS.labels(layer, "input").inc(record.input_tokens)
        LLM_TOKENS.labels(layer, "output").inc(record.output_tokens)
        LLM_TOKENS.labels(layer, "cache_read").inc(record.cache_read_input_tokens)
        LLM_TOKENS.labels(layer, "cache_creation").inc(record.cache_creation_input_tokens)
        self.last_usage.append(record)
        if self._on_usage is not None:
            self._on_usage(record)


def forced_tool_input(response: Message, tool_name: str) -> dict[str, object]:
    """The input of the forced tool call, or EngineFailure when the model did not make it."""
    if response.stop_reason == "refusal":
        raise EngineFailure("refusal", "the model declined to answer")
    if response.stop_reason == "max_tokens":
        raise EngineFailure("invalid_output", "the answer was cut off at max_tokens")
    for block in response.content:
        if isinstance(block, ToolUseBlock) and block.name == tool_name:
            return block.input
    kinds = ", ".join(block.type for block in response.content) or "nothing"
    raise EngineFailure("invalid_output", f"expected a {tool_name} call, got {kinds}")


def status_reason(status: int) -> FailureReason:
    """The failure reason for an HTTP error status from the API."""
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if 400 <= status < 500:
        return "bad_request"
    return "api_error"


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception's message, on one line and bounded."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The tools: what the model must answer, and how its answer is validated. ---


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema that also accepts null."""
    return {"anyOf": [schema, {"type": "null"}]}


def understand_tool() -> ToolParam:
    """The tool Understand forces: every field of Understanding the model can judge."""
    sentiments = list(get_args(UnderstandingAnswer.model_fields["sentiment"].annotation))
    urgencies = list(get_args(UnderstandingAnswer.model_fields["urgency"].annotation))
    facts = {
        "type": "object",
        "description": "Qualifying facts the new messages state or change; null when not said.",
        "properties": {
            "name": nullable({"type": "string", "description": "The lead's own name."}),
            "intent": nullable({"type": "string", "enum": list(get_args(Intent))}),
            "budget": nullable(
                {"type": "integer", "minimum": 1, "description": "Whole currency units."}
            ),
            "area": nullable(
                {"type": "string", "description": "An area ('Tampines', 'East') or 'D15'."}
            ),
            "property_type": nullable({"type": "string", "enum": list(get_args(PropertyKind))}),
            "bedrooms": nullable({"type": "integer", "minimum": 0, "maximum": 20}),
            "timeline": nullable(
                {"type": "string", "description": "In the lead's words: 'in 3 months'."}
            ),
        },
    }
    when = {
        "type": "object",
        "properties": {
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "exact": {"type": "boolean"},
        },
        "required": ["start", "end", "exact"],
    }
    return {
        "name": UNDERSTAND_TOOL,
        "description": "Record what the lead's new messages say.",
        "input_schema": {
            "type": "object",
            "properties": {
                "facts": facts,
                "requests": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(get_args(Request))},
                    "description": "What the lead explicitly asks for; empty if nothing.",
                },
                "sentiment": {"type": "string", "enum": sentiments},
                "resistant": {
                    "type": "boolean",
                    "description": "True for 'just browsing', 'stop calling me' and the like.",
                },
                "urgency": {"type": "string", "enum": urgencies},
                "when": nullable(
                    {**when, "description": "A time the lead named, ISO 8601 with offset."}
                ),
                "picked_slot_number": nullable(
                    {
                        "type": "integer",
                        "minimum": 1,
                        "description": "The number of the offered slot the lead chose.",
                    }
                ),
                "district": nullable(
                    {"type": "string", "description": "D1 to D28, from a shared location."}
                ),
                "language": nullable(
                    {
                        "type": "string",
                        "description": "The lead's language code, when not the persona's.",
                    }
                ),
            },
            "required": ["facts", "requests", "sentiment", "resistant", "urgency"],
        },
    }


def compose_tool() -> ToolParam:
    """The tool Compose forces: the reply as 1 to 3 bubbles."""
    return {
        "name": COMPOSE_TOOL,
        "description": "Send the reply to the lead on WhatsApp, as 1 to 3 bubbles.",
        "input_schema": {
            "type": "object",
            "properties": {
                "bubbles": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": prompts.BUBBLE_TARGET_CHARS},
                    "minItems": 1,
                    "maxItems": MAX_BUBBLES,
                }
            },
            "required": ["bubbles"],
        },
    }


class Answer(BaseModel):
    """A model's tool input: unknown keys are ignored, known ones must be right."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class FactsAnswer(Answer):
    """The facts part of Understand's answer."""

    name: str | None = Field(default=None, max_length=80)
    intent: Intent | None = None
    budget: int | None = Field(default=None, gt=0)
    area: str | None = Field(default=None, max_length=60)
    property_type: PropertyKind | None = None
    bedrooms: int | None = Field(default=None, ge=0, le=20)
    timeline: str | None = Field(default=None, max_length=80)

    @field_validator("name", "area", "timeline", mode="after")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class WhenAnswer(Answer):
    """A time the lead named."""

    start: datetime
    end: datetime | None = None
    exact: bool = False


def _matched(pattern: re.Pattern[str], value: str | None, what: str) -> re.Match[str] | None:
    """The pattern's match at the start of a model's answer (None if it gave none).

    ValueError naming `what` when the answer is there but does not match.
    """
    if not value:
        return None
    match = pattern.match(value)
    if match is None:
        raise ValueError(f"not {what}: {value!r}")
    return match


class UnderstandingAnswer(Answer):
    """Understand's tool input."""

    facts: FactsAnswer = Field(default_factory=FactsAnswer)
    requests: list[Request] = Field(default_factory=list)
    sentiment: Literal["positive", "neutral", "negative"] = "neutral"
    resistant: bool = False
    urgency: Literal["low", "normal", "high"] = "normal"
    when: WhenAnswer | None = None
    picked_slot_number: int | None = Field(default=None, ge=1)
    district: str | None = None
    language: str | None = None

    @field_validator("district", mode="after")
    @classmethod
    def _district(cls, value: str | None) -> str | None:
        match = _matched(DISTRICT, value, "a Singapore postal district")
        return f"D{int(match.group(1))}" if match else None

    @field_validator("language", mode="after")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        match = _matched(LANGUAGE, value, "a language code")
        if match is None:
            return None
        primary, region = match.group(1).lower(), match.group(2)
        return f"{primary}-{region.upper()}" if region else primary

    def to_understanding(self, context: Context) -> Understanding:
        """The layer's typed output; ValueError when the answer does not fit this thread."""
        picked: int | None = None
        if self.picked_slot_number is not None:
            if self.picked_slot_number > len(context.offered):
                raise ValueError(
                    f"picked slot {self.picked_slot_number} of {len(context.offered)} offered"
                )
            picked = self.picked_slot_number - 1
        language = self.language
        if language and language.split("-")[0] == context.persona.language.split("-")[0]:
            language = None
        return Understanding(
            facts=Profile(**self.facts.model_dump(exclude_none=True)),
            requests=list(dict.fromkeys(self.requests)),
            sentiment=self.sentiment,
            resistant=self.resistant,
            urgency=self.urgency,
            when=self._time_asked(ZoneInfo(context.timezone)),
            picked_slot=picked,
            media=media_kinds(context),
            district=self.district,
            language=language,
        )

    def _time_asked(self, zone: ZoneInfo) -> TimeAsked | None:
        if self.when is None:
            return None
        # A time without an offset is the agent's local time, as the prompt asked.
        start = self.when.start
        start = start if start.tzinfo else start.replace(tzinfo=zone)
        end = self.when.end or start
        end = end if end.tzinfo else end.replace(tzinfo=zone)
        if self.when.exact:
            end = start + EXACT_SPAN
        if end < start:
            raise ValueError("the time named ends before it starts")
        return TimeAsked(
            start=start.astimezone(UTC), end=end.astimezone(UTC), exact=self.when.exact
        )


class ReplyAnswer(Answer):
    """Compose's tool input."""

    bubbles: list[str] = Field(min_length=1, max_length=MAX_BUBBLES)

    @field_validator("bubbles", mode="after")
    @classmethod
    def _bubbles(cls, value: list[str]) -> list[str]:
        bubbles = [b.strip() for b in value if b.strip()]
        if not bubbles:
            raise ValueError("every bubble is empty")
        if any(len(b) > MAX_BUBBLE_CHARS for b in bubbles):
            raise ValueError(f"a bubble is longer than {MAX_BUBBLE_CHARS} characters")
        return bubbles


def media_kinds(context: Context) -> list[str]:
    """The kinds of media among the lead's new messages, in order, once each."""
    kinds = [
        m.media_kind or m.type
        for m in context.new_messages
        if m.media_kind or m.type in ("image", "file", "audio", "video", "sticker")
    ]
    return list(dict.fromkeys(kinds))
