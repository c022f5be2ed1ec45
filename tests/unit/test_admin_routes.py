"""Every admin endpoint is a module-level function of its resource module, found by name."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

from services.ingress.admin import RESOURCES, agents, organizations
from services.ingress.admin.framework import RouteTable, openapi
from shared.repositories.agents import Agent


def test_every_endpoint_is_a_documented_top_level_function_of_its_module() -> None:
    for resource in RESOURCES:
        for route in resource.routes.routes:
            handler = route.handler
            assert getattr(resource, handler.__name__) is handler, route.path
            assert inspect.getdoc(handler), f"{handler.__name__} has no docstring"


def test_a_body_model_is_the_type_of_the_handlers_parameter_after_call() -> None:
    bodies = {route.handler: route.body for route in agents.routes.routes}
    assert bodies[agents.create_agent] is agents.AgentCreate
    assert bodies[agents.set_persona] is agents.Persona
    assert bodies[agents.get_agent] is None


def test_the_summary_is_the_docstring_without_its_final_period() -> None:
    spec = openapi(organizations.routes, "test")
    assert spec["paths"]["/v1/organization"]["get"]["summary"] == "The caller's organization"


def test_operation_ids_are_unique() -> None:
    table = RouteTable([route for resource in RESOURCES for route in resource.routes.routes])
    names = [route.handler.__name__ for route in table.routes]
    assert len(names) == len(set(names))


def test_the_documented_agent_has_the_fields_an_agent_read_answers() -> None:
    agent = Agent(
        _id="agt_1",
        org_id="org_a",
        name="Jason Tan",
        number="+6591110001",
        gupshup_app="TanHomesSG",
        callback_key_hash="h",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert set(agents.AgentShown.model_fields) == set(agent.public())
    assert {"business_portfolio_id", "bsuid_enabled", "bsuid_reason"} <= set(agent.public())
