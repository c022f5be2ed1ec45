"""Agents: onboarding, settings, persona, availability, suspension, credentials, callback keys."""

from __future__ import annotations

import re
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_validator, model_validator

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from services.ingress.admin.organizations import TimeZone
from shared.identity import PORTFOLIO_ID_PATTERN
from shared.models import utcnow
from shared.onboarding import (
    InvalidAgentNumber,
    NewAgent,
    add_agent,
    agent_phone,
    announce_agent_change,
    callback_url,
    subscribe_callbacks,
    turn_on_bsuid,
)
from shared.quiet_hours import QuietHours
from shared.repositories.agents import (
    Agent,
    AgentConflict,
    AgentNumberTaken,
    Persona,
    public_agent_model,
)
from shared.repositories.organizations import Organization, OrganizationSettings
from shared.store import Document

AppName = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
Secret = Field(min_length=1, max_length=1000)
# Meta's business portfolio id (digits); 1 to 64 letters, digits, `_` or `-` are accepted.
PortfolioId = Field(
    default=None,
    pattern=PORTFOLIO_ID_PATTERN,
    description="Meta business portfolio of the agent's number (1-64 of A-Z a-z 0-9 _ -): "
    "its agents share each lead's business-scoped user ID",
)


class AgentCreate(api.Body):
    """A new agent of the caller's organization."""

    name: str = Field(min_length=1, max_length=100)
    number: str = Field(min_length=3, max_length=40)
    gupshup_app: str = AppName
    gupshup_app_id: str | None = Field(default=None, max_length=100)
    business_portfolio_id: str | None = PortfolioId
    gupshup_api_key: str = Secret
    partner_app_token: str | None = Field(default=None, min_length=1, max_length=1000)
    app_secret: str | None = Field(default=None, min_length=1, max_length=1000)
    persona: Persona | None = None
    rate_per_second: float = Field(default=20.0, gt=0, le=1000)
    notify_number: str | None = Field(default=None, max_length=40)
    # Working hours, quiet hours and offered times are in this zone; the organization's by
    # default.
    timezone: TimeZone | None = None


# Credentials an agent may have besides its Gupshup API key.
EXTRA_CREDENTIALS = {"partner_app_token", "app_secret"}


class AgentUpdate(api.Body):
    """Changes to an agent; absent fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    number: str | None = Field(default=None, min_length=3, max_length=40)
    gupshup_app: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    gupshup_app_id: str | None = Field(default=None, max_length=100)
    business_portfolio_id: str | None = PortfolioId
    rate_per_second: float | None = Field(default=None, gt=0, le=1000)
    notify_number: str | None = Field(default=None, max_length=40)
    timezone: TimeZone | None = None
    status: Literal["active", "suspended"] | None = None
    messaging_tier: Literal[250, 2000, 10000, 100000, 0] | None = None  # 0: unlimited
    quiet_hours: QuietHours | None = None
    # An APPROVED template of this agent sent instead of a reply the 24-hour window
    # closed on; "" removes it.
    fallback_template_id: str | None = Field(default=None, max_length=100)
    # An APPROVED template telling the agent (on notify_number) a lead wants them; "" removes.
    handoff_template_id: str | None = Field(default=None, max_length=100)
    # APPROVED templates for follow-ups and appointment reminders outside the window; "" removes.
    follow_up_template_id: str | None = Field(default=None, max_length=100)
    reminder_template_id: str | None = Field(default=None, max_length=100)


# How many parameters each template setting may take: the lead's name, and for reminders
# the appointment's time after it.
TEMPLATE_PARAMETERS = {
    "fallback_template_id": 1,
    "handoff_template_id": 1,
    "follow_up_template_id": 1,
    "reminder_template_id": 2,
}


class CredentialsUpdate(api.Body):
    """New credentials; they can be written, never read back."""

    gupshup_api_key: str | None = Field(default=None, min_length=1, max_length=1000)
    partner_app_token: str | None = Field(default=None, min_length=1, max_length=1000)
    app_secret: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> CredentialsUpdate:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one credential")
        return self


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WorkingPeriod(api.Body):
    """One period of a day in which the agent takes consultations."""

    day: Day
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not CLOCK.match(value):
            raise ValueError("must be HH:MM (24-hour)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> WorkingPeriod:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class Availability(api.Body):
    """When the agent works, in the agent's time zone, and how long an appointment lasts."""

    timezone: TimeZone
    working_hours: list[WorkingPeriod] = Field(max_length=50)
    # Minutes; absent: unchanged (30 for a new agent).
    slot_minutes: int | None = Field(default=None, ge=15, le=240)


def availability_of(agent: Agent) -> dict[str, object]:
    """What the availability endpoints answer."""
    return {
        "timezone": agent.timezone,
        "working_hours": [p.model_dump() for p in agent.working_hours],
        "slot_minutes": agent.slot_minutes,
    }


