"""Every admin endpoint is a module-level function of its resource module, found by name."""

from __future__ import annotations

import inspect

from services.ingress.admin import RESOURCES, agents, organizations
from services.ingress.admin.framework import RouteTable, openapi


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
