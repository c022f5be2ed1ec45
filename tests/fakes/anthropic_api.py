"""A local fake of Anthropic's Messages API, for tests that run the real `anthropic` SDK.

It serves `POST /v1/messages` with Anthropic's wire format: requests need `x-api-key: KEY`
or `Authorization: Bearer KEY` (the SDK sends either, depending on how the client is built)
and an `anthropic-version` header; answers are `message` objects with a `tool_use` block, and
failures are Anthropic's error JSON (`{"type": "error", "error": {"type", "message"}}`) with
its HTTP status. Every request is recorded (headers and JSON body) for assertions.

Usage:

    async with FakeAnthropic() as fake:
        fake.on_tool("send_reply", {"bubbles": ["Hi Rachel!"]})        # a fixed tool input
        fake.on_tool("record_understanding", lambda request: {...})   # or one per request
        fake.push(Delay(5.0), ApiError(529))  # one-shot outcomes, taken in order first
        engine = AnthropicEngine(api_key=fake.api_key, base_url=fake.base_url, model="m")
        ...
        assert fake.requests[0].body["model"] == "m"

An answer is decided for each request by, in order: the next pushed outcome, else the
handler registered for the request's forced tool (`tool_choice.name`), else a 500 naming
the missing script (also listed in `fake.unscripted`). Outcomes:

- `ToolAnswer(input)`: a `tool_use` of the forced tool (or `name`), `stop_reason` "tool_use";
  give it a wrong-shaped `input` to test malformed tool input.
- `TextAnswer(text)`: a text-only answer without `tool_use` (`stop_reason` "end_turn").
- `Refusal()`: `stop_reason` "refusal".
- `ApiError(status)`: 400 invalid_request_error, 401 authentication_error, 429
  rate_limit_error, 500 api_error, 529 overloaded_error (or any status and type).
- `Delay(seconds, then)`: wait, then answer `then` (or whatever would answer otherwise);
  longer than the client's timeout, it tests timeouts.

A handler may return a tool input (a dict) or any outcome. Usage tokens are estimated from
the sizes of the request and the answer unless the outcome sets them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class ToolAnswer:
    """A tool call answer; `name` defaults to the tool the request forced."""

    input: dict[str, Any]
    name: str | None = None
    stop_reason: str = "tool_use"
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class TextAnswer:
    """A text-only answer: no tool_use block."""

    text: str = "Sure, here is my answer in prose."


@dataclass(frozen=True)
class Refusal:
    """The model declines: stop_reason "refusal"."""

    text: str = ""


@dataclass(frozen=True)
class ApiError:
    """An error answer with Anthropic's error JSON."""

    status: int
    error_type: str | None = None
    message: str = "Injected by the fake Anthropic API."


@dataclass(frozen=True)
class Delay:
    """Wait, then answer `then` (None: what would answer without this delay)."""

    seconds: float
    then: Outcome | None = None


Outcome = ToolAnswer | TextAnswer | Refusal | ApiError | Delay


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    headers: dict[str, str]  # names lower-cased
    raw: str  # the body as sent
    body: dict[str, Any] = field(default_factory=dict)  # parsed JSON ({} when not JSON)

    @property
    def forced_tool(self) -> str | None:
        """The tool `tool_choice` forces, if it forces one."""
        choice = self.body.get("tool_choice") or {}
        return choice.get("name") if choice.get("type") == "tool" else None

    @property
    def system_text(self) -> str:
        """The system prompt's text, blocks joined."""
        system = self.body.get("system") or ""
        if isinstance(system, str):
            return system
        return "\n".join(block.get("text", "") for block in system)

    @property
    def user_text(self) -> str:
        """The text of every message, blocks joined."""
        texts: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            else:
                texts += [b.get("text", "") for b in content if b.get("type") == "text"]
        return "\n".join(texts)


Answerer = Callable[[RecordedRequest], "dict[str, Any] | Outcome"]