def conflict(exc: AgentConflict) -> api.ApiError:
    """409 with a code saying what is taken."""
    code = "number_taken" if isinstance(exc, AgentNumberTaken) else "app_taken"
    return api.ApiError(409, code, str(exc))


async def foreign_agents(call: api.Call, agent_ids: set[str]) -> list[str]:
    """The ids among `agent_ids` that name no agent of the caller's organization."""
    agents = call.app[deps.AGENTS]
    return [a for a in agent_ids if await agents.get_in_org(call.org_id, a) is None]


async def agent_of(call: api.Call) -> Agent:
    """The agent named by the path, if it belongs to the caller's organization."""
    return api.found(
        await call.app[deps.AGENTS].get_in_org(call.org_id, call.param("agent_id")), "agent"
    )


async def _organization_settings(call: api.Call) -> OrganizationSettings:
    org: Organization | None = await call.app[deps.ORGS].get(call.org_id)
    return (
        org.settings if org else OrganizationSettings(region=call.app[deps.SETTINGS].default_region)
    )


def _phone(value: str, field: str, region: str) -> str:
    try:
        return agent_phone(value, field, region)
    except InvalidAgentNumber as exc:
        raise api.invalid_body(exc.field, str(exc)) from None


# The agent as every read answers it, and as onboarding answers it.
AgentShown = public_agent_model()
AgentOnboarded = public_agent_model(
    "AgentOnboarded",
    callback_url=(str, Field(description="Where Gupshup posts the agent's events (shown once)")),
    callback_subscription=(str, Field(description="How pointing the app at it went")),
)


class AgentList(BaseModel):
    """The organization's agents."""

    items: list[AgentShown]  # type: ignore[valid-type]


routes = api.RouteTable()


@routes.add("POST", "/v1/agents", status=201, response=AgentOnboarded)
async def create_agent(call: api.Call, body: AgentCreate) -> web.StreamResponse:
    """Onboard an agent; answers its callback URL."""
    org = await _organization_settings(call)
    # The body's other fields are NewAgent's, by the same names.
    new = NewAgent(
        org_id=call.org_id,
        persona=body.persona,
        timezone=body.timezone or org.timezone,
        extra_credentials=body.model_dump(include=EXTRA_CREDENTIALS, exclude_none=True),
        **body.model_dump(exclude={*EXTRA_CREDENTIALS, "persona", "timezone"}),
    )
    try:
        onboarded = await add_agent(
            new,
            region=org.region,
            agents=call.app[deps.AGENTS],
            audit=call.app[deps.AUDIT],
            partner=call.app[deps.PARTNER],
            settings=call.app[deps.SETTINGS],
            actor=call.actor,
        )
    except InvalidAgentNumber as exc:
        raise api.invalid_body(exc.field, str(exc)) from None
    except AgentConflict as exc:
        raise conflict(exc) from None
    return api.json_response(
        {
            **onboarded.agent.public(),
            "callback_url": onboarded.callback_url,
            "callback_subscription": onboarded.callback_subscription,
        },
        status=201,
    )


@routes.add("GET", "/v1/agents", response=AgentList)
async def list_agents(call: api.Call) -> web.StreamResponse:
    """The organization's agents."""
    agents = await call.app[deps.AGENTS].list_in_org(call.org_id)
    return api.json_response({"items": [a.public() for a in agents]})


@routes.add("GET", "/v1/agents/{agent_id}", response=AgentShown)
async def get_agent(call: api.Call) -> web.StreamResponse:
    """One agent."""
    return api.json_response((await agent_of(call)).public())


@routes.add("PATCH", "/v1/agents/{agent_id}", response=AgentShown)
async def update_agent(call: api.Call, body: AgentUpdate) -> web.StreamResponse:
    """Change an agent, suspend or reactivate it."""
    fields: dict[str, object] = body.model_dump(exclude_none=True)
    region = (await _organization_settings(call)).region
    for name in ("number", "notify_number"):
        if name in fields:
            fields[name] = _phone(str(fields[name]), name, region)
    for name in TEMPLATE_PARAMETERS:
        if name in fields:
            fields[name] = await _usable_template(call, name, str(fields[name]))
    before, after = await _changed(call, "agent.update", fields)
    if before.portfolio != after.portfolio:
        await _carry_user_ids(call, before, after)
    # Until Gupshup has the app's BSUID flags on (a new app needs them too), every update
    # tries again.
    if not after.bsuid_enabled or before.gupshup_app_id != after.gupshup_app_id:
        after = await turn_on_bsuid(call.app[deps.PARTNER], call.app[deps.AGENTS], after)
    return api.json_response(after.public())


