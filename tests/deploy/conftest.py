"""The deployment rendered offline: both overlays through kustomize, and what they reference.

`infra/manifest-tools.sh` installs kustomize and the custom resource schemas once (`make test`
runs it; the fixture runs it too, so `pytest tests/deploy` works alone). No cluster, broker or
store is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
README = K8S / "README.md"
RUNBOOK = K8S / "RUNBOOK.md"
DASHBOARD = K8S / "base" / "grafana" / "realtybot.json"
OVERLAYS = ("dev", "prod")
SERVICES = ("ingress", "router", "dedup", "brain", "outbound")
CONSUMERS = ("router", "dedup", "brain", "outbound")
CUSTOM_API_GROUPS = ("keda.sh", "monitoring.coreos.com")

Document = dict[str, Any]


@dataclass(frozen=True)
class ManifestTools:
    """Where the installed tools are."""

    kustomize: Path
    node_dir: Path


@dataclass(frozen=True)
class Rendered:
    """One overlay rendered: its documents, with lookups by kind and name."""

    overlay: str
    documents: list[Document]

    def of_kind(self, kind: str) -> list[Document]:
        """Every document of a kind."""
        return [d for d in self.documents if d["kind"] == kind]

    def one(self, kind: str, name: str) -> Document:
        """The document of that kind and name (exactly one)."""
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def config(self) -> dict[str, str]:
        """The settings of the `realtybot-config` ConfigMap (its name carries a hash)."""
        maps = [
            d
            for d in self.of_kind("ConfigMap")
            if d["metadata"]["name"].startswith("realtybot-config")
        ]
        assert len(maps) == 1
        data: dict[str, str] = maps[0]["data"]
        return data

    def core(self) -> list[Document]:
        """The documents of Kubernetes' own kinds."""
        return [d for d in self.documents if not is_custom_resource(d)]

    def custom(self) -> list[Document]:
        """The custom resources (KEDA, Prometheus operator)."""
        return [d for d in self.documents if is_custom_resource(d)]


def is_custom_resource(document: Document) -> bool:
    """A KEDA or Prometheus operator resource, which Kubernetes' own schemas do not cover."""
    return str(document["apiVersion"]).split("/")[0] in CUSTOM_API_GROUPS


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, Document]]:
    """Every pod template of the Deployments and Jobs, with its owner's name."""
    for kind in ("Deployment", "Job"):
        for document in rendered.of_kind(kind):
            yield document["metadata"]["name"], document["spec"]["template"]["spec"]


def all_containers(pod: Document) -> list[Document]:
    """Init containers and containers of a pod spec."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def github_anchor(heading: str) -> str:
    """The anchor a Markdown heading gets: lower case, punctuation dropped, spaces to dashes."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def run_tools_script(*args: str) -> str:
    """Run infra/manifest-tools.sh; its stdout."""
    done = subprocess.run(
        ["bash", str(ROOT / "infra" / "manifest-tools.sh"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def manifest_tools() -> ManifestTools:
    """kustomize and the npm schemas, installed if missing."""
    run_tools_script("install")
    paths = dict(line.split("=", 1) for line in run_tools_script("paths").splitlines())
    return ManifestTools(kustomize=Path(paths["KUSTOMIZE"]), node_dir=Path(paths["NODE_DIR"]))


def _without_local_secrets(directory: str, names: list[str]) -> list[str]:
    # A developer's real dev secrets never enter the tests: the examples stand in for them.
    if Path(directory).name != "secrets":
        return []
    return [name for name in names if name.endswith(".env")]


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s copied, with the dev overlay's secret files made from their examples."""
    copy = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, copy, ignore=_without_local_secrets)
    for example in (copy / "overlays" / "dev" / "secrets").glob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return copy


def render(kustomize: Path, directory: Path) -> list[Document]:
    """`kustomize build` of a directory, as documents."""
    done = subprocess.run(
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="session")
def rendered_overlays(manifest_tools: ManifestTools, k8s_copy: Path) -> dict[str, Rendered]:
    """Both overlays, rendered once per run."""
    return {
        overlay: Rendered(
            overlay, render(manifest_tools.kustomize, k8s_copy / "overlays" / overlay)
        )
        for overlay in OVERLAYS
    }


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_overlays: dict[str, Rendered]) -> Rendered:
    """Each overlay in turn."""
    return rendered_overlays[request.param]
