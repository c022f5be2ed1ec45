"""WhatsApp templates of each agent, as approved (or not) by Meta through Gupshup."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Literal

from pymongo.errors import DuplicateKeyError

from shared.ids import derived_id, new_id
from shared.models import Bubble, TemplateEvent, utcnow
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, with_retry

Category = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


class TemplateBodyError(ValueError):
    """A template body's placeholders are not {{1}}..{{n}} without gaps."""


def parameter_count(body: str) -> int:
    """How many parameters a body takes; its placeholders must be {{1}}..{{n}}."""
    numbers = sorted({int(n) for n in PLACEHOLDER.findall(body)})
    if numbers != list(range(1, len(numbers) + 1)):
        raise TemplateBodyError("placeholders must be numbered {{1}}, {{2}} ... without gaps")
    return len(numbers)


def first_name_of(name: str | None) -> str:
    """How a template greets a lead: their first name, or "there"."""
    return (name or "").split(" ")[0] or "there"


def render(body: str, params: list[str]) -> str:
    """The body with its placeholders filled."""
    return PLACEHOLDER.sub(lambda m: params[int(m.group(1)) - 1], body)


class Template(StoredRecord):
    """A template of an agent."""

    org_id: str
    agent_id: str
    name: str
    language: str
    category: str
    body: str
    parameters: int
    status: str  # PENDING, APPROVED, REJECTED, PAUSED, DISABLED
    provider_id: str | None = None
    reason: str | None = None
    created_at: datetime
    status_at: datetime | None = None

    @property
    def usable(self) -> bool:
        """Only APPROVED templates may be sent."""
        return self.status == "APPROVED" and self.provider_id is not None

    def public(self) -> dict[str, object]:
        """What the API shows of a template."""
        shown = self.model_dump(mode="json", exclude={"id"})
        return {"template_id": self.id, **shown}


class TemplateExists(Exception):
    """The agent has a template with that name and language already."""