async def _carry_user_ids(call: api.Call, before: Agent, after: Agent) -> None:
    """The agent's leads keep their user IDs in its new portfolio (its old claims stay, for
    replicas that still read the old portfolio until the change reaches them)."""
    lead_ids = await call.app[deps.THREADS].lead_ids_of_agent(call.org_id, after.id)
    await call.app[deps.LEADS].carry_user_ids(
        lead_ids,
        org_id=call.org_id,
        agent_id=after.id,
        old_portfolio=before.portfolio,
        new_portfolio=after.portfolio,
        at=utcnow(),
    )


@routes.add("PUT", "/v1/agents/{agent_id}/persona", response=AgentShown)
async def set_persona(call: api.Call, persona: Persona) -> web.StreamResponse:
    """Set how the bot speaks for the agent."""
    return await _change(call, "agent.persona", {"persona": persona.model_dump()})


async def _usable_template(call: api.Call, field: str, template_id: str) -> str | None:
    """A template of this agent taking no more parameters than the setting fills, or None."""
    if not template_id:
        return None
    template = await call.app[deps.TEMPLATES].get(call.org_id, template_id)
    if template is None or template.agent_id != call.param("agent_id"):
        raise api.not_found("template")
    most = TEMPLATE_PARAMETERS[field]
    if template.parameters > most:
        allowed = "one parameter" if most == 1 else f"{most} parameters"
        raise api.invalid_body(field, f"the template may take at most {allowed}")
    return template.id


async def _change(call: api.Call, action: str, fields: dict[str, object]) -> web.StreamResponse:
    _before, after = await _changed(call, action, fields)
    return api.json_response(after.public())


async def _changed(call: api.Call, action: str, fields: dict[str, object]) -> tuple[Agent, Agent]:
    """Store the change, audit it and tell every replica; (before, after)."""
    try:
        changed = await call.app[deps.AGENTS].update(call.org_id, call.param("agent_id"), fields)
    except AgentConflict as exc:
        raise conflict(exc) from None
    before, after = api.found(changed, "agent")
    await call.audited(action, after.id, before=before.public(), after=after.public())
    await announce_agent_change(call.app[deps.BROKER], call.org_id, after.id)
    return before, after


@routes.add("PUT", "/v1/agents/{agent_id}/credentials")
async def set_credentials(call: api.Call, body: CredentialsUpdate) -> web.StreamResponse:
    """Store the agent's credentials (encrypted; never returned)."""
    agent_id = call.param("agent_id")
    secrets = body.model_dump(exclude_none=True)
    if not await call.app[deps.AGENTS].set_credentials(call.org_id, agent_id, secrets):
        raise api.not_found("agent")
    await call.audited(
        "agent.credentials", agent_id, after={"credentials_changed": sorted(secrets)}
    )
    await announce_agent_change(call.app[deps.BROKER], call.org_id, agent_id)
    return api.json_response({"agent_id": agent_id, "credentials_changed": sorted(secrets)})


@routes.add("POST", "/v1/agents/{agent_id}/callback-key")
async def rotate_callback_key(call: api.Call) -> web.StreamResponse:
    """Issue a new callback URL; the old one stops working."""
    agent = await agent_of(call)
    callback_key = await call.app[deps.AGENTS].rotate_callback_key(call.org_id, agent.id)
    await call.audited(
        "agent.callback_key",
        agent.id,
        before={"callback_key": "retired"},
        after={"callback_key": "issued"},
    )
    await announce_agent_change(call.app[deps.BROKER], call.org_id, agent.id)
    url = callback_url(call.app[deps.SETTINGS], callback_key)
    return api.json_response(
        {
            "agent_id": agent.id,
            "callback_url": url,
            "callback_subscription": await subscribe_callbacks(
                call.app[deps.PARTNER], agent.gupshup_app_id, url
            ),
        }
    )


@routes.add("GET", "/v1/agents/{agent_id}/availability")
async def get_availability(call: api.Call) -> web.StreamResponse:
    """When the agent takes consultations."""
    return api.json_response(availability_of(await agent_of(call)))


@routes.add("PUT", "/v1/agents/{agent_id}/availability")
async def set_availability(call: api.Call, body: Availability) -> web.StreamResponse:
    """Set working hours, time zone and appointment length (slot_minutes, 15 to 240)."""
    fields: Document = {
        "timezone": body.timezone,
        "working_hours": [p.model_dump() for p in body.working_hours],
    }
    if body.slot_minutes is not None:
        fields["slot_minutes"] = body.slot_minutes
    changed = await call.app[deps.AGENTS].update(call.org_id, call.param("agent_id"), fields)
    before, after = api.found(changed, "agent")
    await call.audited(
        "agent.availability",
        after.id,
        before={"timezone": before.timezone, "slot_minutes": before.slot_minutes},
        after={
            "timezone": after.timezone,
            "working_hours": len(body.working_hours),
            "slot_minutes": after.slot_minutes,
        },
    )
    await announce_agent_change(call.app[deps.BROKER], call.org_id, after.id)
    return api.json_response(availability_of(after))
