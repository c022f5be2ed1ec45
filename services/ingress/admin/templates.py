"""Templates: applied for through Gupshup's Partner API, approved or rejected by Meta."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field, model_validator

from services.ingress.admin import dependencies as deps
from services.ingress.admin import framework as api
from services.ingress.admin.agents import agent_of
from services.ingress.admin.threads import thread_of
from shared.gupshup.partner import PartnerClient, PartnerError, PartnerUnavailable, TemplateExists
from shared.models import Bubble
from shared.replies import human_command
from shared.repositories.agents import Agent
from shared.repositories.templates import (
    Category,
    TemplateBodyError,
    parameter_count,
    render,
)
from shared.repositories.templates import (
    TemplateExists as StoredTemplateExists,
)


class TemplateCreate(api.Body):
    """A template to apply for; `examples` fill its {{n}} placeholders for Meta's review."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,200}$")
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    category: Category
    body: str = Field(min_length=1, max_length=1024)
    examples: list[str] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _parameters_match(self) -> TemplateCreate:
        try:
            count = parameter_count(self.body)
        except TemplateBodyError as exc:
            raise ValueError(str(exc)) from None
        if len(self.examples) != count:
            raise ValueError(f"the body has {count} parameters: give {count} examples")
        return self


class TemplateSend(api.Body):
    """Send an APPROVED template to the thread's lead (also outside the 24-hour window)."""

    template_id: str = Field(min_length=1, max_length=100)
    params: list[str] = Field(default_factory=list, max_length=20)


async def _agent_with_app(call: api.Call) -> tuple[Agent, PartnerClient, str]:
    """The agent named by the path, the Partner API client and the agent's Gupshup app id."""
    agent = await agent_of(call)
    partner = call.app[deps.PARTNER]
    if partner is None:
        raise api.ApiError(
            503,
            "partner_not_configured",
            "the Gupshup Partner API is not configured on this platform",
        )
    if not agent.gupshup_app_id:
        raise api.ApiError(409, "app_id_missing", "set the agent's gupshup_app_id first")
    return agent, partner, agent.gupshup_app_id


routes = api.RouteTable()


@routes.add("POST", "/v1/agents/{agent_id}/templates", status=201)
async def create_template(call: api.Call, body: TemplateCreate) -> web.StreamResponse:
    """Apply for a template (PENDING until Meta decides)."""
    agent, partner, app_id = await _agent_with_app(call)
    templates = call.app[deps.TEMPLATES]
    try:
        template = await templates.claim(
            call.org_id, agent.id, body.name, body.language, body.category, body.body
        )
    except StoredTemplateExists as exc:
        raise api.ApiError(409, "template_exists", str(exc)) from None
    try:
        submitted = await partner.create_template(
            app_id,
            body.name,
            body.language,
            body.category,
            body.body,
            render(body.body, body.examples),
        )
    except TemplateExists:
        await templates.drop_claim(template)
        raise api.ApiError(
            409, "template_exists", "Gupshup has this template already: sync to import it"
        ) from None
    except PartnerUnavailable as exc:
        await templates.drop_claim(template)
        raise api.ApiError(503, "partner_unavailable", f"Gupshup unavailable: {exc}") from None
    except PartnerError as exc:
        await templates.drop_claim(template)
        raise api.ApiError(422, "rejected_by_gupshup", str(exc)) from None
    stored = await templates.record_submission(
        template, status=submitted.status, provider_id=submitted.id, reason=submitted.reason
    )
    await call.audited("template.create", template.id, after=stored.public())
    return api.json_response(stored.public(), status=201)


@routes.add("GET", "/v1/agents/{agent_id}/templates")
async def list_templates(call: api.Call) -> web.StreamResponse:
    """An agent's templates and statuses."""
    agent = await agent_of(call)
    items = await call.app[deps.TEMPLATES].list_for_agent(call.org_id, agent.id)
    return api.json_response({"items": [t.public() for t in items]})


@routes.add("POST", "/v1/agents/{agent_id}/templates/sync")
async def sync_templates(call: api.Call) -> web.StreamResponse:
    """Refresh statuses from Gupshup (and import templates made elsewhere)."""
    agent, partner, app_id = await _agent_with_app(call)
    templates = call.app[deps.TEMPLATES]
    try:
        remote = await partner.list_templates(app_id)
    except PartnerError as exc:
        raise api.ApiError(503, "partner_unavailable", f"Gupshup unavailable: {exc}") from None
    for item in remote:
        try:
            await templates.set_status(
                call.org_id,
                agent.id,
                item.name,
                item.language,
                status=item.status,
                provider_id=item.id,
                reason=item.reason,
                category=item.category,
                body=item.body,
            )
        except TemplateBodyError:
            continue  # a body we cannot parameterize is not one we can send
    items = await templates.list_for_agent(call.org_id, agent.id)
    await call.audited("template.sync", agent.id, after={"templates": len(items)})
    return api.json_response({"items": [t.public() for t in items]})


@routes.add("POST", "/v1/threads/{thread_id}/template", status=202)
async def send_template(call: api.Call, body: TemplateSend) -> web.StreamResponse:
    """Send an APPROVED template to the thread's lead."""
    thread = await thread_of(call)
    template = await call.app[deps.TEMPLATES].get(call.org_id, body.template_id)
    if template is None or template.agent_id != thread.agent_id:
        raise api.not_found("template")
    if not template.usable:
        raise api.ApiError(
            409,
            "template_not_approved",
            f"template {template.name!r} is {template.status}, not APPROVED",
        )
    if len(body.params) != template.parameters:
        raise api.invalid_body("params", f"the template takes {template.parameters} parameters")
    lead = api.found(await call.app[deps.LEADS].view_for_org(call.org_id, thread.lead_id), "lead")
    bubble = Bubble(
        type="template",
        text=render(template.body, body.params),
        template_id=template.id,
        params=body.params,
    )
    agent = await call.app[deps.AGENTS].get_in_org(call.org_id, thread.agent_id)
    portfolio = agent.portfolio if agent else f"agent:{thread.agent_id}"
    command = human_command(thread, lead.address_for(portfolio), [bubble])
    outbox = call.app[deps.OUTBOX]
    await outbox.publish(await outbox.record(command, [], f"human:{call.actor}"))
    await call.audited(
        "template.send",
        thread.id,
        after={"template_id": template.id, "command_id": command.command_id},
    )
    return api.json_response({"command_id": command.command_id, "thread_id": thread.id}, status=202)
