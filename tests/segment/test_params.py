"""Segmentation parameters (segment/params.py): what they may import (that cellstrata.config
imports nothing of the package is tests/test_imports.py's)."""

from __future__ import annotations

import ast
from pathlib import Path

import cellstrata

PACKAGE = Path(cellstrata.__file__).parent


def _imported(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_params_import_nothing_heavy():
    # Config validation and the version names read the parameters without the segmentation
    # code: no scikit-image, scipy, torch or cellpose, and no other segment module.
    heavy = ("skimage", "scipy", "torch", "cellpose", "cellstrata")
    imported = _imported(PACKAGE / "segment" / "params.py")
    assert not {name for name in imported if name.split(".")[0] in heavy}
