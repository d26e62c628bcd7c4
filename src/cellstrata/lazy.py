"""Names a package exports without importing their modules until first use (PEP 562).

A package ``__init__`` that imported its modules would run them for every job that imports
any module below it (a features job reading :mod:`cellstrata.levels` would load all of
segmentation), and the rules' code digests (:mod:`cellstrata.workflow.digests`) would follow
that import-time code. Code of the package itself imports from the defining modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package exporting ``exports``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : Mapping[str, str]
        Public name -> the module defining it.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)`` to bind in the package's namespace.
    """
    namespace = import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        # Called only for names not bound yet, i.e. an exported name's first use.
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
