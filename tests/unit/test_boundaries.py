"""Services meet only on the bus: the import rules of services/ and shared/, read from the code.

The rule, for every `import` and `from ... import` anywhere in a module (also inside a function:
a lazy import is a dependency all the same):

- A module of one service (services/gateway/, services/router/, services/notifier/) imports its
  own service, shared/ and libraries: never another service, and never a top-level module of
  services/ (that would reach the other services through it).
- The top-level modules of services/ (services/cli.py, services/embedded.py, services/simulate.py,
  services/config_checks.py) are the composition roots that run every service in one command or
  one process: they may import all of them.
- shared/ imports nothing from services/.

Reading another service's tables is the same coupling without an import: its models are another
service's modules, so the rule catches it too.

Import circles in services/ and shared/ are found the same way, below: none, neither at module
level nor closed by an import inside a function (or under `if TYPE_CHECKING:`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "router", "notifier")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module a module's code imports, absolute, with its line (relative imports resolved)."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target in ("services", "shared"):  # `from services import router` imports services.router
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def owner(module: str) -> str:
    """What a module belongs to: "shared", "services.<service>", "services" (a composition root),
    or "" (a library)."""
    parts = module.split(".")
    if parts[0] == "shared":
        return "shared"
    if parts[0] != "services":
        return ""
    if len(parts) > 1 and parts[1] in SERVICES:
        return f"services.{parts[1]}"
    return "services"


def violations(root: Path) -> list[str]:
    """"path:line: importer imports imported" for every import that breaks the rule, under root."""
    out: list[str] = []
    for top in ("services", "shared"):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(root, path)
            mine = owner(module)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for line, target in imported_modules(tree, module, path.name == "__init__.py"):
                theirs = owner(target)
                if not theirs or theirs == "shared" or theirs == mine or mine == "services":
                    continue
                # Left: a service module, or shared/, importing services/ outside its own service.
                if mine == "shared" or theirs != mine:
                    out.append(f"{path.relative_to(root)}:{line}: {module} imports {target}")
    return sorted(set(out))


#: Crossings not yet replaced, exactly: a new crossing fails, and so does a fixed one still listed.
#: None left: the gateway's call routing reads its own table, filled from the router's
#: ownership.phone events (services/gateway/owners.py).
KNOWN: list[str] = []


def test_services_meet_only_on_the_bus_and_shared_imports_no_service() -> None:
    assert violations(ROOT) == KNOWN


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    for package in ("services", "services/gateway", "services/router", "services/notifier", "shared"):
        init = tmp_path / package / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    ({"services/gateway/lookup.py": "from services.router.models import Conversation\n"},
     ["services/gateway/lookup.py:1: services.gateway.lookup imports services.router.models"]),
    ({"services/router/replies.py": "def f():\n    from services.notifier import models\n"},
     ["services/router/replies.py:2: services.router.replies imports services.notifier"]),
    ({"services/router/w.py": "from services import notifier, router\n"},
     ["services/router/w.py:1: services.router.w imports services.notifier"]),
    ({"services/notifier/x.py": "import services.gateway.app\n"},
     ["services/notifier/x.py:1: services.notifier.x imports services.gateway.app"]),
    ({"services/router/y.py": "from ..notifier.texts import format_when\n"},
     ["services/router/y.py:1: services.router.y imports services.notifier.texts"]),
    ({"services/gateway/z.py": "from services.cli import main\n"},
     ["services/gateway/z.py:1: services.gateway.z imports services.cli"]),
    ({"shared/db.py": "def models():\n    import services.router.models\n"},
     ["shared/db.py:2: shared.db imports services.router.models"]),
])
def test_a_forbidden_import_is_named_with_its_place(tmp_path: Path, files: dict[str, str],
                                                     expected: list[str]) -> None:
    assert violations(_tree(tmp_path, files)) == expected


def test_own_service_shared_libraries_and_the_composition_roots_are_allowed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "services/gateway/a.py": "import json\nfrom services.gateway import b\nfrom . import b\nfrom shared.db import x\n",
        "services/gateway/b.py": "from .a import y\n",
        "services/cli.py": "from services.router import api\nfrom services.notifier.texts import t\n",
        "services/embedded.py": "import services.gateway.app\n",
        "shared/c.py": "from shared.bus import topology\nimport sqlalchemy\n",
    })
    assert violations(root) == []


# --- import circles ---------------------------------------------------------------------------------


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(nodes: list[ast.stmt]):
    """The imports run when the module is imported: its body, into if/try blocks, not into functions
    or classes, nor into `if TYPE_CHECKING:`."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from _module_level_imports(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level_imports(node.body + node.orelse + node.finalbody
                                             + [n for h in node.handlers for n in h.body])


def import_graph(root: Path, *, lazy: bool) -> dict[str, set[str]]:
    """module → the modules of services/ and shared/ it imports; `lazy`: also the imports inside
    functions (the usual way a circle is hidden rather than removed)."""
    paths = {module_name(root, p): p for top in ("services", "shared") for p in (root / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if lazy
                 else list(_module_level_imports(tree.body)))
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in paths}
                continue
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports that module
                name = f"{target}.{alias.name}"
                edges.add(name if name in paths else target)
        graph[module] = {e for e in edges if e in paths and e != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circles_at_module_level() -> None:
    assert circles(import_graph(ROOT, lazy=False)) == []


def test_no_import_circles_hidden_in_functions_either() -> None:
    # The last one was the notifier's handlers ↔ promises ↔ survey_flow, through the outbox that
    # lived in handlers.py: the outbox is services/notifier/outbox.py now, imported by all three.
    assert circles(import_graph(ROOT, lazy=True)) == []


def test_a_circle_is_found_also_when_hidden_in_a_function(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "services/router/a.py": "from services.router import b\n",
        "services/router/b.py": "def f():\n    from .a import x\n",
        "services/router/c.py": "import services.router.a\n",
        "shared/d.py": "from shared import e\n",
        "shared/e.py": "try:\n    import shared.d\nexcept ImportError:\n    pass\n",
    })
    assert circles(import_graph(root, lazy=False)) == [["shared.d", "shared.e"]]
    assert circles(import_graph(root, lazy=True)) == [["services.router.a", "services.router.b"], ["shared.d", "shared.e"]]
