"""What the rendered overlays promise: safe pods, graceful rollouts, real settings, documented
Secrets, only the public routes published, scaling on the right queues, closed networking."""

from __future__ import annotations

import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.ingress.calendar import add_calendar_route
from services.ingress.webhooks import create_webhook_app
from shared.settings import Settings, load_settings
from tests.conftest import make_settings
from tests.deploy.conftest import (
    CONSUMERS,
    K8S,
    README,
    ROOT,
    SERVICES,
    Document,
    Rendered,
    all_containers,
    pod_specs,
)

SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
HEALTH_ROUTES = {"/healthz", "/readyz", "/metrics"}
CLOSING_MARGIN_SECONDS = 5


def component(document: Document) -> str:
    """The app.kubernetes.io/component label of an object."""
    labels: dict[str, str] = document["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component", "")


def service_port(rendered: Rendered, service: str) -> int:
    """The port the service listens on for health and metrics, from the rendered settings."""
    name = "INGRESS_PORT" if service == "ingress" else f"{service.upper()}_PORT"
    return int(rendered.config()[name])


def shutdown_grace(rendered: Rendered) -> float:
    """SHUTDOWN_GRACE_SECONDS as the pods see it."""
    default = Settings.model_fields["shutdown_grace_seconds"].default
    return float(rendered.config().get("SHUTDOWN_GRACE_SECONDS", default))


def drain_seconds(rendered: Rendered) -> float:
    """INGRESS_DRAIN_SECONDS as the pods see it: ingress serves this long after SIGTERM."""
    default = Settings.model_fields["ingress_drain_seconds"].default
    return float(rendered.config().get("INGRESS_DRAIN_SECONDS", default))


