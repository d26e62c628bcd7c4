"""The package's import structure: every module imports on its own, the import graph has no
cycles, ``cellstrata.config`` is a leaf, and every ``from cellstrata.x import name`` names a
binding of ``x`` (the rules' code digests follow explicit bindings, not lazy ``__getattr__``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "cellstrata"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` of every package import in a file, module-level
    and inside functions alike (relative imports resolved)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found += [(base, a.name, node.lineno) for a in node.names]
    return [f for f in found if f[0] == PACKAGE or f[0].startswith(PACKAGE + ".")]


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a submodule named by ``from pkg import sub``
    counts as that submodule; a package's trivial ``__init__`` is not an edge)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = set()
        for module, imported, _ in _imports(name, path):
            if imported and f"{module}.{imported}" in MODULES:
                edges.add(f"{module}.{imported}")
            elif module in MODULES and not (_is_package(module) and imported is None):
                edges.add(module)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_has_no_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_imports_nothing_of_the_package():
    assert _imports("cellstrata.config", MODULES["cellstrata.config"]) == []


def _bound(path: Path) -> set[str]:
    """Names a module binds at its top level by def, class, assignment or explicit import
    (inside if/try/with blocks too); not what a module ``__getattr__`` would return."""
    names: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If | ast.Try | ast.With):
                walk(node.body)
                walk(getattr(node, "orelse", []))
                walk(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    walk(handler.body)

    walk(ast.parse(path.read_text(), filename=str(path)).body)
    return names


def _importers() -> list[tuple[str, Path]]:
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    return [*MODULES.items(), *((f"scripts.{p.stem}", p) for p in scripts)]


def test_every_imported_name_is_bound_in_its_module():
    unbound = []
    for name, path in _importers():
        for module, imported, line in _imports(name, path):
            if imported is None or imported == "*" or f"{module}.{imported}" in MODULES:
                continue
            if module not in MODULES or imported not in _bound(MODULES[module]):
                unbound.append(f"{path.relative_to(ROOT)}:{line}: {module}.{imported}")
    assert unbound == []


def test_every_module_imports_in_a_fresh_interpreter():
    # One interpreter per module: a module that only imports because another one was imported
    # before it (a hidden cycle or a missing import) fails here.
    code = (
        "import subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    run = subprocess.run([sys.executable, '-c', f'import {name}'],"
        " capture_output=True, text=True)\n"
        "    if run.returncode:\n"
        "        failed.append(f'{name}: {run.stderr.strip().splitlines()[-1]}')\n"
        "print('\\n'.join(failed))\n"
    )
    names = [n for n in MODULES if n != "cellstrata.__main__"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, check=True, env=env
    )
    assert run.stdout.strip() == ""
