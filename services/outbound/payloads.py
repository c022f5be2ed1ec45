"""Gupshup's requests for our bubbles: which send API a bubble goes through, with what body.

Only the building is here; `shared.gupshup.client` makes the call and classifies Gupshup's
answer.
"""

from __future__ import annotations

from shared.gupshup.client import GupshupClient, SendResult
from shared.models import Bubble
from shared.phones import wa_id
from shared.repositories.agents import Agent
from shared.repositories.templates import Template


def session_message(bubble: Bubble, send_id: str) -> dict[str, object]:
    """Gupshup's `message` for a free-form bubble: text, a list the lead picks from, or a
    request that the lead share their number."""
    if bubble.type == "contact_request":
        return {"type": "request_contact_info", "body": {"text": bubble.text}}
    if bubble.type != "list":
        return {"type": "text", "text": bubble.text}
    return {
        "type": "list",
        "title": "",
        "body": bubble.text,
        "msgid": send_id,
        "globalButtons": [{"type": "text", "title": bubble.button or "Choose"}],
        "items": [
            {
                "title": "",
                "subtitle": "",
                "options": [
                    {
                        "type": "text",
                        "title": choice.title,
                        "description": choice.description or "",
                        "postbackText": choice.id,
                    }
                    for choice in bubble.choices
                ],
            }
        ],
    }


async def submit(
    gupshup: GupshupClient,
    *,
    agent: Agent,
    api_key: str,
    destination: str,
    bubble: Bubble,
    send_id: str,
    template: Template | None,
) -> SendResult:
    """Hand one bubble to Gupshup from the agent's number: as its approved template when it
    has one, else as a free-form message."""
    if template is not None:
        return await gupshup.send_template_message(
            api_key=api_key,
            app=agent.gupshup_app,
            source=wa_id(agent.number),
            destination=destination,
            template_id=template.provider_id or "",
            params=bubble.params,
        )
    return await gupshup.send_session_message(
        api_key=api_key,
        app=agent.gupshup_app,
        source=wa_id(agent.number),
        destination=destination,
        message=session_message(bubble, send_id),
    )
