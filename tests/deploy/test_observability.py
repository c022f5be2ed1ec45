"""Monitoring: every service scraped, alerts that parse, name metrics that exist and point at
their runbook section, and a dashboard built from the same metrics."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

import services
import shared
from tests.deploy.conftest import (
    DASHBOARD,
    README,
    RUNBOOK,
    SERVICES,
    Rendered,
    github_anchor,
)

# Importing every module registers every metric the services define, wherever it is.
for package in (shared, services):
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
# Grafana's variables, replaced by plausible values before an expression is parsed.
DASHBOARD_VARIABLES = {
    "$__rate_interval": "5m",
    "$namespace": "realtybot",
    "$broker_prefix": "realtybot",
}


def exported_metric_names() -> set[str]:
    """Every sample name the code registers (histograms' _bucket, _sum, _count included)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("realtybot_")
        for suffix in suffixes.get(family.type, ("",))
    }


def documented_rabbitmq_metrics() -> set[str]:
    """The RabbitMQ plugin's metrics the README says the alerts and the dashboard assume."""
    section = README.read_text().split("### RabbitMQ metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(rabbitmq_[a-z_]+)`", section, re.M))


def selectors(expression: Any) -> list[Any]:
    """Every vector selector of a parsed PromQL expression."""
    if isinstance(expression, promql_parser.VectorSelector):
        return [expression]
    if isinstance(expression, promql_parser.MatrixSelector):
        return [expression.vector_selector]
    if isinstance(expression, promql_parser.BinaryExpr):
        return selectors(expression.lhs) + selectors(expression.rhs)
    if isinstance(expression, promql_parser.AggregateExpr):
        inner = selectors(expression.expr)
        return inner + (selectors(expression.param) if expression.param is not None else [])
    if isinstance(expression, promql_parser.Call):
        return [s for argument in expression.args for s in selectors(argument)]
    if isinstance(expression, (promql_parser.ParenExpr, promql_parser.UnaryExpr)):
        return selectors(expression.expr)
    if isinstance(expression, promql_parser.SubqueryExpr):
        return selectors(expression.expr)
    return []


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query reads (it must parse)."""
    parsed = promql_parser.parse(query)
    return {s.name for s in selectors(parsed) if s.name}


def queue_patterns(query: str) -> list[str]:
    """The regular expressions the query matches RabbitMQ queue names with."""
    return [
        m.value
        for s in selectors(promql_parser.parse(query))
        for m in s.matchers.matchers
        if m.name == "queue"
    ]


def alert_rules(rendered: Rendered) -> list[dict[str, Any]]:
    """Every alerting rule of the PrometheusRule."""
    (rule_set,) = rendered.of_kind("PrometheusRule")
    return [r for g in rule_set["spec"]["groups"] for r in g["rules"] if "alert" in r]


def dashboard_queries() -> list[str]:
    """Every query of the dashboard, with its variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                query = query.replace(variable, value)
            queries.append(query)
    return queries


def runbook_anchors() -> set[str]:
    """The anchors of RUNBOOK.md's sections."""
    return {
        github_anchor(line[3:])
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }


