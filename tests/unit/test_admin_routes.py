"""Every admin endpoint is a module-level function of its resource module, found by name, and
the OpenAPI document describes what it takes and answers."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

from services.ingress.admin import RESOURCES, agents, leads, organizations, threads
from services.ingress.admin.framework import RouteTable, openapi
from shared.repositories.agents import Agent
from shared.repositories.leads import LeadRecord
from shared.repositories.threads import Thread


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


def test_the_documented_lead_and_thread_have_the_fields_the_api_answers() -> None:
    """The answer models describe what the handlers build, field for field."""
    lead = LeadRecord.model_validate({"_id": "lead_1", "phone": "+6598887777"})
    view = lead.view_for("org_a").as_json()
    assert set(threads.LeadIdentity.model_fields) == set(view)
    assert set(threads.LeadShown.model_fields) == {*view, "opted_out"}
    assert set(leads.LeadDetail.model_fields) == {*view, "opted_out", "threads"}
    thread = Thread(_id="thr_1", org_id="org_a", agent_id="agt_1", lead_id="lead_1")
    assert set(threads.ThreadSummary.model_fields) == set(threads.public_thread(thread))
    assert set(threads.ThreadShown.model_fields) == {*threads.public_thread(thread), "lead"}


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


def test_query_parameters_and_answers_are_in_the_openapi_document() -> None:
    spec = openapi(leads.routes, "test")
    listing = spec["paths"]["/v1/leads"]["get"]
    assert [p["name"] for p in listing["parameters"]] == [
        "limit",
        "after",
        "phone",
        "user_id",
        "username",
    ]
    assert all(p["in"] == "query" and not p["required"] for p in listing["parameters"])
    answer = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/LeadPage"}
    assert "LeadShown" in spec["components"]["schemas"]
