"""Onboarding an agent, written once for the CLI and the admin API.

Guarantees: an agent is created, audited as `agent.create`, and its Gupshup app pointed at
its callback URL in that order, whoever asks; a callback URL has one shape; an agent's
numbers are normalized in the organization's region; telling running services that an agent
changed is best effort (the change is stored, and caches expire by themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.broker import Broker, PublishFailed
from shared.gupshup.partner import PartnerClient, register_callback
from shared.ids import new_id
from shared.logs import get_logger
from shared.models import AgentChanged
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
    persona: Persona | None = None
    rate_per_second: float = 20.0
    notify_number: str | None = None
    extra_credentials: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Onboarded:
    """A new agent, its callback URL (shown once) and how subscribing its app went."""

    agent: Agent
    callback_url: str
    callback_subscription: str


async def subscribe_callbacks(partner: PartnerClient | None, app_id: str | None, url: str) -> str:
    """Point an agent's Gupshup app at its callback URL; says how that went (never raises)."""
    outcome = await register_callback(partner, app_id, url)
    if outcome.startswith("failed"):
        log.warning("callback subscription failed", app_id=app_id, error=outcome)
    return outcome


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
    """Create the agent, audit it and subscribe its app to its callback URL.

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
    return Onboarded(agent, url, await subscribe_callbacks(partner, agent.gupshup_app_id, url))


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
