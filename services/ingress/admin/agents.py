"""Agents: onboarding, settings, persona, suspension, credentials and callback keys."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field, model_validator

from services.ingress.admin.context import AdminContext
from services.ingress.admin.framework import (
    ApiError,
    Body,
    Call,
    RouteTable,
    json_response,
    not_found,
)
from services.ingress.admin.organizations import TimeZone
from shared.phones import InvalidPhoneNumber, normalize_phone
from shared.quiet_hours import QuietHours
from shared.repositories.agents import AgentConflict, AgentNumberTaken, Persona
from shared.repositories.organizations import OrganizationSettings
from shared.repositories.templates import TemplateRepository

AppName = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
Secret = Field(min_length=1, max_length=1000)


class AgentCreate(Body):
    """A new agent of the caller's organization."""

    name: str = Field(min_length=1, max_length=100)
    number: str = Field(min_length=3, max_length=40)
    gupshup_app: str = AppName
    gupshup_app_id: str | None = Field(default=None, max_length=100)
    gupshup_api_key: str = Secret
    partner_app_token: str | None = Field(default=None, min_length=1, max_length=1000)
    app_secret: str | None = Field(default=None, min_length=1, max_length=1000)
    persona: Persona | None = None
    rate_per_second: float = Field(default=20.0, gt=0, le=1000)
    notify_number: str | None = Field(default=None, max_length=40)
    # Working hours, quiet hours and offered times are in this zone; the organization's by
    # default.
    timezone: TimeZone | None = None


