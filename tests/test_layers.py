"""The dependency direction of the core: storage knows nothing of the alerting rules that use it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "edgeloop"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions and ``TYPE_CHECKING`` blocks."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_store_module_imports_alerting_the_api_or_the_composition_root() -> None:
    store = sorted((SRC / "store").glob("*.py"))
    assert store, "src/edgeloop/store has no modules"
    upward = {f"{path.name}: {module}" for path in store for module in imports_of(path)
              if module.startswith(("edgeloop.alerts", "edgeloop.api")) or module == "edgeloop.app"}
    assert not upward, f"store/ must not depend on the layers above it: {sorted(upward)}"


def test_the_registry_module_depends_on_neither_the_store_nor_the_platform() -> None:
    """Identity, sim, alerts, ingest and the API import the registry; it must not pull storage or the platform in."""
    upward = {m for m in imports_of(SRC / "registry.py") if m.startswith(("edgeloop.store", "edgeloop.api"))
              or m == "edgeloop.app"}
    assert not upward, f"registry.py imports {sorted(upward)}"


#: Where the platform is composed and run: the command line, ``python -m edgeloop``, the embedded platform, and the
#: scenario runner behind ``edgeloop scenario`` (it starts a platform of its own).
ENTRY_POINTS = ("cli.py", "cli_*.py", "cli/**/*.py", "__main__.py", "embedded.py", "scenario.py")


def test_only_the_entry_points_import_the_composition_root() -> None:
    """``app.py`` wires everything; anything importing it would pull the whole platform (broker and all) in."""
    allowed = {path for pattern in ENTRY_POINTS for path in SRC.glob(pattern)}
    importers = sorted(str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
                       if path not in allowed and path.name != "app.py" and "edgeloop.app" in imports_of(path))
    assert not importers, f"only the entry points may import edgeloop.app: {importers}"


def test_the_api_never_imports_the_composition_root() -> None:
    """The API gets its services from whoever builds it (``create_app(services)``), never the platform object."""
    api = sorted((SRC / "api").rglob("*.py"))
    assert len(api) > 10, "src/edgeloop/api has its routers"
    upward = sorted(str(path.relative_to(SRC)) for path in api if "edgeloop.app" in imports_of(path))
    assert not upward, f"api/ imports edgeloop.app: {upward}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of src/edgeloop it imports (``from edgeloop.x import y`` counts ``edgeloop.x.y`` when
    ``y`` is a module)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found & modules.keys()
    return graph


def cycles_through(graph: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """Import cycles that pass through a module whose name starts with ``prefix`` (depth-first, each once)."""
    found: list[list[str]] = []
    for start in sorted(m for m in graph if m.startswith(prefix)):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append(path)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_no_module_of_the_api_is_in_an_import_cycle() -> None:
    graph = import_graph()
    assert "edgeloop.api.routers.alerts" in graph
    assert not cycles_through(graph, "edgeloop.api"), cycles_through(graph, "edgeloop.api")[:3]