def prestop_seconds(container: Document) -> float:
    """How long the container's preStop hook sleeps."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    return float(command[1])


def named_port(container: Document, name: str) -> int:
    """The number of a container port given its name."""
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return int(ports[name])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector matches these labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def deployment(rendered: Rendered, service: str) -> Document:
    """The Deployment of a service."""
    return rendered.one("Deployment", f"realtybot-{service}")


# --- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_its_own_command_with_a_pinned_image(
    rendered: Rendered, service: str
) -> None:
    (container,) = deployment(rendered, service)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [service]
    image = container["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest" and "/" not in tag, image
    assert container.get("imagePullPolicy", "IfNotPresent") != "Always"


@pytest.mark.parametrize("service", SERVICES)
def test_probes_check_health_and_readiness_on_the_service_port(
    rendered: Rendered, service: str
) -> None:
    (container,) = deployment(rendered, service)["spec"]["template"]["spec"]["containers"]
    port_name = "http" if service == "ingress" else "metrics"
    assert named_port(container, port_name) == service_port(rendered, service)
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"] == {"path": "/healthz", "port": port_name}
    assert readiness["httpGet"] == {"path": "/readyz", "port": port_name}
    if service == "ingress":
        assert named_port(container, "admin") == int(rendered.config()["ADMIN_PORT"])


def test_every_pod_runs_unprivileged_on_a_read_only_filesystem(rendered: Rendered) -> None:
    for owner, pod in pod_specs(rendered):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, owner
        assert security["runAsUser"] == 10001, owner  # the image's user
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, owner
        assert pod["automountServiceAccountToken"] is False, owner
        assert pod["enableServiceLinks"] is False, owner
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in all_containers(pod):
            where = f"{owner}/{container['name']}"
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for owner, pod in pod_specs(rendered):
        for container in all_containers(pod):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) == {"cpu", "memory"}, f"{owner} {kind}"


@pytest.mark.parametrize("service", SERVICES)
def test_grace_period_covers_prestop_and_the_in_flight_work(
    rendered: Rendered, service: str
) -> None:
    pod = deployment(rendered, service)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pause = prestop_seconds(container)
    assert pause >= 5  # endpoints and load balancers let go of the pod first
    # Ingress drains first, then gives requests in progress the same grace as messages.
    drain = drain_seconds(rendered) if service == "ingress" else 0
    needed = pause + drain + shutdown_grace(rendered) + CLOSING_MARGIN_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("service", SERVICES)
def test_rollouts_add_a_pod_before_removing_one(rendered: Rendered, service: str) -> None:
    spec = deployment(rendered, service)["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    assert "replicas" not in spec  # the autoscaler owns the count
    template_labels = spec["template"]["metadata"]["labels"]
    assert selects(spec["selector"]["matchLabels"], template_labels)
    assert template_labels["app.kubernetes.io/component"] == service


@pytest.mark.parametrize("service", SERVICES)
def test_replicas_spread_and_survive_drains(rendered: Rendered, service: str) -> None:
    pod = deployment(rendered, service)["spec"]["template"]
    keys = {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["spec"]["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod["metadata"]["labels"])
    budgets = [
        b
        for b in rendered.of_kind("PodDisruptionBudget")
        if selects(b["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    ]
    assert len(budgets) == 1
    assert budgets[0]["spec"]["maxUnavailable"] == 1


def test_migration_job_migrates_the_store_then_declares_the_topology(rendered: Rendered) -> None:
    job = rendered.one("Job", "realtybot-migrate")
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["realtybot", "migrate"]]
    assert [c["args"] for c in pod["containers"]] == [["realtybot", "topology", "declare"]]
    assert pod["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0


def test_migration_step_applies_the_job_with_its_settings_and_no_service(
    rendered: Rendered,
) -> None:
    # The README applies `-l 'app.kubernetes.io/component notin (<services>)'` first.
    first = [d for d in rendered.documents if component(d) not in SERVICES]
    kinds = {d["kind"] for d in first}
    assert {"Job", "ConfigMap", "NetworkPolicy", "ServiceAccount", "Namespace"} <= kinds
    assert not kinds & {"Deployment", "HorizontalPodAutoscaler", "ScaledObject"}
    readme = README.read_text()
    assert f"app.kubernetes.io/component notin ({','.join(SERVICES)})" in readme
    job_pod = rendered.one("Job", "realtybot-migrate")["spec"]["template"]["spec"]
    config_names = {
        source["configMapRef"]["name"]
        for c in all_containers(job_pod)
        for source in c.get("envFrom", [])
    }
    assert config_names <= {d["metadata"]["name"] for d in first}


# --- settings and secrets --------------------------------------------------------------------


def environment_names(rendered: Rendered) -> set[str]:
    """Every variable name the manifests give a process."""
    names = set(rendered.config())
    for _owner, pod in pod_specs(rendered):
        for container in all_containers(pod):
            names |= {e["name"] for e in container.get("env", [])}
    return names


def test_every_variable_is_a_real_setting(rendered: Rendered) -> None:
    unknown = environment_names(rendered) - SETTINGS_VARIABLES
    assert not unknown, f"not settings fields in shared/settings.py: {sorted(unknown)}"


def test_rendered_configuration_is_valid_for_production(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in rendered.config().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # without CREDENTIALS_KEYS: only the key ring's users need it
    assert settings.environment == "production"
    assert settings.http_host == "0.0.0.0"
    assert settings.log_format == "json"


def test_no_service_link_variable_could_shadow_a_setting(rendered: Rendered) -> None:
    # Belt and braces with enableServiceLinks: false.
    for service in rendered.of_kind("Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        assert not {f"{prefix}_PORT", f"{prefix}_HOST"} & SETTINGS_VARIABLES


def referenced_secrets(rendered: Rendered) -> dict[str, set[str]]:
    """Secret name to the keys the manifests read from it."""
    found: dict[str, set[str]] = {}
    for _owner, pod in pod_specs(rendered):
        for container in all_containers(pod):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.setdefault(ref["name"], set()).add(ref["key"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    found.setdefault(source["secretRef"]["name"], set())
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                found.setdefault(volume["secret"]["secretName"], set())
    for ingress in rendered.of_kind("Ingress"):
        for tls in ingress["spec"].get("tls", []):
            found.setdefault(tls["secretName"], set()).update({"tls.crt", "tls.key"})
    for auth in rendered.of_kind("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            found.setdefault(ref["name"], set()).add(ref["key"])
    return found


def test_every_secret_is_documented_with_how_to_create_it(rendered: Rendered) -> None:
    readme = README.read_text()
    secrets = referenced_secrets(rendered)
    assert secrets
    for name, keys in secrets.items():
        assert re.search(rf"create secret (generic|tls) {re.escape(name)}\b", readme), name
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        for key in keys:
            assert f"`{key}`" in row, f"{name}: key {key} not in its README row"


def test_secrets_are_never_committed(rendered: Rendered) -> None:
    generated = rendered.of_kind("Secret")
    if rendered.overlay == "prod":
        assert generated == []
    else:
        # The dev overlay generates them from git-ignored files (tests use the examples).
        names = {s["metadata"]["name"] for s in generated}
        assert names == {"realtybot-broker", "realtybot-store", "realtybot-credentials-keys"}
        local = [
            f"deploy/k8s/overlays/dev/secrets/{n.removeprefix('realtybot-')}.env" for n in names
        ]
        ignored = subprocess.run(
            ["git", "check-ignore", *local], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert sorted(ignored.stdout.split()) == sorted(local)
    for path in K8S.rglob("*.yaml"):
        assert not re.search(r"^kind:\s*Secret\s*$", path.read_text(), re.M), path


def test_only_the_processes_that_decrypt_credentials_get_the_key_ring(rendered: Rendered) -> None:
    # KeyRing.from_settings is called by ingress and outbound only; the others start without.
    readers = {
        owner
        for owner, pod in pod_specs(rendered)
        for container in all_containers(pod)
        for variable in container.get("env", [])
        if variable.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        == "realtybot-credentials-keys"
    }
    assert readers == {"realtybot-ingress", "realtybot-outbound"}


def test_optional_secrets_are_marked_optional(rendered: Rendered) -> None:
    optional = {"realtybot-anthropic", "realtybot-gupshup-partner"}
    for owner, pod in pod_specs(rendered):
        for container in all_containers(pod):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref.get("optional", False) == (ref["name"] in optional), owner


# --- what is exposed -------------------------------------------------------------------------


def public_routes() -> set[str]:
    """The routes of ingress's public listener, as the service builds it."""
    app = create_webhook_app(make_settings(), None, None, None)  # type: ignore[arg-type]
    add_calendar_route(app, None, None)  # type: ignore[arg-type]
    return {route.resource.canonical for route in app.router.routes() if route.resource}


