"""In production, CREDENTIALS_KEYS is required only where the key ring is used.

Ingress and outbound encrypt or decrypt agents' Gupshup credentials: without the key ring
they refuse to start, naming the variable. Router, dedup and brain never touch a credential:
they start, become ready and stop cleanly without it, and so do the CLI's commands that
touch no credential (the migration Job's).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.local_stack import StackProcesses, stack_env
from shared.broker import Broker
from shared.settings import CHECKOUT_ROOT, Settings
from shared.store import Store
from tests.conftest import make_settings
from tests.e2e.conftest import free_port

MISSING = "CREDENTIALS_KEYS is required in production"
CONSUMERS = ("router", "dedup", "brain")


@pytest.fixture
async def production() -> AsyncIterator[Settings]:
    """Private settings without a key ring; the database and topology removed afterwards."""
    settings = make_settings(
        credentials_keys=None,
        **{f"{name}_port": free_port() for name in ("ingress", "admin", *CONSUMERS, "outbound")},
    )
    yield settings
    broker = Broker(settings, "test")
    await broker.connect()
    await broker.delete_topology()
    await broker.close()
    store = Store(settings)
    await store.client.drop_database(settings.mongodb_db)
    await store.close()


def production_env(settings: Settings) -> dict[str, str]:
    """The processes' environment: production, and no key ring whatever the shell holds."""
    env = stack_env(settings, {"ENVIRONMENT": "production", "LOG_FORMAT": "json"})
    env.pop("CREDENTIALS_KEYS", None)
    return env


def run(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """A process of the platform, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=production_env(settings),
        cwd=CHECKOUT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("service", ["ingress", "outbound"])
def test_services_that_use_credentials_refuse_to_start_without_the_key_ring(
    production: Settings, service: str
) -> None:
    result = run(production, f"services.{service}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"{service}: {MISSING}")


async def test_router_dedup_and_brain_run_in_production_without_the_key_ring(
    production: Settings, tmp_path: Path
) -> None:
    processes = StackProcesses(production_env(production), sandbox_port=0, log_dir=tmp_path)
    processes.start(CONSUMERS, sandbox=False)
    try:
        await processes.wait_ready(timeout=60)
    finally:
        codes = processes.stop(grace=30)
    assert codes == dict.fromkeys(CONSUMERS, 0)


def test_cli_needs_the_key_ring_only_for_credentials(production: Settings) -> None:
    migrated = run(production, "cli", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    declared = run(production, "cli", "topology", "declare")
    assert declared.returncode == 0, declared.stderr
    rotate = run(production, "cli", "keys", "rotate")
    assert rotate.returncode == 1
    assert rotate.stderr.strip().splitlines()[-1].startswith(f"realtybot: {MISSING}")
