"""Provider events that are not about one send: template status changes and billing events.

Both are recorded as they come, idempotently: a template's status is set (the latest word of
Meta's wins), a billing event is stored once by its id.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.logs import get_logger
from shared.models import BillingEvent, TemplateEvent
from shared.repositories.costs import CostRepository
from shared.repositories.templates import TemplateRepository

log = get_logger(__name__)


@dataclass(frozen=True)
class ProviderEvents:
    """Handle Gupshup's template and billing events."""

    templates: TemplateRepository
    costs: CostRepository

    async def template_status(self, event: TemplateEvent) -> None:
        """Keep the agent's template status current (Meta approved, rejected, paused it)."""
        if not await self.templates.record_event(event):
            log.warning("template event without name or language", template_id=event.template_id)

    async def billing(self, event: BillingEvent) -> None:
        """Keep Gupshup's per-message pricing (append-only, once per event)."""
        await self.costs.record_billing(event)
