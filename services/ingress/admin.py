"""The admin API (internal listener): organization-scoped, authenticated by API key."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.crypto import hash_token
from shared.repositories.agents import AgentRepository
from shared.repositories.organizations import OrganizationRepository
from shared.store import Store

ORG_ID = web.RequestKey("org_id", str)

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "realtybot admin API", "version": "1"},
    "components": {
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"apiKey": []}],
    "paths": {
        "/v1/organization": {
            "get": {
                "summary": "The organization of the API key",
                "responses": {
                    "200": {"description": "the organization"},
                    "401": {"description": "missing or unknown API key"},
                },
            }
        },
        "/v1/agents": {
            "get": {
                "summary": "The organization's agents (credentials are never returned)",
                "responses": {
                    "200": {"description": "a list of agents"},
                    "401": {"description": "missing or unknown API key"},
                },
            }
        },
    },
}


def _public_agent(agent: Any) -> dict[str, Any]:
    return {
        "agent_id": agent.id,
        "name": agent.name,
        "number": agent.number,
        "gupshup_app": agent.gupshup_app,
        "gupshup_app_id": agent.gupshup_app_id,
        "status": agent.status,
        "persona": agent.persona.model_dump(),
        "rate_per_second": agent.rate_per_second,
    }


def create_admin_app(store: Store) -> web.Application:
    """The admin application; every route but the spec needs a valid API key."""
    orgs = OrganizationRepository(store)
    agents = AgentRepository(store)
    keys = store.db["api_keys"]

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in {"/v1/openapi.json", "/healthz"}:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise web.HTTPUnauthorized(
                text='{"error": "missing API key"}', content_type="application/json"
            )
        key_hash = hash_token(token)
        doc = await keys.find_one({"key_hash": key_hash})
        if doc is None or not hmac.compare_digest(doc["key_hash"], key_hash):
            raise web.HTTPUnauthorized(
                text='{"error": "unknown API key"}', content_type="application/json"
            )
        request[ORG_ID] = doc["org_id"]
        return await handler(request)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def organization(request: web.Request) -> web.Response:
        org = await orgs.get(request[ORG_ID])
        if org is None:
            raise web.HTTPNotFound()
        return web.json_response(
            {
                "org_id": org.id,
                "name": org.name,
                "slug": org.slug,
                "settings": org.settings.model_dump(),
            }
        )

    async def list_agents(request: web.Request) -> web.Response:
        return web.json_response(
            [_public_agent(a) for a in await agents.list_in_org(request[ORG_ID])]
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application(middlewares=[authenticate])
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/organization", organization)
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_get("/healthz", healthz)
    return app
