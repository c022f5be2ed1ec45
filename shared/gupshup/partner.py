"""Gupshup's Partner API: login, app tokens, callback subscription, BSUID flags and templates.

The partner token (Gupshup keeps it valid for 24 h) is cached for 23 h, each app's token until
Gupshup refuses it. A 401 drops the refused token and the call is tried once more with a fresh
one (logging in again if need be); a second 401 is a PartnerError. Other outcomes:
- no answer (connection refused, DNS failure, timeout), 429 or 5xx -> PartnerUnavailable: try
  later. A create_template that timed out may have been applied for; trying it again then
  raises TemplateExists, and list_templates shows the template;
- 400 "Template Already exists ..." -> TemplateExists;
- any other refusal, or an answer without the expected fields -> PartnerError.
Messages carry Gupshup's own message and never a token or the password.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

PARTNER_TOKEN_TTL_SECONDS = 23 * 3600
DEFAULT_MODES = "MESSAGE,EVENTS,TEMPLATE,ACCOUNT,BILLING,SENT,DELIVERED,READ,FAILED,ENQUEUED,OTHERS"
MAX_VERTICAL_CHARS = 180


class PartnerError(Exception):
    """Gupshup's Partner API refused a call; `status` is None when there was no answer."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message if status is None else f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class TemplateExists(PartnerError):
    """The app already has a template with this name and language."""


class PartnerUnavailable(PartnerError):
    """Gupshup could not be reached or asked us to come back later (429, 5xx)."""


@dataclass(frozen=True)
class PartnerTemplate:
    """A WhatsApp template as Gupshup lists it; `status` is upper-case (APPROVED, PENDING ...)."""

    id: str
    name: str
    language: str
    category: str
    status: str
    reason: str | None
    body: str


@dataclass(frozen=True)
class PartnerSubscription:
    """Where Gupshup posts an app's callbacks, and which of them."""

    id: str
    url: str
    version: int
    modes: tuple[str, ...]
    tag: str


@dataclass
class _CachedToken:
    value: str
    expires_at: float


