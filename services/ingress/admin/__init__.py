"""The admin API, served by ingress on its internal listener.

One module per resource, each endpoint a module-level function declared in that module's
`routes`; the application is their routes in the order below, plus `GET /v1/openapi.json`
built from the same declarations. Endpoints take their dependencies from the application
(`dependencies`); authentication, validation, pages, not-found and audit are in `framework`.
Resource modules import those two as namespaces (`framework as api`, `dependencies as deps`),
so an endpoint reads `call.app[deps.AGENTS]` and `api.found(...)`.
"""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin import (
    agents,
    appointments,
    leads,
    listings,
    organizations,
    reports,
    templates,
    threads,
)
from services.ingress.admin.dependencies import install
from services.ingress.admin.framework import RouteTable, build_app
from services.ingress.admin.lockout import AuthLockout
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.partner import PartnerClient
from shared.settings import Settings
from shared.store import Store

RESOURCES = (organizations, agents, listings, leads, threads, appointments, reports, templates)


def create_admin_app(
    settings: Settings,
    store: Store,
    broker: Broker,
    key_ring: KeyRing,
    partner: PartnerClient | None = None,
) -> web.Application:
    """The admin application with every resource's endpoints and their dependencies."""
    table = RouteTable([route for resource in RESOURCES for route in resource.routes.routes])
    lockout = AuthLockout(settings.admin_auth_max_failures, settings.admin_auth_lockout_seconds)
    app = build_app(table, "realtybot admin API", lockout)
    install(app, settings, store, broker, key_ring, partner)
    return app
