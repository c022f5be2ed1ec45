"""Attribution of a Gupshup callback: the one check that a body belongs to the agent whose
callback URL received it, and the events it carries for that agent.

`attribute` is written once and called in two places with the same arguments, so the two can
never disagree about what belongs to an agent:

- ingress calls it before publishing, to answer 400 (`MalformedPayload`) or 403 (`WrongApp`)
  before any 2xx, and throws the events away: what it publishes is the `inbound.raw.v1` body
  exactly as received;
- the router calls it again on that body to get the typed events it publishes.

Why the router parses again instead of ingress publishing the events it already built: the
message kinds stay as they are (ingress publishes `inbound.raw.v1`, which a router of the
previous release must keep accepting during a rolling update), so the broker carries the raw
body and the router has to read it anyway; next to that parse the identity check costs
nothing, and repeating it with the same function means the router publishes only what ingress
would accept for the agent as it is now. Ingress itself keeps one parse per webhook, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.gupshup.parsers import MalformedPayload, app_identity, parse_webhook
from shared.models import RoutedEvent
from shared.repositories.agents import Agent

__all__ = ["MalformedPayload", "WrongApp", "attribute"]


class WrongApp(ValueError):
    """The callback names a Gupshup app that is not the agent's; the message says which field."""


def attribute(
    body: Mapping[str, Any], agent: Agent, *, event_id: str, received_at: datetime
) -> list[RoutedEvent]:
    """The events of one callback body, as events of `agent`, numbered f"{event_id}:{index}".

    Raises MalformedPayload when the body is not a callback we can read, then WrongApp when
    it names another app: v2 `app`, or v3 `gs_app_id` where the agent has an app id.
    """
    events = parse_webhook(
        body, org_id=agent.org_id, agent_id=agent.id, event_id=event_id, received_at=received_at
    )
    identity = app_identity(body)
    if identity.app_name is not None and identity.app_name != agent.gupshup_app:
        raise WrongApp("app does not match the agent")
    if agent.gupshup_app_id and identity.app_id and identity.app_id != agent.gupshup_app_id:
        raise WrongApp("gs_app_id does not match the agent")
    return events
