"""Onboarding an agent, written once for the CLI and the admin API.

Guarantees: an agent is created, audited as `agent.create`, its Gupshup app pointed at its
callback URL and its app's BSUID flags turned on, in that order, whoever asks; a callback URL
has one shape; an agent's numbers are normalized in the organization's region; telling
running services that an agent changed is best effort (the change is stored, and caches
expire by themselves). Neither Partner API call can fail onboarding: each says how it went,
and the BSUID outcome is kept on the agent until it works (`turn_on_bsuid`, tried again on
the agent's next update or by `realtybot agent enable-bsuid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.broker import Broker, PublishFailed
from shared.gupshup.partner import PartnerClient, enable_app_bsuid, register_callback
from shared.ids import new_id
from shared.logs import get_logger
from shared.models import AgentChanged, utcnow
from shared.phones import InvalidPhoneNumber, normalize_phone
from shared.repositories.agents import Agent, AgentRepository, Persona
from shared.repositories.audit import AuditLog
from shared.settings import Settings

log = get_logger(__name__)

# Where ingress serves webhooks: the agent's callback key is the path's last segment.
CALLBACK_PATH = "/v1/webhooks/gupshup/"


class InvalidAgentNumber(ValueError):
    """One of an agent's phone numbers is not valid; `field` names which."""

    def __init__(self, field: str, reason: InvalidPhoneNumber) -> None:
        super().__init__(str(reason))
        self.field = field


def callback_url(settings: Settings, callback_key: str) -> str:
    """The URL Gupshup posts an agent's events to."""
    return f"{str(settings.public_base_url).rstrip('/')}{CALLBACK_PATH}{callback_key}"


def agent_phone(value: str, field: str, region: str) -> str:
    """An agent's number (`field` names it) in E.164, read in the organization's region."""
    try:
        return normalize_phone(value, region)
    except InvalidPhoneNumber as exc:
        raise InvalidAgentNumber(field, exc) from None


@dataclass(frozen=True)
class NewAgent:
    """What onboarding needs to know about an agent; numbers as the operator wrote them."""

    org_id: str
    name: str
    number: str
    gupshup_app: str
    gupshup_api_key: str
    timezone: str
    gupshup_app_id: str | None = None
    business_portfolio_id: str | None = None
    persona: Persona | None = None
    rate_per_second: float = 20.0
    notify_number: str | None = None
    extra_credentials: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Onboarded:
    """A new agent (with how enabling BSUIDs went), its callback URL (shown once) and how
    subscribing its app went."""

    agent: Agent
    callback_url: str
    callback_subscription: str


async def subscribe_callbacks(partner: PartnerClient | None, app_id: str | None, url: str) -> str:
    """Point an agent's Gupshup app at its callback URL; says how that went (never raises)."""
    outcome = await register_callback(partner, app_id, url)
    if outcome.startswith("failed"):
        log.warning("callback subscription failed", app_id=app_id, error=outcome)
    return outcome


async def turn_on_bsuid(
    partner: PartnerClient | None, agents: AgentRepository, agent: Agent
) -> Agent:
    """Turn the BSUID flags of the agent's Gupshup app on and record how that went on the
    agent; the agent as recorded (never raises for Gupshup's sake)."""
    outcome = await enable_app_bsuid(partner, agent.gupshup_app_id)
    if outcome.enabled:
        log.info("bsuid enabled", agent_id=agent.id, app_id=agent.gupshup_app_id)
    elif outcome.reason and outcome.reason.startswith("failed"):
        log.warning(
            "bsuid not enabled; tried again on the agent's next update",
            agent_id=agent.id,
            app_id=agent.gupshup_app_id,
            reason=outcome.reason,
        )
    else:
        log.info("bsuid not enabled", agent_id=agent.id, reason=outcome.reason)
    recorded = await agents.record_bsuid(
        agent.org_id, agent.id, enabled=outcome.enabled, reason=outcome.reason, at=utcnow()
    )
    return recorded or agent


async def add_agent(
    new: NewAgent,
    *,
    region: str,
    agents: AgentRepository,
    audit: AuditLog,
    partner: PartnerClient | None,
    settings: Settings,
    actor: str,
) -> Onboarded:
    """Create the agent, audit it, subscribe its app to its callback URL and turn the app's
    BSUID flags on.

    Raises `InvalidAgentNumber` before anything is stored, `AgentConflict` when the number
    or app is taken.
    """
    number = agent_phone(new.number, "number", region)
    notify = agent_phone(new.notify_number, "notify_number", region) if new.notify_number else None
    agent, callback_key = await agents.create(
        org_id=new.org_id,
        name=new.name,
        number=number,
        gupshup_app=new.gupshup_app,
        gupshup_api_key=new.gupshup_api_key,
        gupshup_app_id=new.gupshup_app_id,
        business_portfolio_id=new.business_portfolio_id,
        persona=new.persona,
        rate_per_second=new.rate_per_second,
        notify_number=notify,
        timezone=new.timezone,
        extra_credentials=new.extra_credentials,
    )
    await audit.record(
        org_id=new.org_id, actor=actor, action="agent.create", target=agent.id, after=agent.public()
    )
    url = callback_url(settings, callback_key)
    subscription = await subscribe_callbacks(partner, agent.gupshup_app_id, url)
    agent = await turn_on_bsuid(partner, agents, agent)
    return Onboarded(agent, url, subscription)


async def announce_agent_change(broker: Broker, org_id: str, agent_id: str) -> None:
    """Tell every replica to drop its cached view of the agent (best effort)."""
    change = AgentChanged(event_id=new_id("chg"), org_id=org_id, agent_id=agent_id)
    try:
        await broker.broadcast_config_change(change)
    except PublishFailed as exc:  # the change is stored; caches expire by themselves
        log.warning(
            "configuration change not broadcast; caches expire on their own",
            agent_id=agent_id,
            error=str(exc),
        )


async def announce_agent_change_once(settings: Settings, org_id: str, agent_id: str) -> None:
    """`announce_agent_change` from a process without a broker connection (the CLI)."""
    broker = Broker(settings, "cli")
    try:
        await broker.connect()
        await announce_agent_change(broker, org_id, agent_id)
    except Exception as exc:  # no broker: the change is stored; caches expire by themselves
        log.warning(
            "configuration change not broadcast; caches expire on their own",
            agent_id=agent_id,
            error=str(exc),
        )
    finally:
        await broker.close()
