"""What the admin endpoints take from the application: one `web.AppKey` per dependency.

`install` puts every repository, the broker, the Partner API client and the settings on the
application once, at start; an endpoint reads only the keys it uses
(`call.app[LISTINGS]`), so a test can run an endpoint against any application that has them.
"""

from __future__ import annotations

from aiohttp import web

from shared.broker import Broker
from shared.colleagues import ColleagueThreads
from shared.crypto import KeyRing
from shared.gupshup.partner import PartnerClient
from shared.replies import ReplyOutbox
from shared.repositories.agents import AgentRepository
from shared.repositories.api_keys import ApiKeyRepository
from shared.repositories.appointments import AppointmentRepository
from shared.repositories.audit import AuditLog
from shared.repositories.consents import ConsentRepository
from shared.repositories.conversions import ConversionRepository
from shared.repositories.costs import CostRepository
from shared.repositories.lead_data import LeadDataRepository
from shared.repositories.leads import LeadRepository
from shared.repositories.listings import ListingRepository
from shared.repositories.messages import MessageRepository
from shared.repositories.organizations import OrganizationRepository
from shared.repositories.sends import SendRepository
from shared.repositories.templates import TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.settings import Settings
from shared.store import Store

SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
# None when the platform has no Partner API credentials.
PARTNER: web.AppKey[PartnerClient | None] = web.AppKey("partner")

API_KEYS = web.AppKey("api_keys", ApiKeyRepository)
AUDIT = web.AppKey("audit", AuditLog)
ORGS = web.AppKey("organizations", OrganizationRepository)
AGENTS = web.AppKey("agents", AgentRepository)
TEMPLATES = web.AppKey("templates", TemplateRepository)
LISTINGS = web.AppKey("listings", ListingRepository)
APPOINTMENTS = web.AppKey("appointments", AppointmentRepository)
THREADS = web.AppKey("threads", ThreadRepository)
MESSAGES = web.AppKey("messages", MessageRepository)
SENDS = web.AppKey("sends", SendRepository)
LEADS = web.AppKey("leads", LeadRepository)
LEAD_DATA = web.AppKey("lead_data", LeadDataRepository)
CONSENTS = web.AppKey("consents", ConsentRepository)
CONVERSIONS = web.AppKey("conversions", ConversionRepository)
COLLEAGUES = web.AppKey("colleague_threads", ColleagueThreads)
COSTS = web.AppKey("costs", CostRepository)
OUTBOX = web.AppKey("reply_outbox", ReplyOutbox)


def install(
    app: web.Application,
    settings: Settings,
    store: Store,
    broker: Broker,
    key_ring: KeyRing,
    partner: PartnerClient | None,
) -> None:
    """Put every dependency of the admin endpoints on the application."""
    app[SETTINGS] = settings
    app[BROKER] = broker
    app[PARTNER] = partner
    app[API_KEYS] = ApiKeyRepository(store)
    app[AUDIT] = AuditLog(store)
    app[ORGS] = OrganizationRepository(store)
    app[AGENTS] = AgentRepository(store, key_ring)
    app[TEMPLATES] = TemplateRepository(store)
    app[LISTINGS] = ListingRepository(store)
    app[APPOINTMENTS] = AppointmentRepository(store)
    app[THREADS] = ThreadRepository(store)
    app[MESSAGES] = MessageRepository(store)
    app[SENDS] = SendRepository(store)
    app[LEADS] = LeadRepository(store)
    app[LEAD_DATA] = LeadDataRepository(store)
    app[CONSENTS] = ConsentRepository(store)
    app[CONVERSIONS] = ConversionRepository(store)
    app[COLLEAGUES] = ColleagueThreads(store)
    app[COSTS] = CostRepository(store)
    app[OUTBOX] = ReplyOutbox(store, broker)
