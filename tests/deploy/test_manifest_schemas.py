"""Both overlays render, and every object validates against its schema.

Kubernetes' own kinds go through `kubernetes-validate --strict` (unknown fields rejected);
the custom resources through the schemas of @kubernetes-models (KEDA, Prometheus operator).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.conftest import Document, ManifestTools, Rendered

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest supported and the newest known
EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "Service",
    "Ingress",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "Job",
    "ScaledObject",
    "TriggerAuthentication",
    "ServiceMonitor",
    "PrometheusRule",
}


def kubernetes_validate(documents: list[Document], tmp_path: Path) -> str:
    """Run kubernetes-validate --strict on the documents; its output (asserts it passed)."""
    manifest = tmp_path / "core.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    command = [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet"]
    for version in KUBERNETES_VERSIONS:
        command += ["-k", version]
    done = subprocess.run(
        [*command, str(manifest)], capture_output=True, text=True, timeout=120, check=False
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def validate_custom_resources(
    tools: ManifestTools, documents: list[Document]
) -> tuple[int, list[dict[str, object]]]:
    """The node validator's exit code and its verdict on each document."""
    done = subprocess.run(
        ["node", str(tools.node_dir / "validate-custom-resources.mjs")],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_overlay_renders_every_kind_of_object(rendered: Rendered) -> None:
    kinds = {d["kind"] for d in rendered.documents}
    assert kinds >= EXPECTED_KINDS
    namespaces = {d["metadata"].get("namespace") for d in rendered.documents} - {None}
    expected = "realtybot-dev" if rendered.overlay == "dev" else "realtybot"
    assert namespaces == {expected}
    assert [d["metadata"]["name"] for d in rendered.of_kind("Namespace")] == [expected]


def test_kubernetes_objects_validate_strictly(rendered: Rendered, tmp_path: Path) -> None:
    output = kubernetes_validate(rendered.core(), tmp_path)
    # No warnings either: a kind without a schema would be skipped with a warning.
    assert output.strip() == "exit 0", output


def test_strict_validation_rejects_an_unknown_field(rendered: Rendered, tmp_path: Path) -> None:
    documents = copy.deepcopy(rendered.core())
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    output = kubernetes_validate(documents, tmp_path)
    assert output.startswith("exit 1") and "livenessProbes" in output


def test_custom_resources_validate_against_their_schemas(
    rendered: Rendered, manifest_tools: ManifestTools
) -> None:
    custom = rendered.custom()
    code, verdicts = validate_custom_resources(manifest_tools, custom)
    assert code == 0, verdicts
    assert len(verdicts) == len(custom)
    assert all(v["valid"] for v in verdicts)
    assert {str(v["type"]).rsplit("/", 1)[1] for v in verdicts} == {
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_custom_resource_validation_catches_mistakes(
    rendered: Rendered, manifest_tools: ManifestTools
) -> None:
    scaled = copy.deepcopy(rendered.of_kind("ScaledObject")[0])
    scaled["spec"]["minReplicaCount"] = "2"
    rule = copy.deepcopy(rendered.of_kind("PrometheusRule")[0])
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    unknown = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "x"}}
    code, verdicts = validate_custom_resources(manifest_tools, [scaled, rule, unknown])
    assert code == 1
    assert [v["valid"] for v in verdicts] == [False, False, False]
    assert "minReplicaCount" in str(verdicts[0]["error"])
    assert "expr" in str(verdicts[1]["error"])
