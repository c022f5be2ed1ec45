"""The admin API, served by ingress on its internal listener."""

from __future__ import annotations

from aiohttp import web

from services.ingress.admin import (
    agents,
    appointments,
    lead_data,
    listings,
    organizations,
    reports,
    templates,
    threads,
)
from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import RouteTable, build_app
from services.ingress.admin.lockout import AuthLockout
from shared.broker import Broker
from shared.crypto import KeyRing
from shared.gupshup.partner import PartnerClient
from shared.settings import Settings
from shared.store import Store


def create_admin_app(
    settings: Settings,
    store: Store,
    broker: Broker,
    key_ring: KeyRing,
    partner: PartnerClient | None = None,
) -> web.Application:
    """The admin application with every endpoint module registered."""
    ctx = AdminContext(settings, store, broker, key_ring, partner)
    table = RouteTable()
    for module in (
        organizations,
        agents,
        listings,
        threads,
        appointments,
        reports,
        templates,
        lead_data,
    ):
        module.register(table, ctx)
    lockout = AuthLockout(settings.admin_auth_max_failures, settings.admin_auth_lockout_seconds)
    return build_app(table, ctx.keys, "realtybot admin API", lockout)
