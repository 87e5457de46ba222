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


def _pure_io_problems(path: Path) -> set[str]:
    """What makes ``path`` not pure code: file-system modules imported, files opened, read or written."""
    problems = {f"imports {m}" for m in imports_of(path)
                if m.split(".")[0] in {"os", "pathlib", "csv", "io", "shutil", "sqlite3", "glob"}}
    io_methods = {"read_text", "read_bytes", "write_text", "write_bytes", "loadtxt", "genfromtxt", "savetxt"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "open":
                problems.add(f"calls open() on line {node.lineno}")
            elif isinstance(node.func, ast.Attribute) and node.func.attr in io_methods:
                problems.add(f"calls .{node.func.attr}() on line {node.lineno}")
    return problems


def test_detect_and_the_rul_model_are_pure_algorithms() -> None:
    """detect/ (and rul/'s model and features) do no file I/O and import neither the simulator nor the benchmark
    evaluation: readers, scorers and runners live in evaluation/, the monitor's I/O in rul/monitor.py."""
    pure = [*sorted((SRC / "detect").rglob("*.py")), SRC / "rul" / "model.py", SRC / "rul" / "features.py"]
    assert len(pure) > 10, "src/edgeloop/detect has no modules"
    upward = {f"{path.relative_to(SRC)}: {m}" for path in pure for m in imports_of(path)
              if m.startswith(("edgeloop.sim", "edgeloop.evaluation", "edgeloop.store", "edgeloop.rul.monitor"))}
    assert not upward, f"pure code imports the layers that do I/O: {sorted(upward)}"
    io = {f"{path.relative_to(SRC)}: {p}" for path in pure for p in _pure_io_problems(path)}
    assert not io, f"pure code does file I/O: {sorted(io)}"


def _private_names_imported(path: Path) -> set[str]:
    """``from edgeloop.a._b import c`` and ``from edgeloop.a import _c``: another module's private parts."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:2])  # edgeloop.cli, edgeloop.bench ...
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeloop.")):
            continue
        for alias in node.names:
            name = f"{node.module}.{alias.name}"
            inside = node.module == package or node.module.startswith(package + ".")
            if alias.name.startswith("_") or (not inside and any(p.startswith("_") for p in node.module.split("."))):
                found.add(name)
    return found


def test_the_moved_packages_use_only_public_names_of_each_other() -> None:
    """evaluation/, rul/ and bench/ use detect/ (and each other) through public modules and names only."""
    private = {f"{path.relative_to(SRC)}: {n}" for package in ("evaluation", "rul", "bench")
               for path in sorted((SRC / package).glob("*.py")) for n in _private_names_imported(path)}
    assert not private, f"private names imported across modules: {sorted(private)}"


def test_the_command_line_modules_share_only_public_names() -> None:
    """Each command group is its own module; they share the client, output and duration modules by public name."""
    cli = {p.stem: p for p in (SRC / "cli").glob("*.py") if p.stem != "__init__"}
    assert {"client", "output", "durations", "root"} <= cli.keys()
    private = {f"{name}: {n}" for name, path in cli.items() for n in _private_names_imported(path)}
    assert not private, f"a command module imports another module's private names: {sorted(private)}"
    users = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if not p.is_relative_to(SRC / "cli")
             and any(m == "edgeloop.cli" or m.startswith("edgeloop.cli.") for m in imports_of(p))}
    assert users <= {"__main__.py"}, f"only the entry point imports the command line: {sorted(users)}"


def test_nothing_in_the_package_edits_sys_path() -> None:
    """The benchmarks are part of the package: no module reaches into the checkout by editing ``sys.path``."""
    edits = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                edits.add(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not edits, f"sys.path used in {sorted(edits)}"


#: Where the platform is composed and run: the command line, ``python -m edgeloop``, the embedded platform, the
#: scenario runner behind ``edgeloop scenario``, the learning-loop evaluation behind ``edgeloop eval loop`` (with its
#: edge story, run on that platform) and the benchmarks behind ``edgeloop bench`` (each starts a platform of its own).
ENTRY_POINTS = ("cli/**/*.py", "__main__.py", "embedded.py", "scenario.py", "evaluation/loop.py",
                "evaluation/actions_story.py",
                "evaluation/edge_story.py", "bench/*.py")


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
    """Module -> the modules of src/edgeloop it imports, anywhere in it (``TYPE_CHECKING`` blocks too: a cycle only the
    type checker sees is still two modules that cannot be read one without the other). ``from edgeloop.x import y``
    counts ``edgeloop.x.y`` when ``y`` is a module, else ``edgeloop.x``."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
                found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                             for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found & modules.keys()
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_of_edgeloop_import_each_other() -> None:
    graph = import_graph()
    assert "edgeloop.registry" in graph["edgeloop.store.base"] and "edgeloop.api.routers.alerts" in graph
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


# The command line, `python -m edgeloop`, and the two runners of a whole platform the commands start (`up`, `scenario`).
