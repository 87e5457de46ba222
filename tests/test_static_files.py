"""The dashboard's files: all of them ship in the package, its ES modules import only what exists, and the server
hands every module to the browser as JavaScript its Content-Security-Policy allows.

The dashboard has no build step: ``index.html`` loads ``app.js`` as an ES module, which imports the modules under
``js/``. A file missing from the wheel, a misspelt import or a wrong MIME type leaves an installed platform with a
blank page, so each is checked here directly rather than only through a browser.
"""

from __future__ import annotations

import glob
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgeloop.app import Platform, PlatformConfig
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "edgeloop"
STATIC = PACKAGE / "web" / "static"
# import { a, b } from "./x.js";  (names may span lines)
IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";', re.MULTILINE)
ANY_IMPORT = re.compile(r"^import\b", re.MULTILINE)
EXPORT = re.compile(r"^export\s+(?:async\s+function|function|class|const|let)\s+([\w$]+)", re.MULTILINE)


def dashboard_modules() -> dict[Path, str]:
    """Every JavaScript file of the dashboard except the vendored libraries, by path, with its text."""
    return {p: p.read_text(encoding="utf-8") for p in sorted(STATIC.rglob("*.js"))
            if STATIC / "vendor" not in p.parents}


def imports_of(path: Path, text: str) -> dict[Path, set[str]]:
    """The modules ``path`` imports (resolved) and the names it takes from each (named imports: the only form
    the dashboard uses, so that what a module takes from another is visible at its top)."""
    assert len(ANY_IMPORT.findall(text)) == len(IMPORT.findall(text)), f"{path.name}: an import not of the form " \
        'import { name, ... } from "./module.js";'
    found: dict[Path, set[str]] = {}
    for names, spec in IMPORT.findall(text):
        target = (path.parent / spec).resolve()
        found.setdefault(target, set()).update(n.strip() for n in names.split(",") if n.strip())
    return found


def test_every_file_under_web_static_is_shipped_by_the_package_data() -> None:
    """setuptools ships only the files the package-data globs match: a new folder of modules must be listed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["edgeloop"]
    shipped = {(PACKAGE / m).resolve() for pattern in patterns
               for m in glob.glob(pattern, root_dir=PACKAGE, recursive=True) if (PACKAGE / m).is_file()}
    files = {p.resolve() for p in STATIC.rglob("*") if p.is_file()}
    assert (STATIC / "index.html").resolve() in files and (STATIC / "app.js").resolve() in files
    missing = sorted(str(p.relative_to(PACKAGE)) for p in files - shipped)
    assert not missing, f"not covered by [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_the_entry_module_reaches_every_dashboard_module() -> None:
    """index.html loads app.js; every other module is reached from it (none is dead, none is loaded some other way)."""
    modules = {p.resolve(): text for p, text in dashboard_modules().items()}
    assert '<script type="module" src="/static/app.js"></script>' in (STATIC / "index.html").read_text("utf-8")
    seen: set[Path] = set()
    todo = [(STATIC / "app.js").resolve()]
    while todo:
        path = todo.pop()
        if path in seen or path not in modules:
            continue
        seen.add(path)
        todo.extend(imports_of(path, modules[path]))
    unreached = sorted(str(p.relative_to(STATIC.resolve())) for p in modules if p not in seen)
    assert not unreached, f"dashboard modules nothing imports: {unreached}"


def test_every_import_names_an_existing_module_and_one_of_its_exports() -> None:
    modules = {p.resolve(): text for p, text in dashboard_modules().items()}
    problems: list[str] = []
    for path, text in modules.items():
        for target, names in imports_of(path, text).items():
            where = f"{path.relative_to(STATIC.resolve())} imports {target.relative_to(STATIC.resolve())}"
            if target not in modules:
                problems.append(f"{where}: no such module")
                continue
            missing = names - set(EXPORT.findall(modules[target]))
            if missing:
                problems.append(f"{where}: it does not export {sorted(missing)}")
    assert not problems, "\n".join(problems)


def test_dashboard_modules_import_each_other_without_a_cycle() -> None:
    """A cycle makes a module run before the bindings it uses exist; the dependency direction is views ->
    components -> plumbing (DOM, formatting, API, session)."""
    graph = {p.resolve(): set(imports_of(p.resolve(), text)) for p, text in dashboard_modules().items()}
    done: set[Path] = set()

    def visit(path: Path, trail: tuple[Path, ...]) -> None:
        if path in trail:
            cycle = [p.relative_to(STATIC.resolve()).as_posix() for p in (*trail[trail.index(path):], path)]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if path in done:
            return
        for target in graph.get(path, ()):
            visit(target, (*trail, path))
        done.add(path)

    for path in graph:
        visit(path, ())


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """The platform's HTTP server on a real socket (as ``up`` and ``serve`` run it); yields its base URL."""
    port = free_port()
    async with Platform(PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=port)):
        yield f"http://127.0.0.1:{port}"


async def test_every_module_is_served_as_javascript_the_page_policy_allows(server: str) -> None:
    """A browser refuses a module script with a non-JavaScript MIME type, and one its CSP does not allow."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        page_csp = (await client.get("/")).headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in page_csp.split(";"))
        assert directives["script-src"] == "'self'"
        for path in dashboard_modules():
            url = f"/static/{path.relative_to(STATIC).as_posix()}"
            resp = await client.get(url)
            assert resp.status_code == 200, url
            assert resp.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript"), url
            assert resp.text == path.read_text(encoding="utf-8"), url
