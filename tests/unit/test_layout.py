"""The code's shape, checked: services reach the store only through repositories, never
import each other, shared code imports no service, and no package imports itself in a
circle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def modules(folder: str) -> dict[str, Path]:
    """Every module below `folder`, by dotted name."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, package: str) -> set[str]:
    """The modules `path` imports (for type checking too: a cycle there is a cycle)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_opens_a_collection_itself(service: str) -> None:
    # Repositories own the store: a service that reads `store.db[...]` bypasses them.
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in modules(f"services/{service}").values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "db"
    ]
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str) -> None:
    others = {f"services.{s}" for s in SERVICES} - {f"services.{service}"}
    offenders = {
        f"{name} imports {imported}"
        for name, path in modules(f"services/{service}").items()
        for imported in imports(path, name)
        if any(imported == o or imported.startswith(f"{o}.") for o in others)
    }
    assert offenders == set()


@pytest.mark.parametrize("folder", ["shared", *(f"services/{s}" for s in SERVICES)])
def test_no_module_imports_itself_in_a_circle(folder: str) -> None:
    graph = {
        name: {i for i in imports(path, name) if i in modules(folder) and i != name}
        for name, path in modules(folder).items()
    }
    # A package's __init__ importing its own modules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(f"{i}.")}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def test_shared_code_never_imports_a_service() -> None:
    offenders = {
        f"{name} imports {imported}"
        for name, path in modules("shared").items()
        for imported in imports(path, name)
        if imported == "services" or imported.startswith("services.")
    }
    assert offenders == set()