class TemplateRepository:
    """Store templates and keep their status."""

    def __init__(self, store: Store) -> None:
        self._templates = store.db["templates"]
        self._usage = store.db["template_usage"]

    async def fallback_for(
        self, org_id: str, agent_id: str, template_id: str | None, lead_name: str | None
    ) -> list[Bubble]:
        """The agent's fallback template as bubbles for one lead ([] if none is usable now)."""
        return await self.filled(org_id, agent_id, template_id, [first_name_of(lead_name)])

    async def filled(
        self, org_id: str, agent_id: str, template_id: str | None, params: list[str]
    ) -> list[Bubble]:
        """An agent's template as bubbles, its parameters the first of `params` it takes.

        [] when it is not set, not the agent's, not usable now, or takes more parameters
        than given.
        """
        if not template_id:
            return []
        template = await self.get(org_id, template_id)
        if template is None or template.agent_id != agent_id or not template.usable:
            return []
        used = params[: template.parameters]
        if len(used) != template.parameters:
            return []
        text = render(template.body, used)
        return [Bubble(type="template", text=text, template_id=template.id, params=used)]

    async def claim(
        self, org_id: str, agent_id: str, name: str, language: str, category: str, body: str
    ) -> Template:
        """Reserve a name and language for a new template (status PENDING until submitted)."""
        template = Template(
            id=derived_id("tpl", agent_id, name, language),
            org_id=org_id,
            agent_id=agent_id,
            name=name,
            language=language,
            category=category,
            body=body,
            parameters=parameter_count(body),
            status="PENDING",
            created_at=utcnow(),
        )
        try:
            await with_retry(lambda: self._templates.insert_one(template.model_dump(by_alias=True)))
        except DuplicateKeyError:
            raise TemplateExists(f"template {name!r} ({language}) exists already") from None
        return template

    async def record_submission(
        self, claim: Template, *, status: str, provider_id: str, reason: str | None
    ) -> Template:
        """Record the provider's answer to a claimed template's application; the template as
        now stored."""
        await self.set_status(
            claim.org_id,
            claim.agent_id,
            claim.name,
            claim.language,
            status=status,
            provider_id=provider_id,
            reason=reason,
        )
        stored = await self.get(claim.org_id, claim.id)
        assert stored is not None  # claimed above, and only a failed submission drops it
        return stored

    async def drop_claim(self, template: Template) -> None:
        """Give a name back when the submission failed."""
        await with_retry(
            lambda: self._templates.delete_one(
                {"_id": template.id, "org_id": template.org_id, "provider_id": None}
            )
        )

    async def record_event(self, event: TemplateEvent) -> bool:
        """Record a status Gupshup reported for a template; False when the event names none."""
        if not event.name or not event.language:
            return False
        await self.set_status(
            event.org_id,
            event.agent_id,
            event.name,
            event.language,
            status=event.status,
            provider_id=event.template_id,
            reason=event.reason,
            at=event.at,
        )
        return True

    async def set_status(
        self,
        org_id: str,
        agent_id: str,
        name: str,
        language: str,
        *,
        status: str,
        provider_id: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
        category: str | None = None,
        body: str | None = None,
    ) -> None:
        """Record the provider's view of a template, creating it if only the provider knew it."""
        fields: Document = {"status": status.upper(), "reason": reason, "status_at": at or utcnow()}
        if provider_id:
            fields["provider_id"] = provider_id
        query = {"org_id": org_id, "agent_id": agent_id, "name": name, "language": language}
        result = await with_retry(lambda: self._templates.update_one(query, {"$set": fields}))
        if result.matched_count == 0 and body is not None:
            with contextlib.suppress(DuplicateKeyError):  # created meanwhile: next sync updates
                await with_retry(
                    lambda: self._templates.insert_one(
                        {
                            "_id": derived_id("tpl", agent_id, name, language),
                            **query,
                            "category": (category or "UTILITY").upper(),
                            "body": body,
                            "parameters": parameter_count(body),
                            "created_at": utcnow(),
                            **fields,
                        }
                    )
                )

    async def list_for_agent(self, org_id: str, agent_id: str) -> list[Template]:
        """An agent's templates."""
        cursor = self._templates.find({"org_id": org_id, "agent_id": agent_id}).sort("name", 1)
        return [Template.model_validate(doc) async for doc in cursor]

    async def get(self, org_id: str, template_id: str) -> Template | None:
        """A template of the organization."""
        doc = await with_retry(
            lambda: self._templates.find_one({"_id": template_id, "org_id": org_id})
        )
        return Template.model_validate(doc) if doc else None

    async def leads_reached(self, agent_id: str, since: datetime) -> set[str]:
        """Unique leads the agent reached with business-initiated messages since a time."""
        cursor = await self._usage.aggregate(
            [
                {
                    "$match": {
                        "agent_id": agent_id,
                        "business_initiated": True,
                        "at": {"$gte": since},
                    }
                },
                {"$group": {"_id": "$lead_id"}},
            ]
        )
        return {doc["_id"] async for doc in cursor}

    async def record_use(
        self,
        template: Template,
        *,
        lead_id: str,
        thread_id: str,
        send_id: str,
        business_initiated: bool = False,
    ) -> None:
        """Keep who was sent which template when, for compliance and cost reports."""
        with contextlib.suppress(DuplicateKeyError):  # the same send recorded twice
            await with_retry(
                lambda: self._usage.insert_one(
                    {
                        "_id": send_id,
                        "usage_id": new_id("use"),
                        "org_id": template.org_id,
                        "agent_id": template.agent_id,
                        "lead_id": lead_id,
                        "thread_id": thread_id,
                        "template_id": template.id,
                        "name": template.name,
                        "category": template.category,
                        "business_initiated": business_initiated,
                        "at": utcnow(),
                    }
                )
            )
