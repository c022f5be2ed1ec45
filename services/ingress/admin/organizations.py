"""Organizations, their API keys and their audit log."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import available_timezones

import phonenumbers
from aiohttp import web
from pydantic import AfterValidator, Field

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from shared.quiet_hours import QuietHours
from shared.repositories.organizations import (
    MessagePrices,
    Organization,
    OrganizationExists,
    OrganizationSettings,
)


def _region(value: str) -> str:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("unknown region code")
    return value.upper()


def _zone(value: str) -> str:
    # Only IANA "Area/City" names (and UTC): "localtime" or "Factory" exist on some hosts
    # but mean nothing portable.
    if value != "UTC" and ("/" not in value or value.startswith(("posix/", "right/", "Etc/"))):
        raise ValueError("use an IANA time zone such as Asia/Singapore")
    if value not in available_timezones():
        raise ValueError("unknown time zone")
    return value


Region = Annotated[str, AfterValidator(_region)]
TimeZone = Annotated[str, AfterValidator(_zone)]


class OrganizationCreate(api.Body):
    """A new organization (platform-operator key)."""

    name: str = Field(min_length=2, max_length=100)
    region: Region = "SG"
    timezone: TimeZone = "Asia/Singapore"


Visibility = Literal["none", "metadata", "summary"]


class OrganizationUpdate(api.Body):
    """Changes to the caller's organization."""

    cross_agent_visibility: Visibility | None = None
    name: str | None = Field(default=None, min_length=2, max_length=100)
    region: Region | None = None
    timezone: TimeZone | None = None
    quiet_hours: QuietHours | None = None
    message_prices: MessagePrices | None = None


class KeyCreate(api.Body):
    """A new API key of the caller's organization."""

    name: str = Field(min_length=1, max_length=100)


def public_org(org: Organization) -> dict[str, object]:
    """What the API shows of an organization."""
    return {
        "org_id": org.id,
        "name": org.name,
        "slug": org.slug,
        "status": org.status,
        "settings": org.settings.model_dump(),
        "created_at": org.created_at.isoformat(),
    }


routes = api.RouteTable()


@routes.add("POST", "/v1/organizations", scope="platform", status=201)
async def create_organization(call: api.Call, body: OrganizationCreate) -> web.StreamResponse:
    """Create an organization and its first API key."""
    try:
        org, api_key = await call.app[deps.ORGS].create(
            body.name, OrganizationSettings(region=body.region, timezone=body.timezone)
        )
    except OrganizationExists as exc:
        raise api.ApiError(409, "conflict", str(exc)) from None
    await call.app[deps.AUDIT].record(
        org_id=org.id,
        actor=call.actor,
        action="organization.create",
        target=org.id,
        after=public_org(org),
    )
    return api.json_response({**public_org(org), "api_key": api_key}, status=201)


@routes.add("GET", "/v1/organization")
async def get_organization(call: api.Call) -> web.StreamResponse:
    """The caller's organization."""
    org = api.found(await call.app[deps.ORGS].get(call.org_id), "organization")
    return api.json_response(public_org(org))


@routes.add("PATCH", "/v1/organization")
async def update_organization(call: api.Call, body: OrganizationUpdate) -> web.StreamResponse:
    """Change the caller's organization."""
    fields: dict[str, object] = {}
    if body.name is not None:
        fields["name"] = body.name
    if body.region is not None:
        fields["settings.region"] = body.region
    if body.timezone is not None:
        fields["settings.timezone"] = body.timezone
    if body.cross_agent_visibility is not None:
        fields["settings.cross_agent_visibility"] = body.cross_agent_visibility
    if body.quiet_hours is not None:
        fields["settings.quiet_hours"] = body.quiet_hours.model_dump()
    if body.message_prices is not None:
        fields["settings.message_prices"] = body.message_prices.model_dump()
    before, after = api.found(await call.app[deps.ORGS].update(call.org_id, fields), "organization")
    await call.audited(
        "organization.update",
        call.org_id,
        before=public_org(before),
        after=public_org(after),
    )
    return api.json_response(public_org(after))


@routes.add("GET", "/v1/api-keys")
async def list_keys(call: api.Call) -> web.StreamResponse:
    """The organization's API keys (never the keys themselves)."""
    return api.json_response(
        {"items": [k.public() for k in await call.app[deps.API_KEYS].list_in_org(call.org_id)]}
    )


@routes.add("POST", "/v1/api-keys", status=201)
async def create_key(call: api.Call, body: KeyCreate) -> web.StreamResponse:
    """Issue another API key."""
    key, plain = await call.app[deps.API_KEYS].issue("org", call.org_id, body.name)
    await call.audited("api_key.create", key.id, after=key.public())
    return api.json_response({**key.public(), "api_key": plain}, status=201)


@routes.add("DELETE", "/v1/api-keys/{key_id}", status=200)
async def revoke_key(call: api.Call) -> web.StreamResponse:
    """Revoke an API key."""
    key = api.found(
        await call.app[deps.API_KEYS].revoke(call.org_id, call.param("key_id")), "API key"
    )
    await call.audited("api_key.revoke", key.id, after=key.public())
    return api.json_response(key.public())


@routes.add("GET", "/v1/audit-log")
async def audit_log(call: api.Call) -> web.StreamResponse:
    """The organization's latest writes, newest first."""
    limit = call.query_int("limit", 100, 1, 500)
    return api.json_response({"items": await call.app[deps.AUDIT].list_in_org(call.org_id, limit)})
