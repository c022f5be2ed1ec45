"""Each consumer service's `__main__` answers a table that covers every kind its stage
consumes, and each handler is one hop from `__main__`: a method of a class that `__main__`
imports from the service's own package (so a reader finds it in two hops at most)."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.brain import __main__ as brain_main
from services.dedup import __main__ as dedup_main
from services.outbound import __main__ as outbound_main
from services.router import __main__ as router_main
from shared.broker import Subscriptions, consumed_models
from shared.crypto import KeyRing
from shared.gupshup.client import GupshupClient
from shared.service import Runtime
from shared.settings import Settings
from tests.services.conftest import ServiceRunner

Setup = Callable[[Runtime], Awaitable[Subscriptions]]


def outbound_setup(settings: Settings) -> Setup:
    """Outbound's own wiring, with a Gupshup client that is never called here."""
    gupshup = GupshupClient("http://127.0.0.1:9", timeout_seconds=1)
    return lambda runtime: outbound_main.wire(runtime, KeyRing.from_settings(settings), gupshup)


def imported_from_own_package(service: str) -> set[str]:
    """The modules of `services.<service>` that its `__main__` imports."""
    main = importlib.import_module(f"services.{service}.__main__")
    tree = ast.parse(Path(inspect.getfile(main)).read_text())
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith(f"services.{service}.")
    }


@pytest.mark.parametrize("service", ["router", "dedup", "brain", "outbound"])
async def test_every_kind_a_stage_consumes_has_a_handler_one_hop_from_main(
    service: str, services: ServiceRunner, settings: Settings
) -> None:
    setups: dict[str, Setup] = {
        "router": router_main.setup,
        "dedup": dedup_main.setup,
        "brain": brain_main.setup,
        "outbound": outbound_setup(settings),
    }
    tables: list[Subscriptions] = []

    async def setup(runtime: Runtime) -> Subscriptions:
        tables.append(await setups[service](runtime))
        return tables[-1]

    await services.start(service, setup)
    table = tables[0]
    assert table.stage == service
    assert set(table.handlers) == set(consumed_models(service))
    near = imported_from_own_package(service)
    for model, handler in table.handlers.items():
        assert handler.__module__ in near, f"{model.__name__} is handled in {handler.__module__}"