class PartnerClient:
    """A small client for the Partner API calls the product makes; `base_url` excludes /partner."""

    def __init__(
        self,
        base_url: str,
        email: str,
        password: str,
        timeout_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._email = email
        self._password = password
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(3.0, timeout_seconds)
        )
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._partner_token: _CachedToken | None = None
        self._app_tokens: dict[str, str] = {}
        # Gupshup allows 10 logins a minute: concurrent callers share one login.
        self._login_lock = asyncio.Lock()
        self._app_token_lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def login(self) -> str:
        """The partner token, logging in unless one younger than 23 h is cached."""
        async with self._login_lock:
            cached = self._partner_token
            if cached is not None and self._clock() < cached.expires_at:
                return cached.value
            status, data = await self._request(
                "POST",
                "/partner/account/login",
                form={"email": self._email, "password": self._password},
            )
            _raise_for_refusal(status, data, "partner login")
            token = _string(data.get("token"), status, "partner login answered without a token")
            self._partner_token = _CachedToken(token, self._clock() + PARTNER_TOKEN_TTL_SECONDS)
            log.info("gupshup_partner_login")
            return token

    async def app_token(self, app_id: str) -> str:
        """The app's access token, fetched once and kept until Gupshup refuses it."""
        async with self._app_token_lock:
            cached = self._app_tokens.get(app_id)
            if cached is not None:
                return cached
            data = await self._authorized(
                "GET",
                f"/partner/app/{_segment(app_id)}/token",
                get_token=self.login,
                forget_token=self._forget_partner_token,
            )
            token_field = data.get("token")
            token = _string(
                token_field.get("token") if isinstance(token_field, dict) else None,
                200,
                "app token answer without a token",
            )
            self._app_tokens[app_id] = token
            return token

    async def subscribe(
        self,
        app_id: str,
        url: str,
        *,
        version: int = 2,
        modes: str = DEFAULT_MODES,
        tag: str = "realtybot",
        show_on_ui: bool = False,
    ) -> PartnerSubscription:
        """Make Gupshup post the app's callbacks (`modes`, in format `version`) to `url`."""
        data = await self._app_call(
            app_id,
            "POST",
            "subscription",
            form={
                "modes": modes,
                "tag": tag,
                "showOnUI": "true" if show_on_ui else "false",
                "url": url,
                "version": str(version),
            },
        )
        record = data.get("subscription")
        if not isinstance(record, dict):
            raise PartnerError(200, "subscription answer without a subscription")
        raw_modes = record.get("modes", [])
        return PartnerSubscription(
            id=_string(record.get("id"), 200, "subscription without an id"),
            url=_string(record.get("url"), 200, "subscription without a url"),
            version=_integer(record.get("version"), default=version),
            modes=tuple(str(mode) for mode in raw_modes) if isinstance(raw_modes, list) else (),
            tag=str(record.get("tag", tag)),
        )

    async def enable_bsuid(self, app_id: str) -> None:
        """Make Gupshup put business-scoped user IDs in the app's v2 and v3 webhooks."""
        await self._app_call(
            app_id,
            "PUT",
            "config/bsuid",
            json_body={"enableBSUID": True, "enableBSUIDV3": True},
        )

    async def create_template(
        self,
        app_id: str,
        name: str,
        language: str,
        category: str,
        body: str,
        example: str,
        *,
        vertical: str | None = None,
    ) -> PartnerTemplate:
        """Apply for a TEXT template; `example` is `body` with sample values for {{1}}, {{2}} ..."""
        data = await self._app_call(
            app_id,
            "POST",
            "templates",
            form={
                "elementName": name,
                "languageCode": language,
                "category": category,
                "templateType": "TEXT",
                # Gupshup wants a short description of the use for Meta's review.
                "vertical": vertical or name.replace("_", " ")[:MAX_VERTICAL_CHARS],
                "content": body,
                "example": example,
                "enableSample": "true",
            },
        )
        return _template(data.get("template"))

    async def list_templates(self, app_id: str) -> list[PartnerTemplate]:
        """Every template of the app with its current status."""
        data = await self._app_call(app_id, "GET", "templates")
        records = data.get("templates")
        if not isinstance(records, list):
            raise PartnerError(200, "template list answer without templates")
        return [_template(record) for record in records]

    async def _app_call(
        self,
        app_id: str,
        method: str,
        resource: str,
        form: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        async def get_token() -> str:
            return await self.app_token(app_id)

        def forget_token(token: str) -> None:
            if self._app_tokens.get(app_id) == token:
                del self._app_tokens[app_id]

        return await self._authorized(
            method,
            f"/partner/app/{_segment(app_id)}/{resource}",
            get_token=get_token,
            forget_token=forget_token,
            form=form,
            json_body=json_body,
        )

    async def _authorized(
        self,
        method: str,
        path: str,
        *,
        get_token: Callable[[], Awaitable[str]],
        forget_token: Callable[[str], None],
        form: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Call with a token; on 401 forget it and try once more with a fresh one."""
        token = await get_token()
        status, data = await self._request(
            method, path, token=token, form=form, json_body=json_body
        )
        if status == 401:
            log.info("gupshup_partner_token_refused", path=path)
            forget_token(token)
            token = await get_token()
            status, data = await self._request(
                method, path, token=token, form=form, json_body=json_body
            )
        _raise_for_refusal(status, data, f"{method} {path}")
        return data

    def _forget_partner_token(self, token: str) -> None:
        # Only the refused token: a concurrent caller may have logged in again meanwhile.
        if self._partner_token is not None and self._partner_token.value == token:
            self._partner_token = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        form: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON object of Gupshup's answer ({} when it is not one)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": token} if token is not None else {}
        try:
            async with self._session.request(
                method, self._base_url + path, data=form, json=json_body, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            raise PartnerUnavailable(None, f"cannot connect: {exc.os_error or exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PartnerUnavailable(None, f"{type(exc).__name__} calling {path}") from exc
        try:
            data = json.loads(raw.decode("utf-8", errors="replace")) if raw else {}
        except ValueError:
            data = {}
        return status, data if isinstance(data, dict) else {}


def _raise_for_refusal(status: int, data: dict[str, Any], call: str) -> None:
    message = f"{call}: {data.get('message') or 'failed'}"
    if status == 429 or status >= 500:
        raise PartnerUnavailable(status, message)
    if status == 400 and "template already exists" in message.lower():
        raise TemplateExists(status, message)
    # Gupshup sometimes reports an error in a 2xx body.
    if not 200 <= status < 300 or data.get("status") == "error":
        raise PartnerError(status, message)


def _template(record: Any) -> PartnerTemplate:
    if not isinstance(record, dict):
        raise PartnerError(200, "template answer without a template")
    reason = record.get("reason") or record.get("rejectedReason")
    return PartnerTemplate(
        id=_string(record.get("id"), 200, "template without an id"),
        name=_string(record.get("elementName"), 200, "template without an elementName"),
        language=_string(record.get("languageCode"), 200, "template without a languageCode"),
        category=str(record.get("category", "")).upper(),
        status=_string(record.get("status"), 200, "template without a status").upper(),
        reason=str(reason) if reason else None,
        body=str(record.get("data") or ""),
    )


def _string(value: Any, status: int, problem: str) -> str:
    if not isinstance(value, str) or not value:
        raise PartnerError(status, problem)
    return value


def _integer(value: Any, *, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _segment(value: str) -> str:
    return quote(value, safe="")


def partner_from_settings(settings: Settings) -> PartnerClient | None:
    """The Partner API client, when Partner credentials are configured."""
    if not (settings.gupshup_partner_email and settings.gupshup_partner_password):
        return None
    return PartnerClient(
        str(settings.gupshup_partner_base_url),
        settings.gupshup_partner_email,
        settings.gupshup_partner_password,
        settings.gupshup_timeout_seconds,
    )


@dataclass(frozen=True)
class BsuidOutcome:
    """Whether the app's webhooks now carry BSUIDs, and why not when they do not."""

    enabled: bool
    reason: str | None = None


async def enable_app_bsuid(partner: PartnerClient | None, app_id: str | None) -> BsuidOutcome:
    """Turn the app's BSUID flags on at Gupshup; says how that went (never raises)."""
    if not app_id:
        return BsuidOutcome(False, "no gupshup_app_id")
    if partner is None:
        return BsuidOutcome(False, "partner API not configured")
    try:
        await partner.enable_bsuid(app_id)
    except PartnerError as exc:
        return BsuidOutcome(False, f"failed: {exc}")
    return BsuidOutcome(True)


async def register_callback(partner: PartnerClient | None, app_id: str | None, url: str) -> str:
    """Point an agent's Gupshup app at its callback URL; says how that went (never raises)."""
    if not app_id:
        return "no gupshup_app_id"
    if partner is None:
        return "partner API not configured"
    try:
        await partner.subscribe(app_id, url)
    except PartnerError as exc:
        return f"failed: {exc}"
    return "registered"