class FakeAnthropic:
    """An aiohttp server answering `POST /v1/messages` as scripted."""

    def __init__(self, api_key: str = "sk-ant-test-key", host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.responses: list[dict[str, Any]] = []  # the successful answers' JSON, in order
        self.unscripted: list[str] = []  # forced tools nothing was scripted for
        self._queue: deque[Outcome] = deque()
        self._handlers: dict[str, Answerer] = {}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """Where to point the SDK (`base_url`)."""
        return f"http://{self.host}:{self.port}"

    def on_tool(self, name: str, answer: dict[str, Any] | Outcome | Answerer) -> None:
        """Answer every request forcing tool `name` with this input, outcome or function."""
        if callable(answer):
            self._handlers[name] = answer
        else:
            fixed = answer
            self._handlers[name] = lambda _request: fixed

    def push(self, *outcomes: Outcome) -> None:
        """Answer the next requests with these outcomes, in order, whatever their tool."""
        self._queue.extend(outcomes)

    def requests_for(self, tool: str) -> list[RecordedRequest]:
        """The recorded requests that forced `tool`."""
        return [r for r in self.requests if r.forced_tool == tool]

    async def start(self) -> FakeAnthropic:
        """Serve on a free port in this event loop."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        # A client that gave up cancels its handler, so a long Delay does not outlive it.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _messages(self, request: web.Request) -> web.Response:
        raw = await request.text()
        recorded = RecordedRequest(
            headers={k.lower(): v for k, v in request.headers.items()}, raw=raw
        )
        self.requests.append(recorded)
        if not self._authenticated(recorded.headers):
            return error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in recorded.headers:
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return error(400, "invalid_request_error", "the request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_request_error", "the request body must be an object")
        recorded.body = body
        problem = request_problem(body)
        if problem:
            return error(400, "invalid_request_error", problem)
        return await self._answer(recorded, self._next_outcome(recorded))

    def _authenticated(self, headers: dict[str, str]) -> bool:
        return (
            headers.get("x-api-key") == self.api_key
            or headers.get("authorization") == f"Bearer {self.api_key}"
        )

    def _next_outcome(self, recorded: RecordedRequest) -> Outcome | None:
        if self._queue:
            return self._queue.popleft()
        return self._scripted(recorded)

    def _scripted(self, recorded: RecordedRequest) -> Outcome | None:
        handler = self._handlers.get(recorded.forced_tool or "")
        if handler is None:
            self.unscripted.append(recorded.forced_tool or "(no forced tool)")
            return None
        answer = handler(recorded)
        return ToolAnswer(answer) if isinstance(answer, dict) else answer

    async def _answer(self, recorded: RecordedRequest, outcome: Outcome | None) -> web.Response:
        if outcome is None:
            return error(500, "api_error", f"fake: nothing scripted for {recorded.forced_tool}")
        if isinstance(outcome, Delay):
            await asyncio.sleep(outcome.seconds)
            then = outcome.then if outcome.then is not None else self._scripted(recorded)
            return await self._answer(recorded, then)
        if isinstance(outcome, ApiError):
            kind = outcome.error_type or ERROR_TYPES.get(outcome.status, "api_error")
            return error(outcome.status, kind, outcome.message)
        content: list[dict[str, Any]]
        if isinstance(outcome, ToolAnswer):
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": outcome.name or recorded.forced_tool or "unknown",
                    "input": outcome.input,
                }
            ]
            stop_reason = outcome.stop_reason
            usage = (outcome.input_tokens, outcome.output_tokens)
        elif isinstance(outcome, TextAnswer):
            content = [{"type": "text", "text": outcome.text}]
            stop_reason, usage = "end_turn", (None, None)
        else:
            content = [{"type": "text", "text": outcome.text}] if outcome.text else []
            stop_reason, usage = "refusal", (None, None)
        answer = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": recorded.body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage[0] if usage[0] is not None else len(recorded.raw) // 4,
                "output_tokens": (
                    usage[1] if usage[1] is not None else max(1, len(json.dumps(content)) // 4)
                ),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        self.responses.append(answer)
        return web.json_response(answer, headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"})


def request_problem(body: dict[str, Any]) -> str | None:
    """Why the Messages API would refuse this body, or None."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    if body.get("stream"):
        return "stream: the fake answers only non-streaming requests"
    tools = body.get("tools") or []
    names = [tool.get("name") for tool in tools]
    if len(set(names)) != len(names):
        return "tools: tool names must be unique"
    for tool in tools:
        if not isinstance(tool.get("input_schema"), dict):
            return f"tools.{tool.get('name')}.input_schema: Field required"
        if tool["input_schema"].get("type") != "object":
            return f"tools.{tool.get('name')}.input_schema.type: must be 'object'"
    choice = body.get("tool_choice")
    if choice and choice.get("type") == "tool" and choice.get("name") not in names:
        return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    return None


def error(status: int, kind: str, message: str) -> web.Response:
    """Anthropic's error answer."""
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message}},
        status=status,
        headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
    )
