"""Helpers for the Snakefile itself (kept here so rules/common.smk stays declarative)."""

from __future__ import annotations

import ast
import copy
import hashlib
import os
from pathlib import Path


def export_source(src: str) -> None:
    """Put ``src`` first on ``PYTHONPATH`` for every job this Snakemake process starts.

    Script jobs run in their own interpreter (the venv, or a conda environment with
    ``--sdm conda``); with the checkout's ``src`` first they import the package of the
    workflow's own commit, so the code that made an output is the code beside the Snakefile.
    Cluster jobs re-read the Snakefile and so set it again.
    """
    current = os.environ.get("PYTHONPATH", "")
    parts = [src] + [p for p in current.split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


# -- which package code a rule's script runs -------------------------------------------------
# Snakemake's "code" rerun trigger covers a rule's script file, not the package modules the
# script calls, so an edit of src/cellstrata/singlecell/features.py would leave every features
# output
# silently stale. rules/common.smk gives each rule `params: code=...`, a digest of the module
# files its script can reach, and Snakemake's params trigger does the rest. Reach is followed
# per name, not per file: cellstrata.config imports segment, features and embed inside its
# validation functions, so a file-level import closure would put features.py behind every rule
# that writes a provenance record (they all use config.retention_of) and an edit of it would
# re-run the whole workflow.
#
# The digest is of the code reached, not of the files that hold it: the statements (functions,
# classes, module-level code) the script's names reach, without imports and docstrings.
# A function moved to another module (its callers importing it from there) keeps every digest,
# so reorganising the package re-runs nothing in a lab's workspace; an edit of code a rule runs
# still changes its digest. Comments and layout are not code (ast.unparse drops them).

_FUNCTION = (ast.FunctionDef, ast.AsyncFunctionDef)
_BINDING = (*_FUNCTION, ast.ClassDef, ast.Assign, ast.AnnAssign)


class _Module:
    """A parsed module: its top-level statements and which of them bind each name."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.statements = _flatten(ast.parse(path.read_text(), filename=str(path)).body)
        self.bindings: dict[str, list[ast.stmt]] = {}
        for statement in self.statements:
            for bound in _bound_names(statement):
                self.bindings.setdefault(bound, []).append(statement)


def _flatten(body: list[ast.stmt]) -> list[ast.stmt]:
    """Top-level statements, those nested in if/try/with blocks included."""
    flat = []
    for statement in body:
        flat.append(statement)
        if isinstance(statement, ast.If | ast.Try | ast.With):
            blocks = [statement.body, getattr(statement, "orelse", [])]
            blocks.append(getattr(statement, "finalbody", []))
            blocks += [handler.body for handler in getattr(statement, "handlers", [])]
            flat += [nested for block in blocks for nested in _flatten(block)]
    return flat


def _bound_names(statement: ast.stmt) -> list[str]:
    if isinstance(statement, (*_FUNCTION, ast.ClassDef)):
        return [statement.name]
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return [(alias.asname or alias.name).split(".")[0] for alias in statement.names]
    if isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def _import_time(statement: ast.stmt) -> list[ast.AST]:
    """The parts of a top-level statement that run when the module is imported: a function's
    decorators, defaults and annotations (not its body); an if's test, a with's items (their
    blocks are top-level statements of their own); imports aside (see _Reach.module)."""
    if isinstance(statement, _FUNCTION):
        return [*statement.decorator_list, statement.args, *filter(None, [statement.returns])]
    if isinstance(statement, ast.If):
        return [statement.test]
    if isinstance(statement, ast.With):
        return list(statement.items)
    if isinstance(statement, ast.Try | ast.Import | ast.ImportFrom):
        return []
    return [statement]


class _Reach:
    """The package modules reachable from a script, name by name."""

    def __init__(self, src: Path, package: str):
        self.src, self.package = src, package
        self.modules: dict[str, _Module | None] = {}
        self.reached: set[str] = set()
        self.symbols: set[tuple[str, str]] = set()
        # The source text (imports left out) of every piece of code scanned.
        self.code: set[str] = set()

    def load(self, name: str) -> _Module | None:
        if name not in self.modules:
            path = None
            if name == self.package or name.startswith(self.package + "."):
                base = self.src.joinpath(*name.split("."))
                path = next(
                    (p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()),
                    None,
                )
            self.modules[name] = _Module(name, path) if path else None
        return self.modules[name]

    def module(self, name: str) -> None:
        """Importing ``name``: its packages' and its own import-time code."""
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            module = self.load(prefix)
            if module is None or prefix in self.reached:
                continue
            self.reached.add(prefix)
            for statement in module.statements:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    for target, _ in self.imported(statement, module):
                        self.module(target)
                # A definition counts when its name is used (symbol): functions, classes and
                # constants of a module the rule does not use change nothing, so a module
                # that gains or loses a definition by a move keeps its users' digests.
                if not isinstance(statement, _BINDING):
                    for node in _import_time(statement):
                        self.scan(module, node)

    def symbol(self, name: str, symbol: str | None) -> None:
        """Using ``symbol`` of module ``name`` (None: any of it, e.g. ``import x``)."""
        self.module(name)
        module = self.load(name)
        if module is None or (name, symbol) in self.symbols:
            return
        self.symbols.add((name, symbol))
        if symbol is None:
            for bound in list(module.bindings):
                self.symbol(name, bound)
            return
        if symbol not in module.bindings:
            # `from package import submodule`
            if self.load(f"{name}.{symbol}") is not None:
                self.symbol(f"{name}.{symbol}", None)
            return
        for statement in module.bindings[symbol]:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                for target, imported in self.imported(statement, module, bound=symbol):
                    self.symbol(target, imported)
            else:
                self.scan(module, statement)

    def imported(self, statement, module: _Module, bound: str | None = None):
        """``(module, name)`` pairs an import statement brings in (those binding ``bound``)."""
        pairs = []
        for alias in statement.names:
            if bound is not None and (alias.asname or alias.name).split(".")[0] != bound:
                continue
            if isinstance(statement, ast.Import):
                pairs.append((alias.name, None))
                continue
            base = statement.module or ""
            if statement.level:
                package = module.name.split(".")
                package = package if module.path.name == "__init__.py" else package[:-1]
                package = package[: len(package) - statement.level + 1]
                base = ".".join([*package, base] if base else package)
            pairs.append((base, None if alias.name == "*" else alias.name))
        return [pair for pair in pairs if self.load(pair[0]) is not None]

    def scan(self, module: _Module, node: ast.AST) -> None:
        """Follow every module-level name and every package import read under ``node``."""
        if not isinstance(node, ast.Import | ast.ImportFrom) and not _is_docstring(node):
            self.code.add(_code_text(node))
        for item in ast.walk(node):
            if isinstance(item, ast.Name) and item.id in module.bindings:
                self.symbol(module.name, item.id)
            elif isinstance(item, ast.Import | ast.ImportFrom):
                # An import inside a function: whatever it names is used there.
                for target, imported in self.imported(item, module):
                    self.symbol(target, imported)


class _Documentation(ast.NodeTransformer):
    """Import statements and docstrings taken out of every block: where a name comes from,
    and what its documentation says (module paths, after a move), are not code."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                kept = [
                    statement
                    for statement in block
                    if not (
                        _is_docstring(statement)
                        or isinstance(statement, ast.Import | ast.ImportFrom)
                    )
                ]
                # A block of documentation and imports only still needs a statement.
                setattr(node, field, kept or [ast.Pass()])
        return node


def _is_docstring(node: ast.AST) -> bool:
    """A string on its own: a docstring (or any bare string, which is documentation too)."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _code_text(node: ast.AST) -> str:
    """The source of ``node`` without comments, layout, docstrings and import statements."""
    return ast.unparse(_Documentation().visit(copy.deepcopy(node)))


def _reach(script: str | os.PathLike, src: str | os.PathLike, package: str, parsed) -> _Reach:
    reach = _Reach(Path(src), package)
    if parsed is not None:
        reach.modules = parsed
    script_module = _Module("__script__", Path(script))
    reach.modules["__script__"] = script_module
    # A script runs top to bottom: every statement of it is used.
    for statement in script_module.statements:
        reach.scan(script_module, statement)
    del reach.modules["__script__"]
    reach.reached.discard("__script__")
    return reach


def code_files(
    script: str | os.PathLike,
    src: str | os.PathLike,
    package: str = "cellstrata",
    parsed: dict | None = None,
) -> list[Path]:
    """The files of ``package`` (under ``src``) whose code a Snakemake script can run: the
    modules its imports reach, followed name by name through functions, classes and
    module-level code (imports inside functions included). Sorted paths. ``parsed``: a dict
    that keeps parsed modules between calls (see :class:`CodeDigests`)."""
    reach = _reach(script, src, package, parsed)
    return sorted(reach.modules[name].path for name in reach.reached if reach.modules[name])


def code_digest(
    script: str | os.PathLike,
    src: str | os.PathLike,
    package: str = "cellstrata",
    parsed: dict | None = None,
) -> str:
    """A digest of the code a Snakemake script can run (the script's own statements and the
    package code its names reach, see :func:`code_files`), independent of which module holds
    it: 16 hex digits."""
    reach = _reach(script, src, package, parsed)
    digest = hashlib.sha256()
    for text in sorted(reach.code):
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


class CodeDigests:
    """Digests of the code each script can run (:func:`code_digest`), for the rules'
    ``params: code``: a digest changes exactly when code its rule can run does, and not when
    that code moves between modules. Modules are parsed once per instance, digests made once
    per script; one instance per parse of the Snakefile (rules/common.smk), so edits between
    runs count."""

    def __init__(self, src: str | os.PathLike, package: str = "cellstrata"):
        self.src, self.package = Path(src), package
        self._parsed: dict[str, _Module | None] = {}
        self._digests: dict[str, str] = {}

    def __call__(self, script: str | os.PathLike) -> str:
        key = str(script)
        if key not in self._digests:
            self._digests[key] = code_digest(script, self.src, self.package, self._parsed)
        return self._digests[key]