def test_ingress_publishes_exactly_the_public_routes(rendered: Rendered) -> None:
    (ingress,) = rendered.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    prefixes = {p["path"] for p in paths}
    assert prefixes == {"/v1/webhooks/", "/v1/calendar/"}
    for path in paths:
        assert path["pathType"] == "Prefix"
        assert path["backend"]["service"] == {"name": "realtybot-ingress", "port": {"name": "http"}}
    routes = public_routes()
    for route in routes - HEALTH_ROUTES:
        assert any(route.startswith(prefix) for prefix in prefixes), route
    for route in HEALTH_ROUTES:
        assert not any(route.startswith(prefix) for prefix in prefixes), route
    for prefix in prefixes:
        assert any(route.startswith(prefix) for route in routes), prefix


def test_public_host_is_the_callback_base(rendered: Rendered) -> None:
    (ingress,) = rendered.of_kind("Ingress")
    host = ingress["spec"]["rules"][0]["host"]
    base = urlsplit(rendered.config()["PUBLIC_BASE_URL"])
    assert base.scheme == "https" and base.hostname == host
    assert [host] == [h for tls in ingress["spec"]["tls"] for h in tls["hosts"]]


def test_admin_api_stays_inside_the_cluster(rendered: Rendered) -> None:
    admin = rendered.one("Service", "realtybot-admin")
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [{"name": "admin", "port": 8081, "targetPort": "admin"}]
    for service in rendered.of_kind("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    backends = [
        p["backend"]["service"]
        for i in rendered.of_kind("Ingress")
        for r in i["spec"]["rules"]
        for p in r["http"]["paths"]
    ]
    assert all(b["name"] != "realtybot-admin" and b["port"] != {"name": "admin"} for b in backends)


@pytest.mark.parametrize("service", SERVICES)
def test_services_reach_their_pods_ports(rendered: Rendered, service: str) -> None:
    template = deployment(rendered, service)["spec"]["template"]
    (container,) = template["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    matching = [
        s
        for s in rendered.of_kind("Service")
        if selects(s["spec"]["selector"], template["metadata"]["labels"])
    ]
    assert matching
    for s in matching:
        assert {p["targetPort"] for p in s["spec"]["ports"]} <= port_names


# --- scaling ----------------------------------------------------------------------------------


def test_ingress_scales_on_cpu(rendered: Rendered) -> None:
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "realtybot-ingress"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("service", CONSUMERS)
def test_each_consumer_scales_on_its_own_queue(rendered: Rendered, service: str) -> None:
    scaled = rendered.one("ScaledObject", f"realtybot-{service}")
    spec: dict[str, Any] = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == f"realtybot-{service}"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    prefix = rendered.config()["BROKER_PREFIX"]
    assert trigger["metadata"]["queueName"] == f"{prefix}.{service}"  # shared/broker.py Topology
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert int(trigger["metadata"]["value"]) > 0
    auth = rendered.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {"parameter": "host", "name": "realtybot-broker", "key": "AMQP_URL"} in auth["spec"][
        "secretTargetRef"
    ]