# --- scraping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_scraped_on_its_metrics_port(rendered: Rendered, service: str) -> None:
    monitor = rendered.one("ServiceMonitor", f"realtybot-{service}")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selected = [
        s
        for s in rendered.of_kind("Service")
        if all(
            s["metadata"]["labels"].get(k) == v
            for k, v in monitor["spec"]["selector"]["matchLabels"].items()
        )
    ]
    ports = [p for s in selected for p in s["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert len(ports) == 1
    pod_labels = rendered.one("Deployment", f"realtybot-{service}")["spec"]["template"]["metadata"][
        "labels"
    ]
    (service_object,) = [
        s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert all(pod_labels.get(k) == v for k, v in service_object["spec"]["selector"].items())


# --- alerts -----------------------------------------------------------------------------------


def test_every_alert_is_actionable(rendered: Rendered) -> None:
    anchors = runbook_anchors()
    for rule in alert_rules(rendered):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "deploy/k8s/RUNBOOK.md", name
        assert anchor == name.lower() and anchor in anchors, name


def test_every_runbook_section_belongs_to_an_alert(rendered: Rendered) -> None:
    alerts = {rule["alert"].lower() for rule in alert_rules(rendered)}
    assert runbook_anchors() == alerts


def test_runbook_uses_real_cli_commands() -> None:
    runbook = RUNBOOK.read_text()
    for command in ("dlq stats", "dlq replay --stage", "agent suspend", "agent activate"):
        assert f"rb {command}" in runbook, command
    for stage in re.findall(r"dlq replay --stage (\w+)", runbook):
        assert stage == "<stage>" or stage in SERVICES


def test_alert_expressions_read_metrics_the_code_exports(rendered: Rendered) -> None:
    known = exported_metric_names() | documented_rabbitmq_metrics() | {"up"}
    for rule in alert_rules(rendered):
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: {sorted(names - known)}"


def test_alerts_cover_what_on_call_must_know(rendered: Rendered) -> None:
    read = set().union(*(metric_names(rule["expr"]) for rule in alert_rules(rendered)))
    assert {
        "rabbitmq_detailed_queue_messages_ready",  # a queue growing with no acks
        "realtybot_messages_processed_total",
        "realtybot_dead_lettered_total",  # dead letters appearing
        "realtybot_outbound_sends_total",  # send failure ratio
        "realtybot_webhook_duration_seconds_bucket",  # webhook latency objective
        "realtybot_messaging_tier_usage_ratio",  # an agent near its tier
        "realtybot_brain_fallbacks_total",  # the model falling back
        "up",  # a service down
    } <= read
    down = {
        r["labels"].get("service")
        for r in alert_rules(rendered)
        if r["alert"] == "RealtybotServiceDown"
    }
    assert down == set(SERVICES)


def test_queue_names_follow_the_broker_prefix(rendered: Rendered) -> None:
    prefix = rendered.config()["BROKER_PREFIX"]
    patterns = [p for rule in alert_rules(rendered) for p in queue_patterns(rule["expr"])]
    patterns += [p for query in dashboard_queries() for p in queue_patterns(query)]
    assert patterns
    for pattern in patterns:
        assert re.fullmatch(pattern, f"{prefix}.router") or re.fullmatch(
            pattern, f"{prefix}.router.dead"
        ), pattern
        assert not re.fullmatch(pattern, f"other{prefix}.router"), pattern


def test_rabbitmq_metrics_are_ones_the_plugin_serves() -> None:
    # The per-queue families of /metrics/detailed (queue_coarse_metrics, queue_consumer_count).
    assert documented_rabbitmq_metrics() == {
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_consumers",
    }


# --- dashboard --------------------------------------------------------------------------------


def test_dashboard_queries_parse_and_read_exported_metrics() -> None:
    known = exported_metric_names() | documented_rabbitmq_metrics() | {"up"}
    queries = dashboard_queries()
    assert len(queries) >= 20
    for query in queries:
        names = metric_names(query)
        assert names and names <= known, f"{query}: {sorted(names - known)}"


def test_dashboard_shows_what_the_operators_asked_for() -> None:
    read = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert {
        "realtybot_messages_processed_total",  # throughput per stage
        "realtybot_handler_duration_seconds_bucket",  # latency per stage
        "rabbitmq_detailed_queue_messages_ready",  # queue depths
        "realtybot_dead_lettered_total",  # errors
        "realtybot_outbound_sends_total",  # per-agent sends
        "realtybot_outbound_throttled_total",  # throttling
        "realtybot_llm_call_seconds_bucket",  # LLM latency
        "realtybot_brain_fallbacks_total",  # fallbacks
    } <= read


def test_dashboard_is_well_formed_and_shipped_as_a_config_map(rendered: Rendered) -> None:
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "broker_prefix"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    config_map = rendered.one("ConfigMap", "realtybot-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["realtybot.json"]) == dashboard
