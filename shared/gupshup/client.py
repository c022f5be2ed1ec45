"""Gupshup's send API, with every outcome classified for the at-most-once rule.

Gupshup has no idempotency key, so a request is retried only when it surely did not reach
Gupshup or was refused before being acted on:
- connection refused / DNS failure / a timeout before the request was written /
  429 / 502 / 503 -> NotReached (safe to retry);
- 2xx with a messageId -> Submitted;
- other 4xx -> Refused (retrying cannot help);
- a timeout or broken connection after the request was written, 500, 504 or a 2xx we
  cannot read -> Ambiguous: it may have been sent, so it is recorded, never retried.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp

from shared.identity import recipient
from shared.metrics import GUPSHUP_DURATION

NOT_REACHED_STATUSES = {429, 502, 503}


@dataclass(frozen=True)
class Submitted:
    """Gupshup accepted the message."""

    message_id: str


@dataclass(frozen=True)
class NotReached:
    """Gupshup surely did not act on the request: retrying is safe."""

    reason: str
    retry_after: float | None = None  # seconds, when Gupshup said how long to wait
    throttled: bool = False  # HTTP 429: the number is sending too fast, not a failure


@dataclass(frozen=True)
class Refused:
    """Gupshup rejected the request; retrying the same request cannot help."""

    status: int
    reason: str


@dataclass(frozen=True)
class Ambiguous:
    """The message may or may not have been sent."""

    reason: str


SendResult = Submitted | NotReached | Refused | Ambiguous


@dataclass
class _Attempt:
    """Whether this request's first bytes went out: a timeout before that is not ambiguous."""

    written: bool = False


async def _mark_written(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: object
) -> None:
    if isinstance(context.trace_request_ctx, _Attempt):
        context.trace_request_ctx.written = True


class GupshupClient:
    """A small client for Gupshup's WhatsApp session and template send calls."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(3.0, timeout_seconds)
        )
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            tracing = aiohttp.TraceConfig()
            tracing.on_request_headers_sent.append(_mark_written)
            self._session = aiohttp.ClientSession(timeout=self._timeout, trace_configs=[tracing])
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_session_message(
        self, *, api_key: str, app: str, source: str, destination: str, message: dict[str, Any]
    ) -> SendResult:
        """Send a free-form message (inside the 24-hour window); numbers as digits."""
        form = _send_form(app, source, destination, message=message)
        return await self._post("/wa/api/v1/msg", api_key, form)

    async def send_template_message(
        self,
        *,
        api_key: str,
        app: str,
        source: str,
        destination: str,
        template_id: str,
        params: list[str],
    ) -> SendResult:
        """Send an APPROVED template (allowed outside the 24-hour window)."""
        form = _send_form(app, source, destination, template={"id": template_id, "params": params})
        return await self._post("/wa/api/v1/template/msg", api_key, form)

    async def _post(self, path: str, api_key: str, form: dict[str, str]) -> SendResult:
        session = await self._http()
        started = time.perf_counter()
        attempt = _Attempt()
        try:
            async with session.post(
                self._base_url + path,
                data=form,
                headers={"apikey": api_key},
                trace_request_ctx=attempt,
            ) as response:
                # Undecodable bytes must not turn a classified answer into a crash.
                body = (await response.read()).decode("utf-8", errors="replace")
                return _classify(response.status, body, response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            return NotReached(f"cannot connect: {exc.os_error or exc}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            if not attempt.written:
                # e.g. a connect timeout: nothing reached Gupshup, so a retry is safe.
                return NotReached(f"{type(exc).__name__} before the request was sent")
            return Ambiguous(f"{type(exc).__name__} after the request was sent")
        finally:
            GUPSHUP_DURATION.observe(time.perf_counter() - started)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from APIs; the retry tiers decide instead


def _classify(status: int, body: str, retry_after: str | None = None) -> SendResult:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    message = str(data.get("message", "")) if isinstance(data, dict) else ""
    if 200 <= status < 300:
        message_id = data.get("messageId") if isinstance(data, dict) else None
        if isinstance(message_id, str) and message_id:
            return Submitted(message_id)
        return Ambiguous(f"HTTP {status} without a messageId")
    if status in NOT_REACHED_STATUSES:
        return NotReached(
            f"HTTP {status} {message}".strip(), _retry_after(retry_after), throttled=status == 429
        )
    if 400 <= status < 500:
        return Refused(status, message or f"HTTP {status}")
    return Ambiguous(f"HTTP {status} {message}".strip())


def _send_form(app: str, source: str, destination: str, **payload: object) -> dict[str, str]:
    """The form of a send from the app's number: the `message` or `template`, as JSON.

    `destination` is the lead's address: an E.164 number (sent as digits) when known, else
    their BSUID, which Gupshup takes in the same field. This is the one place that decides.
    """
    form = {
        "channel": "whatsapp",
        "source": source,
        "destination": recipient(destination),
        "src.name": app,
    }
    for field, value in payload.items():
        form[field] = json.dumps(value, ensure_ascii=False)
    return form
