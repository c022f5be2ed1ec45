"""Templates: applied for through Gupshup's Partner API, approved or rejected by Meta."""

from __future__ import annotations

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
from shared.gupshup.partner import PartnerClient, PartnerError, PartnerUnavailable, TemplateExists
from shared.models import Bubble
from shared.replies import ReplyOutbox, human_command
from shared.repositories.agents import Agent
from shared.repositories.leads import LeadRepository
from shared.repositories.templates import (
    Category,
    TemplateBodyError,
    TemplateRepository,
    parameter_count,
    render,
)
from shared.repositories.templates import (
    TemplateExists as StoredTemplateExists,
)
from shared.repositories.threads import ThreadRepository


class TemplateCreate(Body):
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


class TemplateSend(Body):
    """Send an APPROVED template to the thread's lead (also outside the 24-hour window)."""

    template_id: str = Field(min_length=1, max_length=100)
    params: list[str] = Field(default_factory=list, max_length=20)


def register(table: RouteTable, ctx: AdminContext) -> None:
    """Declare the template endpoints."""
    templates = TemplateRepository(ctx.store)
    threads = ThreadRepository(ctx.store)
    leads = LeadRepository(ctx.store)
    outbox = ReplyOutbox(ctx.store, ctx.broker)

    async def agent_with_app(call: Call) -> tuple[Agent, PartnerClient, str]:
        agent = await ctx.agent_of(call)
        if ctx.partner is None:
            raise ApiError(
                503,
                "partner_not_configured",
                "the Gupshup Partner API is not configured on this platform",
            )
        if not agent.gupshup_app_id:
            raise ApiError(409, "app_id_missing", "set the agent's gupshup_app_id first")
        return agent, ctx.partner, agent.gupshup_app_id

    @table.add(
        "POST",
        "/v1/agents/{agent_id}/templates",
        "Apply for a template (PENDING until Meta decides)",
        body=TemplateCreate,
        status=201,
    )
    async def create_template(call: Call) -> web.StreamResponse:
        body: TemplateCreate = call.body
        agent, partner, app_id = await agent_with_app(call)
        try:
            template = await templates.claim(
                call.org_id, agent.id, body.name, body.language, body.category, body.body
            )
        except StoredTemplateExists as exc:
            raise ApiError(409, "template_exists", str(exc)) from None
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
            raise ApiError(
                409, "template_exists", "Gupshup has this template already: sync to import it"
            ) from None
        except PartnerUnavailable as exc:
            await templates.drop_claim(template)
            raise ApiError(503, "partner_unavailable", f"Gupshup unavailable: {exc}") from None
        except PartnerError as exc:
            await templates.drop_claim(template)
            raise ApiError(422, "rejected_by_gupshup", str(exc)) from None
        await templates.set_status(
            call.org_id,
            agent.id,
            body.name,
            body.language,
            status=submitted.status,
            provider_id=submitted.id,
            reason=submitted.reason,
        )
        stored = await templates.get(call.org_id, template.id)
        assert stored is not None
        await ctx.audited(call, "template.create", template.id, after=stored.public())
        return json_response(stored.public(), status=201)

    @table.add("GET", "/v1/agents/{agent_id}/templates", "An agent's templates and statuses")
    async def list_templates(call: Call) -> web.StreamResponse:
        agent = await ctx.agent_of(call)
        items = await templates.list_for_agent(call.org_id, agent.id)
        return json_response({"items": [t.public() for t in items]})

    @table.add(
        "POST",
        "/v1/agents/{agent_id}/templates/sync",
        "Refresh statuses from Gupshup (and import templates made elsewhere)",
    )
    async def sync_templates(call: Call) -> web.StreamResponse:
        agent, partner, app_id = await agent_with_app(call)
        try:
            remote = await partner.list_templates(app_id)
        except PartnerError as exc:
            raise ApiError(503, "partner_unavailable", f"Gupshup unavailable: {exc}") from None
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
        await ctx.audited(call, "template.sync", agent.id, after={"templates": len(items)})
        return json_response({"items": [t.public() for t in items]})

    @table.add(
        "POST",
        "/v1/threads/{thread_id}/template",
        "Send an APPROVED template to the thread's lead",
        body=TemplateSend,
        status=202,
    )
    async def send_template(call: Call) -> web.StreamResponse:
        body: TemplateSend = call.body
        thread = await threads.get(call.org_id, call.param("thread_id"))
        if thread is None:
            raise not_found("thread")
        template = await templates.get(call.org_id, body.template_id)
        if template is None or template.agent_id != thread["agent_id"]:
            raise not_found("template")
        if not template.usable:
            raise ApiError(
                409,
                "template_not_approved",
                f"template {template.name!r} is {template.status}, not APPROVED",
            )
        if len(body.params) != template.parameters:
            raise ApiError(
                422,
                "invalid",
                "the request body is invalid",
                {"params": f"the template takes {template.parameters} parameters"},
            )
        lead = await leads.view_for_org(call.org_id, thread["lead_id"])
        if lead is None:
            raise not_found("lead")
        bubble = Bubble(
            type="template",
            text=render(template.body, body.params),
            template_id=template.id,
            params=body.params,
        )
        command = human_command(thread, lead["phone"], [bubble])
        command_id = command.command_id
        await outbox.publish(await outbox.record(command, [], f"human:{call.actor}"))
        await ctx.audited(
            call,
            "template.send",
            thread["_id"],
            after={"template_id": template.id, "command_id": command_id},
        )
        return json_response({"command_id": command_id, "thread_id": thread["_id"]}, status=202)