class AgentUpdate(Body):
    """Changes to an agent; absent fields stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    number: str | None = Field(default=None, min_length=3, max_length=40)
    gupshup_app: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    gupshup_app_id: str | None = Field(default=None, max_length=100)
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


class CredentialsUpdate(Body):
    """New credentials; they can be written, never read back."""

    gupshup_api_key: str | None = Field(default=None, min_length=1, max_length=1000)
    partner_app_token: str | None = Field(default=None, min_length=1, max_length=1000)
    app_secret: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _something(self) -> CredentialsUpdate:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one credential")
        return self


def conflict(exc: AgentConflict) -> ApiError:
    """409 with a code saying what is taken."""
    code = "number_taken" if isinstance(exc, AgentNumberTaken) else "app_taken"
    return ApiError(409, code, str(exc))


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the agent endpoints."""
    templates = TemplateRepository(ctx.store)

    async def region(call: Call) -> str:
        org = await ctx.orgs.get(call.org_id)
        return org.settings.region if org else ctx.settings.default_region

    async def org_timezone(call: Call) -> str:
        org = await ctx.orgs.get(call.org_id)
        return org.settings.timezone if org else OrganizationSettings().timezone

    def phone(value: str, field: str, default_region: str) -> str:
        try:
            return normalize_phone(value, default_region)
        except InvalidPhoneNumber as exc:
            raise ApiError(
                422, "invalid", "the request body is invalid", {field: str(exc)}
            ) from None

    @table.add(
        "POST",
        "/v1/agents",
        "Onboard an agent; answers its callback URL",
        body=AgentCreate,
        status=201,
    )
    async def create_agent(call: Call) -> web.StreamResponse:
        body: AgentCreate = call.body
        default_region = await region(call)
        extra = {
            name: value
            for name, value in (
                ("partner_app_token", body.partner_app_token),
                ("app_secret", body.app_secret),
            )
            if value
        }
        try:
            agent, callback_key = await ctx.agents.create(
                org_id=call.org_id,
                name=body.name,
                number=phone(body.number, "number", default_region),
                gupshup_app=body.gupshup_app,
                gupshup_api_key=body.gupshup_api_key,
                gupshup_app_id=body.gupshup_app_id,
                persona=body.persona,
                rate_per_second=body.rate_per_second,
                notify_number=phone(body.notify_number, "notify_number", default_region)
                if body.notify_number
                else None,
                timezone=body.timezone or await org_timezone(call),
                extra_credentials=extra,
            )
        except AgentConflict as exc:
            raise conflict(exc) from None
        await ctx.audited(call, "agent.create", agent.id, after=agent.public())
        subscription = await ctx.subscribe_callbacks(agent.gupshup_app_id, callback_key)
        return json_response(
            {
                **agent.public(),
                "callback_url": ctx.callback_url(callback_key),
                "callback_subscription": subscription,
            },
            status=201,
        )

    @table.add("GET", "/v1/agents", "The organization's agents")
    async def list_agents(call: Call) -> web.StreamResponse:
        return json_response(
            {"items": [a.public() for a in await ctx.agents.list_in_org(call.org_id)]}
        )

    @table.add("GET", "/v1/agents/{agent_id}", "One agent")
    async def get_agent(call: Call) -> web.StreamResponse:
        return json_response((await ctx.agent_of(call)).public())

    @table.add(
        "PATCH",
        "/v1/agents/{agent_id}",
        "Change an agent, suspend or reactivate it",
        body=AgentUpdate,
    )
    async def update_agent(call: Call) -> web.StreamResponse:
        body: AgentUpdate = call.body
        fields: dict[str, object] = body.model_dump(exclude_none=True)
        default_region = await region(call)
        for name in ("number", "notify_number"):
            if name in fields:
                fields[name] = phone(str(fields[name]), name, default_region)
        for name in TEMPLATE_PARAMETERS:
            if name in fields:
                fields[name] = await usable_template(call, name, str(fields[name]))
        return await change(call, "agent.update", fields)

    @table.add(
        "PUT", "/v1/agents/{agent_id}/persona", "Set how the bot speaks for the agent", body=Persona
    )
    async def set_persona(call: Call) -> web.StreamResponse:
        persona: Persona = call.body
        return await change(call, "agent.persona", {"persona": persona.model_dump()})

    async def usable_template(call: Call, field: str, template_id: str) -> str | None:
        """A template of this agent taking no more parameters than the setting fills, or None."""
        if not template_id:
            return None
        template = await templates.get(call.org_id, template_id)
        if template is None or template.agent_id != call.param("agent_id"):
            raise not_found("template")
        most = TEMPLATE_PARAMETERS[field]
        if template.parameters > most:
            allowed = "one parameter" if most == 1 else f"{most} parameters"
            raise ApiError(
                422,
                "invalid",
                "the request body is invalid",
                {field: f"the template may take at most {allowed}"},
            )
        return template.id

    async def change(call: Call, action: str, fields: dict[str, object]) -> web.StreamResponse:
        try:
            changed = await ctx.agents.update(call.org_id, call.param("agent_id"), fields)
        except AgentConflict as exc:
            raise conflict(exc) from None
        if changed is None:
            raise not_found("agent")
        before, after = changed
        await ctx.audited(call, action, after.id, before=before.public(), after=after.public())
        await ctx.agent_changed(call.org_id, after.id)
        return json_response(after.public())

    @table.add(
        "PUT",
        "/v1/agents/{agent_id}/credentials",
        "Store the agent's credentials (encrypted; never returned)",
        body=CredentialsUpdate,
    )
    async def set_credentials(call: Call) -> web.StreamResponse:
        body: CredentialsUpdate = call.body
        secrets = body.model_dump(exclude_none=True)
        if not await ctx.agents.set_credentials(call.org_id, call.param("agent_id"), secrets):
            raise not_found("agent")
        await ctx.audited(
            call,
            "agent.credentials",
            call.param("agent_id"),
            after={"credentials_changed": sorted(secrets)},
        )
        await ctx.agent_changed(call.org_id, call.param("agent_id"))
        return json_response(
            {"agent_id": call.param("agent_id"), "credentials_changed": sorted(secrets)}
        )

    @table.add(
        "POST",
        "/v1/agents/{agent_id}/callback-key",
        "Issue a new callback URL; the old one stops working",
    )
    async def rotate_callback_key(call: Call) -> web.StreamResponse:
        agent = await ctx.agent_of(call)
        callback_key = await ctx.agents.rotate_callback_key(call.org_id, agent.id)
        await ctx.audited(
            call,
            "agent.callback_key",
            agent.id,
            before={"callback_key": "retired"},
            after={"callback_key": "issued"},
        )
        await ctx.agent_changed(call.org_id, agent.id)
        subscription = await ctx.subscribe_callbacks(agent.gupshup_app_id, callback_key)
        return json_response(
            {
                "agent_id": agent.id,
                "callback_url": ctx.callback_url(callback_key),
                "callback_subscription": subscription,
            }
        )
