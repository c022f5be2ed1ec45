"""The image: the Dockerfile passes hadolint and keeps the properties the deployment relies on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.deploy.conftest import ROOT, SERVICES

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
IMAGE_UID = "10001"
# Variables the image may set besides settings: the interpreter's own.
RUNTIME_VARIABLES = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
BUILD_VARIABLES = {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", *RUNTIME_VARIABLES}
SECRET_WORDS = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|AMQP_URL|MONGODB_URL", re.I)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of its instructions (FROM first)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append(instruction)
    return stages


def env_names(instruction: Instruction) -> list[str]:
    """The variable names an ENV instruction sets."""
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", instruction.arguments)


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    """The parsed Dockerfile."""
    return parse_stages(DOCKERFILE.read_text())


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_builds_in_stages_from_a_pinned_slim_python(
    stages: list[list[Instruction]],
) -> None:
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0].arguments.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), image
        assert "latest" not in image
    assert stages[-1][0].arguments.split()[-1] == "runtime"


def test_final_image_runs_as_a_fixed_unprivileged_user(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]  # numeric, so runAsNonRoot can verify it
    created = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert f"--uid {IMAGE_UID}" in created and f"--gid {IMAGE_UID}" in created
    # Nothing runs as root after the switch.
    after_user = final[[i.keyword for i in final].index("USER") :]
    assert not [i for i in after_user if i.keyword == "RUN"]


def test_final_image_has_no_build_tools_secrets_or_healthcheck(
    stages: list[list[Instruction]],
) -> None:
    final = stages[-1]
    commands = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert not re.search(r"apt-get|apk |pip install|gcc|build-essential", commands)
    copies = [i.arguments for i in final if i.keyword in {"COPY", "ADD"}]
    assert all(c.startswith(("--from=build", "--chmod")) for c in copies), copies
    assert not [i for s in stages for i in s if i.keyword in {"HEALTHCHECK", "ADD"}]
    assert not [i for s in stages for i in s if i.keyword == "ARG"]
    settings = {name.upper() for name in Settings.model_fields}
    for stage, allowed in ((final, RUNTIME_VARIABLES), (stages[0], BUILD_VARIABLES)):
        for instruction in (i for i in stage if i.keyword == "ENV"):
            for name in env_names(instruction):
                assert name in allowed or name in settings, name
                assert not SECRET_WORDS.search(name), name


def test_image_defaults_suit_a_container(stages: list[list[Instruction]]) -> None:
    final_env = " ".join(i.arguments for i in stages[-1] if i.keyword == "ENV")
    assert "HTTP_HOST=0.0.0.0" in final_env  # reachable by probes and Services
    assert "PYTHONDONTWRITEBYTECODE=1" in final_env  # the root filesystem is read-only
    entrypoints = [i.arguments for i in stages[-1] if i.keyword == "ENTRYPOINT"]
    assert entrypoints == ['["realtybot-entrypoint"]']  # exec form: the service gets SIGTERM


def test_build_context_holds_what_the_image_copies_and_nothing_secret() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything is out unless listed
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed <= {
        "pyproject.toml",
        "requirements.lock",
        "shared",
        "services",
        "cli",
        "deploy/docker/entrypoint.sh",
    }
    for stage in parse_stages(DOCKERFILE.read_text()):
        for instruction in stage:
            if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
                continue
            sources = [a for a in instruction.arguments.split()[:-1] if not a.startswith("--")]
            for source in sources:
                assert source.rstrip("/") in allowed, f"{source} is not in the build context"


def run_entrypoint(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The entry point with stand-ins for python and realtybot that print their arguments."""
    for program in ("python", "realtybot"):
        stand_in = tmp_path / program
        stand_in.write_text(f'#!/bin/sh\necho {program} "$@"\n')
        stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_starts_the_named_service(tmp_path: Path, service: str) -> None:
    done = run_entrypoint(tmp_path, service)
    assert done.returncode == 0
    assert done.stdout.split() == ["python", "-m", f"services.{service}"]


def test_entrypoint_runs_the_cli(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, "realtybot", "topology", "declare")
    assert done.returncode == 0
    assert done.stdout.split() == ["realtybot", "topology", "declare"]


@pytest.mark.parametrize("args", [(), ("sandbox",), ("sh",)])
def test_entrypoint_refuses_anything_else(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_entrypoint(tmp_path, *args)
    assert done.returncode == 64
    assert done.stdout == ""
    assert "usage" in done.stderr