def test_production_keeps_more_than_one_replica_of_everything(
    rendered_overlays: dict[str, Rendered],
) -> None:
    prod = rendered_overlays["prod"]
    (hpa,) = prod.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2
    for scaled in prod.of_kind("ScaledObject"):
        assert scaled["spec"]["minReplicaCount"] >= 2


def test_scaling_bounds_are_documented(rendered_overlays: dict[str, Rendered]) -> None:
    readme = README.read_text()
    for service in SERVICES:
        bounds = []
        for overlay in ("dev", "prod"):
            rendered = rendered_overlays[overlay]
            if service == "ingress":
                spec = rendered.one("HorizontalPodAutoscaler", "realtybot-ingress")["spec"]
                bounds.append(f"{spec['minReplicas']}-{spec['maxReplicas']}")
            else:
                spec = rendered.one("ScaledObject", f"realtybot-{service}")["spec"]
                bounds.append(f"{spec['minReplicaCount']}-{spec['maxReplicaCount']}")
        row = next(line for line in readme.splitlines() if line.startswith(f"| {service} |"))
        assert row.rstrip(" |").endswith(f"| {bounds[0]} | {bounds[1]}"), row


# --- network ----------------------------------------------------------------------------------


def policies(rendered: Rendered) -> dict[str, Document]:
    """NetworkPolicies by name."""
    return {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("NetworkPolicy")}


def test_network_is_closed_by_default(rendered: Rendered) -> None:
    deny = policies(rendered)["realtybot-default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_dns_and_data_stores_are_reachable(rendered: Rendered) -> None:
    specs = policies(rendered)
    dns_ports = {
        (p["protocol"], p["port"]) for p in specs["realtybot-allow-dns"]["egress"][0]["ports"]
    }
    assert dns_ports == {("UDP", 53), ("TCP", 53)}
    stores = specs["realtybot-allow-broker-and-store"]
    assert stores["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "realtybot"}}
    ports = {p["port"] for rule in stores["egress"] for p in rule["ports"]}
    assert ports == {5671, 5672, 27017}


def test_only_ingress_brain_and_outbound_reach_the_internet(rendered: Rendered) -> None:
    https = policies(rendered)["realtybot-allow-https-out"]
    (expression,) = https["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component"
    assert set(expression["values"]) == {"ingress", "brain", "outbound"}
    (rule,) = https["egress"]
    assert [p["port"] for p in rule["ports"]] == [443]
    (block,) = rule["to"]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        block["ipBlock"]["except"]
    )
    egress_policies = [
        name
        for name, spec in policies(rendered).items()
        if "Egress" in spec["policyTypes"] and spec.get("egress")
    ]
    assert sorted(egress_policies) == sorted(
        ["realtybot-allow-dns", "realtybot-allow-broker-and-store", "realtybot-allow-https-out"]
    )


def test_inbound_traffic_is_only_what_each_port_needs(rendered: Rendered) -> None:
    specs = policies(rendered)
    config = rendered.config()
    public = specs["realtybot-allow-public-traffic"]
    (rule,) = public["ingress"]
    assert [p["port"] for p in rule["ports"]] == [int(config["INGRESS_PORT"])]
    assert "namespaceSelector" in rule["from"][0] and "podSelector" not in rule["from"][0]
    admin = specs["realtybot-allow-admin-in-namespace"]
    (rule,) = admin["ingress"]
    assert [p["port"] for p in rule["ports"]] == [int(config["ADMIN_PORT"])]
    assert rule["from"] == [{"podSelector": {}}]  # this namespace only
    scrape = specs["realtybot-allow-prometheus"]
    (rule,) = scrape["ingress"]
    assert {p["port"] for p in rule["ports"]} == {service_port(rendered, s) for s in SERVICES}
    ingress_policies = [n for n, s in specs.items() if s.get("ingress")]
    assert sorted(ingress_policies) == sorted(
        [
            "realtybot-allow-public-traffic",
            "realtybot-allow-admin-in-namespace",
            "realtybot-allow-prometheus",
        ]
    )
    # No policy opens the admin port beyond the namespace.
    for name, spec in specs.items():
        for rule in spec.get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if int(config["ADMIN_PORT"]) in ports:
                assert name == "realtybot-allow-admin-in-namespace"
